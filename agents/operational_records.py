"""What operational answers cite: the records a tool result was built from, and the citations behind every
"[n]" that points at a tool source (a SAP/MES read, a SQL Guard query, the calculator).

A tool result carries `RecordRef`s (system, entity, key, as-of time, live read or extract; for a query or a
calculation also the validated SQL and its row count, or the formula and its inputs). The step that ran the
tool stores them in the trace with the digest of the text it added to the prompt; `record_citations` turns
each cited tool source back into citations, so no marker of an answer is left without one:

- kind "record": a SAP/MES record (or the entity set and filter a read found nothing in);
- kind "query": a SQL Guard query over the reporting views (views, validated SQL, rows, as-of);
- kind "calculation": the calculator's formula, inputs and result.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from core.prompt import prompt_of
from retrieval.search import Caller

CALCULATOR = "calculations"  # the calculator skill (agents/skills.py)


@dataclass(frozen=True)
class RecordRef:
    """One system record (or query, or calculation) an answer is built on: where it lives and when it was read."""

    system: str  # SAP | MES | EAP (the platform's reporting views, the calculator)
    entity: str  # e.g. A_MatlStkInAcctMod, machine, downtime_event, reporting.machine_status, calculator
    key: str  # the record's key in that system (OData key predicate for SAP), the filter, or the formula
    as_of: dt.datetime
    source: str | None = "live"  # live (read now) | extract (the stored copy) | None (a calculation)
    title: str = ""
    kind: str = "record"  # record | query | calculation
    detail: Mapping[str, Any] = field(default_factory=dict)  # query: sql, rows, views; calculation: inputs …

    def as_dict(self) -> dict[str, Any]:
        return {"system": self.system, "entity": self.entity, "key": self.key, "as_of": self.as_of.isoformat(),
                "source": self.source, "title": self.title or f"{self.system} {self.entity} {self.key}",
                "kind": self.kind, "detail": dict(self.detail)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RecordRef:
        return cls(d["system"], d["entity"], d["key"], dt.datetime.fromisoformat(d["as_of"]), d.get("source"),
                   d.get("title", ""), d.get("kind", "record"), dict(d.get("detail") or {}))


@dataclass(frozen=True)
class RecordCitation:
    """A citation of a system record, a query or a calculation, numbered like a document citation: `n` is the
    source number of the tool result it came from."""

    n: int
    record: RecordRef

    def as_dict(self) -> dict[str, Any]:
        rec = self.record.as_dict()
        detail = rec.pop("detail")
        return {"n": self.n, **rec, **detail}


@dataclass
class ToolResult:
    tool: str
    title: str
    text: str
    records: list[RecordRef] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolContext:
    """What a tool reads through: the caller's tenant session (RLS) and role."""

    session: Session
    caller: Caller


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def query_ref(system: str, views: Iterable[str], sql: str, rows: int, as_of: dt.datetime, *, author: str,
              refused: str | None = None) -> RecordRef:
    """The citation record of a SQL Guard query: the views (the source system's data behind them), the
    validated SQL that ran (or the refused one, with the reason), its row count and when it ran."""
    names = ", ".join(views) or "reporting views"
    return RecordRef(system, names, sql, as_of, "extract",
                     f"SQL Guard query over {names}" + (f" (refused: {refused})" if refused else f" ({rows} rows)"),
                     "query", {"query": sql, "rows": rows, "author": author,
                               **({"refused": refused} if refused else {})})


def calculation_ref(step_result: Mapping[str, Any], as_of: dt.datetime) -> RecordRef:
    """The citation record of a calculator result (the skill step's stored result: tool, args, result)."""
    tool = str(step_result.get("tool", "calculate"))
    args = list(step_result.get("args") or [])
    if tool == "calculate":
        formula = str(args[0]) if args else ""
        inputs: list[Any] = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", formula)]
    elif tool == "convert":
        formula, inputs = (f"convert {args[0]} {args[1]} → {args[2]}" if len(args) == 3 else "convert"), args[:1]
    else:
        formula, inputs = f"{tool} of the values", args
    detail: dict[str, Any] = {"formula": formula, "inputs": inputs, "result": step_result.get("result")}
    if step_result.get("refused"):
        detail["refused"] = step_result["refused"]
    return RecordRef("EAP", "calculator", formula, as_of, None, f"Calculator: {formula}", "calculation", detail)


def record_citations(answer: str, messages: list[dict[str, Any]], steps: Any) -> list[RecordCitation]:
    """The citations behind the tool sources an answer cites: for each [n] that points at a tool result, one
    citation per record it was built from (matched through the digest its step stored with the result);
    a calculator source gets its formula and inputs (its steps, in order)."""
    prompt = prompt_of(messages)
    if prompt is None:
        return []
    by_digest: dict[str, list[dict[str, Any]]] = {}
    calculations: list[tuple[dt.datetime, dict[str, Any]]] = []
    now = dt.datetime.now(dt.UTC)
    for step in steps:
        result = getattr(step, "result", None)
        if not isinstance(result, dict):
            continue
        if result.get("records") and result.get("text_digest"):
            by_digest[result["text_digest"]] = result["records"]
        elif getattr(step, "tool", None) == CALCULATOR and getattr(step, "requested_by", "rules") != "model":
            calculations.append((now, result))
    calc_sources = [s.n for s in prompt.sources if s.tool and s.header.startswith(f"Tool {CALCULATOR}:")]
    out: list[RecordCitation] = []
    seen: set[int] = set()
    for m in re.finditer(r"\[(\d{1,2})\]", answer):
        n = int(m.group(1))
        if n in seen or not 1 <= n <= len(prompt.sources):
            continue
        seen.add(n)
        src = prompt.sources[n - 1]
        if not src.tool:
            continue
        for rec in by_digest.get(text_digest(src.text), []):
            out.append(RecordCitation(n, RecordRef.from_dict(rec)))
        if n in calc_sources and calc_sources.index(n) < len(calculations):
            at, result = calculations[calc_sources.index(n)]
            out.append(RecordCitation(n, calculation_ref(result, at)))
    return out
