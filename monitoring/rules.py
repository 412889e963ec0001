"""Threshold rules evaluated over MES data (pure functions: easy to reason about and test)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from connectors.mes import MachinesResponse, QualityReport

RULE_KINDS = ("downtime_minutes", "defect_rate", "inventory_below_min")
# A breach this many times over its threshold escalates (severity critical, notified again).
ESCALATION_FACTOR = 2.0


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    kind: str
    threshold: float
    scope: str | None
    severity: str


@dataclass
class Breach:
    rule_id: str
    rule_name: str
    kind: str
    subject: str
    value: float
    threshold: float
    severity: str
    episode: str  # identifies this occurrence (e.g. when the machine went down)
    message: str
    context: dict = field(default_factory=dict)

    @property
    def escalated(self) -> bool:
        if self.kind == "inventory_below_min":
            return self.value <= 0  # a stock-out
        return self.value >= self.threshold * ESCALATION_FACTOR

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("rule_id", "rule_name", "kind", "subject", "value", "threshold",
                                              "severity", "episode", "message", "context")}


def _in_scope(rule: Rule, *names: str) -> bool:
    return rule.scope is None or rule.scope in names


def evaluate_machines(rules: list[Rule], status: MachinesResponse) -> tuple[list[Breach], set[tuple[str, str]]]:
    """(breaches, cleared (rule_id, subject) pairs)."""
    breaches, cleared = [], set()
    for rule in (r for r in rules if r.kind == "downtime_minutes"):
        for m in status.machines:
            if not _in_scope(rule, m.machine_id, m.line):
                continue
            if m.state == "DOWN":
                minutes = (status.as_of - m.since).total_seconds() / 60
                if minutes > rule.threshold:
                    breaches.append(Breach(
                        rule.id, rule.name, rule.kind, m.machine_id, round(minutes, 1), rule.threshold,
                        "critical" if minutes >= rule.threshold * ESCALATION_FACTOR else rule.severity,
                        episode=m.since.isoformat(),
                        message=f"{m.name} ({m.machine_id}, line {m.line}) down for {minutes:.0f} min "
                                f"(limit {rule.threshold:g} min): {m.reason or 'no reason given'}",
                        context={"machine_id": m.machine_id, "line": m.line, "machine": m.name, "reason": m.reason,
                                 "down_since": m.since.isoformat(), "as_of": status.as_of.isoformat()}))
            else:
                cleared.add((rule.id, m.machine_id))
    return breaches, cleared


def evaluate_quality(rules: list[Rule], reports: list[QualityReport]) -> tuple[list[Breach], set[tuple[str, str]]]:
    latest: dict[str, QualityReport] = {}
    for r in reports:
        if r.line not in latest or r.period_end > latest[r.line].period_end:
            latest[r.line] = r
    breaches, cleared = [], set()
    for rule in (r for r in rules if r.kind == "defect_rate"):
        for line, rep in latest.items():
            if not _in_scope(rule, line):
                continue
            rate = rep.defect_rate
            if rate > rule.threshold:
                breaches.append(Breach(
                    rule.id, rule.name, rule.kind, line, round(rate, 4), rule.threshold,
                    "critical" if rate >= rule.threshold * ESCALATION_FACTOR else rule.severity,
                    episode=rep.report_id,
                    message=f"Defect rate on line {line} is {rate:.1%} for {rep.product} "
                            f"({rep.defects}/{rep.inspected}, {rep.period_start:%H:%M}-{rep.period_end:%H:%M}; "
                            f"limit {rule.threshold:.1%})",
                    context={"line": line, "product": rep.product, "report_id": rep.report_id,
                             "defects": rep.defects, "inspected": rep.inspected}))
            else:
                cleared.add((rule.id, line))
    return breaches, cleared


def evaluate_inventory(rules: list[Rule], levels: list[dict], as_of: dt.datetime
                       ) -> tuple[list[Breach], set[tuple[str, str]]]:
    """inventory_below_min over the SAP stock extract (monitoring/sap_extracts.stock_levels: unrestricted
    stock per material and plant, with the material's reorder point). A rule scoped to a material
    ("RM-1001", or "RM-1001@1010" for one plant) compares its stock with `threshold` (base unit); a rule
    scoped to a plant ("1010") or to nothing compares every material with its SAP reorder point times
    `threshold` (1.0: at the reorder point). Subjects are "material@plant"; a stock-out is critical."""
    breaches, cleared = [], set()
    for rule in (r for r in rules if r.kind == "inventory_below_min"):
        for lv in levels:
            material, plant = lv["material"], lv["plant"]
            subject = f"{material}@{plant}"
            if rule.scope in (material, subject):
                minimum = float(rule.threshold)
            elif rule.scope is None or rule.scope == plant:
                if lv.get("reorder_point") is None:
                    continue
                minimum = float(lv["reorder_point"]) * rule.threshold
            else:
                continue
            qty = float(lv["quantity"])
            if qty < minimum:
                desc = lv.get("description") or material
                breaches.append(Breach(
                    rule.id, rule.name, rule.kind, subject, round(qty, 3), round(minimum, 3),
                    "critical" if qty <= 0 else rule.severity, episode=as_of.isoformat(),
                    message=f"Stock of {desc} ({material}) at plant {plant} is {qty:g} {lv.get('unit') or ''}".rstrip()
                            + f", below the minimum of {minimum:g} (SAP stock as of {as_of:%Y-%m-%d %H:%M} UTC)",
                    context={"material": material, "plant": plant, "quantity": qty, "unit": lv.get("unit"),
                             "minimum": minimum, "as_of": as_of.isoformat(), "source": "sap:A_MatlStkInAcctMod"}))
            else:
                cleared.add((rule.id, subject))
    return breaches, cleared
