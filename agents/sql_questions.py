"""Structured questions answered from the read-only reporting views through the SQL Guard (compliance/sqlguard.py).

A question is structured when a rule below recognises it (machines down per line, defect rate per line,
downtime per machine …). Who writes the SQL depends on the model: with the extractive responder, the rule's
template (bound values, never string-built); with a generative model, the model writes it from the views the
caller's role may read, and the guard checks it like any other query. Either way the guard runs it (READ ONLY,
statement timeout, the application role under RLS) and audits it, accepted or refused. The result becomes a
numbered tool source of the answer, so its figures pass VERIFY and are cited; with the extractive responder
the formatted result is the answer itself. The [n] that points at it resolves to a citation of kind "query"
(agents/operational_records.py): the source system behind the views, the validated SQL that ran (or the
refused one and the reason, e.g. a statement timeout), the row count and when it ran.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agents.answer import Prepared
from agents.deps import AgentDeps
from agents.operational_records import query_ref, text_digest
from agents.trace import SkillStep, Trace, ms_since
from compliance import sqlguard
from core.db.database import app_engine
from core.prompt import prompt_of
from core.repos import operational

SKILL = "sql_query"
_STATE = {"down": "DOWN", "running": "RUNNING", "idle": "IDLE", "in setup": "SETUP", "setup": "SETUP"}
_LINE = re.compile(r"\bline\s+(L?\d{1,3})\b", re.I)


@dataclass(frozen=True)
class Template:
    name: str
    pattern: re.Pattern[str]
    sql: str
    params: Callable[[re.Match[str], str], dict[str, object]]
    describe: Callable[[list[str], list[list[Any]], dict[str, object]], str]


def _line(question: str) -> str | None:
    m = _LINE.search(question)
    if not m:
        return None
    v = m.group(1).upper()
    return v if v.startswith("L") else f"L{v}"


def _rows(columns: list[str], rows: list[list[Any]]) -> str:
    return "\n".join("; ".join(f"{c} {v}" for c, v in zip(columns, r, strict=False)) for r in rows)


def _machines_by_state(columns: list[str], rows: list[list[Any]], p: dict[str, object]) -> str:
    total = sum(int(r[1]) for r in rows)
    per = ", ".join(f"line {r[0]}: {r[1]}" for r in rows)
    return f"{total} machine(s) are {p['state']} according to the latest MES status" + (f" ({per})" if per else "")


def _defect_rates(columns: list[str], rows: list[list[Any]], p: dict[str, object]) -> str:
    if not rows:
        return "No MES quality reports are stored for that line yet"
    return "Defect rate from the stored MES quality reports: " + "; ".join(
        f"line {r[0]}: {r[1]} ({r[2]} defects in {r[3]} inspected parts, {r[4]} reports)" for r in rows)


def _downtime(columns: list[str], rows: list[list[Any]], p: dict[str, object]) -> str:
    if not rows:
        return "No MES downtime events are stored yet"
    return "Downtime from the stored MES events: " + "; ".join(
        f"{r[0]}: {r[1]} event(s), {r[2] if r[2] is not None else 'still down, no end yet'} minutes closed"
        for r in rows)


def _which(columns: list[str], rows: list[list[Any]], p: dict[str, object]) -> str:
    if not rows:
        return f"No machine is {p['state']} according to the latest MES status"
    return f"Machines {p['state']} according to the latest MES status: " + "; ".join(
        f"{r[0]} ({r[2]}, line {r[1]}) since {r[3]}" for r in rows)


def _below_reorder(columns: list[str], rows: list[list[Any]], p: dict[str, object]) -> str:
    if not rows:
        return "No material is below its reorder point in the latest SAP stock extract"
    return "Below the reorder point in the latest SAP stock extract: " + "; ".join(
        f"{r[0]} at plant {r[1]}: {r[2]} {r[4]} (reorder point {r[3]})" for r in rows)


TEMPLATES: tuple[Template, ...] = (
    Template("machines_by_state",
             re.compile(r"\bhow many machines\b.*?\b(down|running|idle|in setup)\b", re.I),
             "SELECT line, count(*) AS machines FROM machine_status WHERE state = :state GROUP BY line "
             "ORDER BY line LIMIT 100",
             lambda m, q: {"state": _STATE[m.group(1).lower()]}, _machines_by_state),
    Template("machines_in_state",
             re.compile(r"\b(?:which|what|list)\b.*?\bmachines?\b.*?\b(?:are|is)\s+(down|running|idle|in setup)\b",
                        re.I),
             "SELECT machine_id, line, name, since FROM machine_status WHERE state = :state ORDER BY since "
             "LIMIT 100",
             lambda m, q: {"state": _STATE[m.group(1).lower()]}, _which),
    Template("defect_rate_by_line",
             re.compile(r"\bdefect rates?\b.*?\b(?:per line|by line|each line|of line|on line|for line|lines)\b",
                        re.I),
             "SELECT line, round(sum(defects) * 1.0 / nullif(sum(inspected), 0), 4) AS defect_rate, "
             "sum(defects) AS defects, sum(inspected) AS inspected, count(*) AS reports FROM quality_reports "
             "WHERE (:line = '' OR line = :line) GROUP BY line ORDER BY line LIMIT 100",
             lambda m, q: {"line": _line(q) or ""}, _defect_rates),
    Template("downtime_by_machine",
             re.compile(r"\bdowntime\b.*?\b(?:per|by|for each)\s+machine\b|\b(?:total|how much)\b.*?\bdowntime\b",
                        re.I),
             "SELECT machine_id, count(*) AS events, sum(duration_minutes) AS minutes FROM downtime_events "
             "GROUP BY machine_id ORDER BY machine_id LIMIT 100",
             lambda m, q: {}, _downtime),
    Template("materials_below_reorder_point",
             re.compile(r"\b(?:which|what|list|any)\b.*?\bmaterials?\b.*?\bbelow\b.*?\b(?:reorder point|minimum)",
                        re.I),
             "SELECT i.material, i.plant, sum(i.quantity) AS stock, m.reorder_point, i.unit FROM sap_inventory AS i "
             "JOIN sap_materials AS m ON m.material = i.material AND m.plant = i.plant WHERE i.stock_type = '01' "
             "GROUP BY i.material, i.plant, m.reorder_point, i.unit HAVING sum(i.quantity) < m.reorder_point "
             "ORDER BY i.material LIMIT 100",
             lambda m, q: {}, _below_reorder),
)


def match(question: str) -> tuple[Template, re.Match[str]] | None:
    """The template a structured question matches, or None (then it is not a structured question)."""
    for t in TEMPLATES:
        m = t.pattern.search(question)
        if m:
            return t, m
    return None


_FENCE = re.compile(r"```(?:sql)?\s*(.*?)```", re.S | re.I)


def model_sql(deps: AgentDeps, question: str, model: str) -> str:
    """The SQL a generative model writes for the question, from the views the caller's role may read."""
    schema = "\n".join(f"- {sqlguard.SCHEMA}.{v}({', '.join(cols)}): {sqlguard.VIEWS[v].description}"
                       for v, cols in sqlguard.allowed_views(deps.caller.role).items())
    messages = [
        {"role": "system", "content": "Write ONE PostgreSQL SELECT statement that answers the question from these "
                                      f"read-only views and columns only:\n{schema}\nRules: no comments, no "
                                      "subqueries, no CTEs, no UNION; end with LIMIT n (n at most "
                                      f"{sqlguard.MAX_ROWS}). Reply with the SQL only."},
        {"role": "user", "content": question},
    ]
    reply = deps.model.complete(messages, model=model).text.strip()
    fenced = _FENCE.search(reply)
    return (fenced.group(1) if fenced else reply).strip().rstrip(";").strip()


