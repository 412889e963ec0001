import { Alert, Badge, Button, Group, Modal, Paper, SimpleGrid, Stack, Table, Text, TextInput, Title } from "@mantine/core";
import { useCallback, useEffect, useState } from "react";
import { api, ApiError, type Me } from "./api";
import { ownSubjects } from "./auth";
import { SEVERITY_COLORS } from "./common";

interface AlertOut {
  id: string;
  subject: string;
  status: string;
  severity: string;
  message: string;
  root_cause: string | null;
  opened_at: string;
  acknowledged_by: string | null;
  resolved_by: string | null;
}

interface MemoryOut {
  id: string;
  type: string;
  content: string;
  created_at: string;
}

interface GoalOut {
  id: string;
  text: string;
  status: string;
  updated_at: string;
}

interface Change {
  field: string;
  current: unknown;
  new: unknown;
}

interface Decision {
  approver?: string;
  decision?: string;
  reason?: string | null;
}

interface ProposalOut {
  id: string;
  target: string;
  operation: string;
  title: string;
  summary: string;
  payload: Record<string, unknown>;
  preview: { changes?: Change[]; subject?: string };
  risk: string;
  proposer: string;
  status: string;
  status_reason: string | null;
  approval_note?: string | null; // why nobody (or not enough people) can approve it yet
  required_approvals: number;
  approvals: Decision[];
  expires_at: string;
  created_at: string;
}

interface EvalOut {
  id: string;
  dataset_version: string;
  created_at: string;
  overall: Record<string, unknown>;
  regressions: unknown[];
  report_url: string;
}

const words = (e: unknown) => (e instanceof ApiError ? e.words : String(e));

