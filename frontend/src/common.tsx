import { Badge } from "@mantine/core";

export const SEVERITY_COLORS: Record<string, string> = { critical: "#b02525", warning: "#b03a00", info: "#343a40" };

// The classes of compliance/classification.py, with what each means for the people who upload.
export const CLASSES: { value: string; label: string; meaning: string }[] = [
  { value: "I", label: "Class I · General", meaning: "Anyone in the organisation may read it." },
  { value: "II", label: "Class II · Confidential", meaning: "Internal: every signed-in user of your tenant (the default)." },
  { value: "III", label: "Class III · Critical", meaning: "Need-to-know groups only; personal data removed; a data steward approves it before it is searchable." },
  { value: "IV", label: "Class IV · Restricted", meaning: "Administrators in the need-to-know groups only (e.g. export-controlled); steward approval required." },
];

// Darker than Mantine's palette where needed: white 11px badge text stays above 4.5:1 (WCAG AA).
const GREEN = "#2f7a3a", BLUE = "#1864ab", ORANGE = "#b03a00", RED = "#b02525", GREY = "#343a40";
const COLORS: Record<string, string> = { I: GREEN, II: BLUE, III: ORANGE, IV: RED };
const NAMES: Record<string, string> = { I: "General", II: "Confidential", III: "Critical", IV: "Restricted" };

export function ClassBadge({ cls }: { cls: string }) {
  return (
    <Badge color={COLORS[cls] ?? GREY} variant="filled" data-testid="class-badge" title={CLASSES.find((c) => c.value === cls)?.meaning}>
      Class {cls} · {NAMES[cls] ?? "unknown"}
    </Badge>
  );
}

const STATUS_COLORS: Record<string, string> = {
  queued: GREY, parsing: BLUE, awaiting_approval: ORANGE, indexed: GREEN, rejected: RED, failed: RED,
};

export function StatusBadge({ status }: { status: string }) {
  return <Badge color={STATUS_COLORS[status] ?? GREY} variant="filled" data-testid="status-badge">{status.replace(/_/g, " ")}</Badge>;
}