def step(deps: AgentDeps, question: str, prepared: Prepared, model: str,
         trace: Trace) -> tuple[list[str], str | None, str | None]:
    """The structured-question step of the orchestrator: (tool texts, direct answer, skill name), or
    ([], None, None) when the question is not a structured one or there is no tenant to scope it to."""
    found = match(question)
    if found is None or deps.tenant_id is None:
        return [], None, None
    template, m = found
    t = time.perf_counter()
    generative = deps.model.generative(model)
    sql, params, author = (model_sql(deps, question, model), None, "model") if generative else \
        (template.sql, template.params(m, question), "template")
    data: dict[str, Any] = {"template": template.name, "author": author}
    try:
        res = sqlguard.run(app_engine(), deps.tenant_id, actor=deps.caller.subject, role=deps.caller.role, sql=sql,
                           params=params, purpose=f"chat: {template.name}", author=author)
    except (sqlguard.SQLRefused, sqlguard.SQLFailed) as exc:
        reason = str(exc.details.get("reason", exc.code))
        body = f"The SQL Guard did not answer this question: {exc.message}"
        # The refusal is the cited source: its citation names the refused (or failed) SQL and the reason.
        data.update(refused=reason, sql=sql[:500],
                    records=[query_ref(_system(()), (), sql[:500], 0, dt.datetime.now(dt.UTC), author=author,
                                       refused=reason).as_dict()], text_digest=text_digest(body))
        trace.append(SkillStep(ms=ms_since(t), tool=SKILL, args={"question": question}, result=data, denied=reason,
                               reason=exc.message))
        direct = f"{body} [{len(prepared.hits) + 1}]" if not generative else None
        return _add(prepared, "Refused", body), direct, SKILL
    table = _rows(res.columns, res.rows)
    summary = template.describe(res.columns, res.rows, dict(params or {})) if not generative else ""
    unobserved = _never_observed(deps, res.views) if not res.rows else None
    if unobserved:
        # An empty result over data that was never collected is not "none": say so instead of the template.
        summary = (f"No {unobserved} data has been recorded for this tenant yet (no MES configured or polled: "
                   "PUT /v1/integrations/mes), so this cannot be answered from MES data")
    body = (f"Query over {', '.join(f'{sqlguard.SCHEMA}.{v}' for v in res.views)} ({len(res.rows)} rows):\n"
            f"{res.sql}\n{table}" + (f"\n{summary}." if summary else ""))
    data.update(sql=res.sql, views=list(res.views), rows=len(res.rows), ms=round(res.ms, 1))
    # The citation behind the [n] that points at this result: views, validated SQL, row count, as-of.
    data.update(records=[query_ref(_system(res.views), [f"{sqlguard.SCHEMA}.{v}" for v in res.views], res.sql,
                                   len(res.rows), dt.datetime.now(dt.UTC), author=author).as_dict()],
                text_digest=text_digest(body))
    trace.append(SkillStep(ms=ms_since(t), tool=SKILL, args={"question": question}, result=data))
    n = len(prepared.hits) + 1
    return _add(prepared, "Reporting views", body), (f"{summary} [{n}]." if not generative else None), SKILL


def _system(views: Iterable[str]) -> str:
    """The source systems whose data the reporting views hold (SAP extracts, MES observations)."""
    names = sorted({"SAP" if v.startswith("sap_") else "MES" for v in views})
    return "+".join(names) if names else "EAP reporting"


# Reporting views over stored MES observations, by the observation kind they read.
_MES_KINDS = {"machine_status": "machine_status", "downtime_events": "downtime", "quality_reports": "quality"}


def _never_observed(deps: AgentDeps, views: Iterable[str]) -> str | None:
    """The MES observation kind behind `views` of which the tenant has no record at all, if any."""
    for view in views:
        kind = _MES_KINDS.get(view)
        if kind and not operational.mes_observations(deps.session, kind, 36_500, limit=1):
            return kind.replace("_", " ")
    return None


def _add(prepared: Prepared, title: str, body: str) -> list[str]:
    """The result as the next numbered (tool) source of the prompt."""
    prompt = prompt_of(prepared.messages)
    if prompt is None or len(prompt.sources) != len(prepared.hits):
        raise RuntimeError("the prepared prompt has no typed source list to add the query result to")
    prepared.messages[0] = prompt.with_source(f"Tool {SKILL}: {title}", body, tool=True).system_message()
    return [body]