function Alerts({ canOperate }: { canOperate: boolean }) {
  const [alerts, setAlerts] = useState<AlertOut[]>([]);
  const [error, setError] = useState<string | null>(null);
  const load = useCallback(() => {
    api<AlertOut[]>("/v1/alerts?limit=100").then(setAlerts).catch((e) => setError(words(e)));
  }, []);
  useEffect(load, [load]);

  async function act(a: AlertOut, action: "acknowledge" | "resolve") {
    try {
      await api(`/v1/alerts/${a.id}/${action}`, { method: "POST" });
      load();
    } catch (e) {
      setError(words(e));
    }
  }

  return (
    <Paper withBorder p="md" radius="md" component="section" aria-labelledby="alerts-title">
      <Title order={2} size="h4" id="alerts-title" mb="xs">Alerts</Title>
      {error && <Alert color="red" role="alert" mb="sm">{error}</Alert>}
      {alerts.length === 0 ? <Text size="sm">No alerts.</Text> : (
        <Table.ScrollContainer minWidth={560}>
          <Table data-testid="alerts-table">
            <Table.Thead><Table.Tr><Table.Th scope="col">Alert</Table.Th><Table.Th scope="col">Status</Table.Th><Table.Th scope="col">Actions</Table.Th></Table.Tr></Table.Thead>
            <Table.Tbody>
              {alerts.map((a) => (
                <Table.Tr key={a.id}>
                  <Table.Td>
                    <Group gap={6}><Badge color={SEVERITY_COLORS[a.severity] ?? SEVERITY_COLORS.info}>{a.severity}</Badge>
                      <Text size="sm" fw={500}>{a.subject}</Text></Group>
                    <Text size="sm">{a.message}</Text>
                    {a.root_cause && <Text size="xs">Root cause draft: {a.root_cause}</Text>}
                  </Table.Td>
                  <Table.Td><Text size="sm">{a.status}{a.acknowledged_by ? ` (by ${a.acknowledged_by})` : ""}</Text></Table.Td>
                  <Table.Td>
                    {canOperate && a.status !== "resolved" ? (
                      <Group gap={4}>
                        {a.status === "open" && <Button size="compact-sm" variant="default" onClick={() => void act(a, "acknowledge")}>Acknowledge</Button>}
                        <Button size="compact-sm" variant="default" onClick={() => void act(a, "resolve")}>Resolve</Button>
                      </Group>
                    ) : <Text size="xs">—</Text>}
                  </Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        </Table.ScrollContainer>
      )}
    </Paper>
  );
}

const shown = (v: unknown) => (v === null || v === undefined || v === "" ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v));

const STATUS_COLORS: Record<string, string> = {
  proposed: "blue", approved: "teal", executing: "teal", executed: "green", rejected: "red", failed: "red",
  expired: "gray", cancelled: "gray",
};

function Proposal({ p, me, busy, onDecide }: {
  p: ProposalOut; me: Me; busy: boolean; onDecide(p: ProposalOut, d: "approve" | "reject", reason: string): void;
}) {
  const [reason, setReason] = useState("");
  const own = ownSubjects(me.subject).has(p.proposer);
  const mayApprove = (me.permissions ?? []).includes("approver");
  const approvals = p.approvals.filter((a) => a.decision === "approve");
  const changes = p.preview.changes ?? [];
  const labelId = `proposal-${p.id}`;
  return (
    <Paper withBorder p="sm" data-testid="proposal" data-status={p.status} component="article" aria-labelledby={labelId}>
      <Group gap={6}>
        <Text fw={600} size="sm" id={labelId}>{p.title}</Text>
        <Badge color={p.risk === "high" ? SEVERITY_COLORS.critical : SEVERITY_COLORS.info}>risk: {p.risk}</Badge>
        <Badge variant="outline" color={STATUS_COLORS[p.status] ?? "gray"} data-testid="proposal-status">{p.status}</Badge>
      </Group>
      <Text size="sm">{p.summary}</Text>
      <Text size="xs" mt={4}>What it will do in {p.target.toUpperCase()} ({p.operation}):</Text>
      <Table withTableBorder={false} data-testid="proposal-changes" fz="xs" verticalSpacing={2}>
        <Table.Thead><Table.Tr><Table.Th scope="col">Field</Table.Th><Table.Th scope="col">Now</Table.Th><Table.Th scope="col">After</Table.Th></Table.Tr></Table.Thead>
        <Table.Tbody>
          {changes.map((c) => (
            <Table.Tr key={c.field}><Table.Td>{c.field}</Table.Td><Table.Td>{shown(c.current)}</Table.Td><Table.Td>{shown(c.new)}</Table.Td></Table.Tr>
          ))}
          {changes.length === 0 && Object.entries(p.payload).map(([k, v]) => (
            <Table.Tr key={k}><Table.Td>{k}</Table.Td><Table.Td>—</Table.Td><Table.Td>{shown(v)}</Table.Td></Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
      <Text size="xs">Proposed by {p.proposer}; {approvals.length} of {p.required_approvals} approval(s)
        {p.status === "proposed" ? `; expires ${new Date(p.expires_at).toLocaleString()}` : ""}.</Text>
      {p.approvals.map((a, i) => (
        <Text size="xs" key={i} data-testid="proposal-decision">{a.decision === "reject" ? "Rejected" : "Approved"} by {a.approver}{a.reason ? `: ${a.reason}` : ""}</Text>
      ))}
      {p.status === "proposed" && p.approval_note && <Text size="xs" fw={600} data-testid="approval-note">Note: {p.approval_note}</Text>}
      {p.status !== "proposed" && p.status_reason && <Text size="xs" data-testid="proposal-reason">{p.status_reason}</Text>}
      {p.status === "proposed" && (own ? <Text size="xs" data-testid="own-proposal">Your own proposal: someone else must approve it.</Text>
        : !mayApprove ? <Text size="xs">Approving needs the approver permission (ask an administrator).</Text> : (
          <Group gap={6} mt={6} align="flex-end">
            <TextInput label="Reason" description="Required to reject; the proposer sees it" size="xs" value={reason} style={{ flex: 1 }}
              onChange={(e) => setReason(e.currentTarget.value)} />
            <Button size="compact-sm" loading={busy} onClick={() => onDecide(p, "approve", reason)}>Approve</Button>
            <Button size="compact-sm" variant="default" disabled={busy || !reason.trim()} onClick={() => onDecide(p, "reject", reason)}>Reject</Button>
          </Group>
        ))}
    </Paper>
  );
}

function Approvals({ me }: { me: Me }) {
  const [items, setItems] = useState<ProposalOut[]>([]);
  const [busy, setBusy] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [note, setNote] = useState<string | null>(null);
  const load = useCallback(() => {
    api<ProposalOut[]>("/v1/operations?limit=50").then(setItems).catch((e) => setError(words(e)));
  }, []);
  useEffect(load, [load]);

  async function decide(p: ProposalOut, decision: "approve" | "reject", reason: string) {
    setError(null);
    setNote(null);
    setBusy(p.id);
    try {
      const out = await api<ProposalOut>(`/v1/operations/${p.id}/${decision}`, { json: { reason: reason.trim() || null } });
      setNote(`${out.title}: ${out.status}${out.status === "proposed" ? " (waits for another approval)" : ""}.`);
      load();
    } catch (e) {
      setError(words(e));
    } finally {
      setBusy(null);
    }
  }

  const pending = items.filter((p) => p.status === "proposed");
  const recent = items.filter((p) => p.status !== "proposed").slice(0, 10);
  return (
    <Paper withBorder p="md" radius="md" component="section" aria-labelledby="approvals-title">
      <Title order={2} size="h4" id="approvals-title" mb="xs">Write proposals</Title>
      {error && <Alert color="red" role="alert" mb="sm">{error}</Alert>}
      {note && <Text size="sm" role="status" mb="sm">{note}</Text>}
      <Stack gap="sm" data-testid="pending-proposals">
        <Title order={3} size="h5">Waiting for approval</Title>
        {pending.length === 0 && <Text size="sm">Nothing waits for approval.</Text>}
        {pending.map((p) => <Proposal key={p.id} p={p} me={me} busy={busy === p.id} onDecide={(q, d, r) => void decide(q, d, r)} />)}
      </Stack>
      {recent.length > 0 && (
        <Stack gap="sm" mt="md" data-testid="decided-proposals">
          <Title order={3} size="h5">Recently decided</Title>
          {recent.map((p) => <Proposal key={p.id} p={p} me={me} busy={false} onDecide={() => undefined} />)}
        </Stack>
      )}
    </Paper>
  );
}

function Memory() {
  const [memories, setMemories] = useState<MemoryOut[]>([]);
  const [withheld, setWithheld] = useState(0);
  const [goals, setGoals] = useState<GoalOut[]>([]);
  const [error, setError] = useState<string | null>(null);
  const load = useCallback(() => {
    api<{ items: MemoryOut[]; withheld: number }>("/v1/memories?limit=200").then((r) => { setMemories(r.items); setWithheld(r.withheld); })
      .catch((e) => setError(words(e)));
    api<{ items: GoalOut[] }>("/v1/goals?limit=200").then((r) => setGoals(r.items)).catch((e) => setError(words(e)));
  }, []);
  useEffect(load, [load]);

  async function run(path: string, opts: Parameters<typeof api>[1]) {
    try {
      await api(path, opts);
      load();
    } catch (e) {
      setError(words(e));
    }
  }

  return (
    <Paper withBorder p="md" radius="md" component="section" aria-labelledby="memory-title">
      <Title order={2} size="h4" id="memory-title" mb="xs">What the platform remembers about you</Title>
      {error && <Alert color="red" role="alert" mb="sm">{error}</Alert>}
      <SimpleGrid cols={{ base: 1, md: 2 }}>
        <Stack gap={6}>
          <Title order={3} size="h5">Memories</Title>
          {memories.length === 0 && <Text size="sm">Nothing remembered.</Text>}
          {withheld > 0 && <Text size="xs">{withheld} memories from documents you can no longer read are hidden.</Text>}
          {memories.map((m) => (
            <Group key={m.id} justify="space-between" wrap="nowrap" data-testid="memory">
              <Text size="sm"><Badge variant="outline" color="gray" mr={6}>{m.type}</Badge>{m.content}</Text>
              <Button size="compact-sm" variant="default" aria-label={`Forget: ${m.content}`}
                onClick={() => void run(`/v1/memories/${m.id}`, { method: "DELETE" })}>Forget</Button>
            </Group>
          ))}
        </Stack>
        <Stack gap={6}>
          <Title order={3} size="h5">Goals</Title>
          {goals.length === 0 && <Text size="sm">No goals.</Text>}
          {goals.map((g) => (
            <Group key={g.id} justify="space-between" wrap="nowrap" data-testid="goal">
              <Text size="sm">{g.text} <Badge variant="outline" color="gray">{g.status}</Badge></Text>
              {g.status === "active" && (
                <Button size="compact-sm" variant="default" aria-label={`Abandon goal: ${g.text}`}
                  onClick={() => void run(`/v1/goals/${g.id}`, { method: "PATCH", json: { status: "abandoned" } })}>Abandon</Button>
              )}
            </Group>
          ))}
        </Stack>
      </SimpleGrid>
    </Paper>
  );
}

function Evaluation() {
  const [run, setRun] = useState<EvalOut | null>(null);
  const [note, setNote] = useState<string | null>(null);
  const [report, setReport] = useState<string | null>(null);
  useEffect(() => {
    api<EvalOut>("/v1/evals/latest").then(setRun).catch((e) => setNote(e instanceof ApiError && e.status === 404 ? e.message : words(e)));
  }, []);

  async function openReport() {
    try {
      const resp = await fetch(run!.report_url, { headers: { Authorization: `Bearer ${sessionStorage.getItem("eap.token") ?? ""}` } });
      if (!resp.ok) throw new ApiError(resp.status, "report", `HTTP ${resp.status}`);
      setReport(await resp.text());
    } catch (e) {
      setNote(words(e));
    }
  }

  return (
    <Paper withBorder p="md" radius="md" component="section" aria-labelledby="eval-title">
      <Title order={2} size="h4" id="eval-title" mb="xs">Latest evaluation</Title>
      {note && <Text size="sm">{note}</Text>}
      {run && (
        <Stack gap={6}>
          <Text size="sm">Golden set {run.dataset_version}, {new Date(run.created_at).toLocaleString()}; {run.regressions.length} regression(s).</Text>
          <Text size="sm">{Object.entries(run.overall).map(([k, v]) => `${k}: ${typeof v === "number" ? v.toFixed(3) : String(v)}`).join(" · ")}</Text>
          <Group><Button variant="default" onClick={() => void openReport()}>Open the report</Button></Group>
        </Stack>
      )}
      <Modal opened={report !== null} onClose={() => setReport(null)} size="90%" title="Evaluation report">
        {/* sandboxed: the report is shown, never run */}
        <iframe title="Evaluation report" srcDoc={report ?? ""} sandbox="" style={{ width: "100%", height: "70vh", border: 0 }} />
      </Modal>
    </Paper>
  );
}

export function Admin({ me, canOperate }: { me: Me; canOperate: boolean }) {
  return (
    <Stack gap="md">
      <Alerts canOperate={canOperate} />
      <Approvals me={me} />
      <Memory />
      {canOperate ? <Evaluation /> : <Text size="sm">Evaluation reports are for operators and administrators ({me.role} signed in).</Text>}
    </Stack>
  );
}
