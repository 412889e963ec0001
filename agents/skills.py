"""Skill registry with role-based access and the four built-in skills.

A skill is invoked by the orchestrator (by rules today, or because a model asked for it through a
tool call); either way `invoke()` checks the caller's role first, so a viewer never runs an
operator/admin skill whatever the model says. Skill output becomes a numbered source of the answer
(so its figures pass verification and can be cited).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from agents import operational
from agents.tools import CalculationRefused, calculate, convert, statistics, tool_schema
from compliance.access import can_read
from core.enums import Role
from core.errors import Forbidden, InvalidInput
from retrieval import versions
from retrieval.search import Caller, Hit, search

SAFETY_FIRST = "Before you start:"
_SAFETY = re.compile(r"safety|before you (start|begin)|prerequisite|precaution|warning|hazard", re.I)
_STEP = re.compile(r"^\s*(\d{1,2})[.)]\s+(.+)$")


@dataclass
class SkillResult:
    skill: str
    title: str
    text: str  # what is added to the sources
    data: dict[str, Any] = field(default_factory=dict[str, Any])


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    min_role: str
    run: Callable[..., SkillResult]
    tools: tuple[Callable[..., Any], ...] = ()

    def schema(self) -> list[dict[str, Any]]:
        return [tool_schema(t) for t in self.tools]


_N = r"(-?\d+(?:\.\d+)?)"
# Arithmetic asked for in words ("the difference between 6.3 and 1.2 percent"): the expression the
# calculator evaluates is shown with the result.
_WORDED = [
    (re.compile(rf"difference between\D{{0,40}}?{_N}\D{{1,30}}?{_N}", re.I), "{0} - {1}"),
    (re.compile(rf"sum of\D{{0,40}}?{_N}\D{{1,30}}?{_N}", re.I), "{0} + {1}"),
    (re.compile(rf"ratio of\D{{0,40}}?{_N}\D{{1,30}}?{_N}", re.I), "{0} / {1}"),
    (re.compile(rf"{_N}\s*(?:%|percent) of\D{{0,30}}?{_N}", re.I), "{0} / 100 * {1}"),
    (re.compile(rf"(?:percent|percentage|rate|share)\D{{0,40}}?{_N}\D{{1,30}}?\bout of\s+{_N}", re.I),
     "{0} / {1} * 100"),
]


def _calculations(session: Session, caller: Caller, question: str, **_: object) -> SkillResult:
    conv = re.search(r"(-?\d+(?:\.\d+)?)\s*([a-zA-Z°/*·-]+)\s+(?:to|in|into)\s+([a-zA-Z°/*·-]+)", question)
    if conv and re.search(r"\b(convert|in|to)\b", question, re.I):
        value, f, t = float(conv.group(1)), conv.group(2), conv.group(3)
        try:
            out = convert(value, f, t)
            return SkillResult("calculations", "Unit conversion", f"{value:g} {f} = {out:.4g} {t}",
                               {"tool": "convert", "args": [value, f, t], "result": out})
        except CalculationRefused as exc:
            return SkillResult("calculations", "Calculation refused", f"The conversion was refused: {exc.message}.",
                               {"tool": "convert", "refused": exc.code, "reason": exc.message})
        except InvalidInput:
            pass
    nums = re.findall(r"-?\d+(?:\.\d+)?", question)
    if re.search(r"\b(mean|average|median|stdev|standard deviation|statistics)\b", question, re.I) and len(nums) >= 2:
        values = [float(n) for n in nums]
        try:
            res = statistics(values)
        except InvalidInput as exc:
            return SkillResult("calculations", "Calculation refused", f"The statistics were refused: {exc.message}.",
                               {"tool": "statistics", "refused": exc.code, "reason": exc.message})
        body = ", ".join(f"{k} {v:.4g}" for k, v in res.items())
        return SkillResult("calculations", "Statistics", f"Statistics of {', '.join(nums)}: {body}",
                           {"tool": "statistics", "args": values, "result": res})
    for phrase, template in _WORDED:
        m = phrase.search(question)
        if m:
            expression = template.format(*m.groups())
            return _calculated(expression, f"{m.group(0).strip()}: {expression}")
    expr = re.search(r"[-(]?\d[\d\s.+\-*/()%^]*[\d)]", question)
    if expr and re.search(r"[+\-*/%^]", expr.group(0)):
        return _calculated(expr.group(0), expr.group(0).strip())
    raise InvalidInput("no calculation found in the request", code="no_calculation")


def _calculated(expression: str, shown: str) -> SkillResult:
    """The calculator's result — or, for arithmetic it refuses (too large, not a number), an answer
    that says so: the user asked for a calculation and learns why there is none."""
    try:
        value = calculate(expression)
    except InvalidInput as exc:
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return SkillResult("calculations", "Calculation refused",
                           f"The calculation {shown} was refused: {exc.message}.",
                           {"tool": "calculate", "args": [expression[:200]], "refused": exc.code,
                            "reason": exc.message})
    return SkillResult("calculations", "Calculation", f"{shown} = {value:.6g}",
                       {"tool": "calculate", "args": [expression], "result": value})


def _procedure_lookup(session: Session, caller: Caller, question: str, **_: object) -> SkillResult:
    hits = search(session, caller, question, k=5).hits
    if not hits:
        raise InvalidInput("no procedure found", code="no_procedure")
    sop = next((h for h in hits if "sop" in h.title.lower()), hits[0])
    rows = session.execute(
        text("SELECT text, classification, acl_groups, section FROM chunks WHERE document_id = :d "
             "AND generation = :g ORDER BY ordinal"),
        {"d": sop.document_id, "g": versions.serving(session).generation},
    ).all()
    steps: list[tuple[int, str]] = []
    safety: list[str] = []
    for body, cls, acl, section in rows:
        if not can_read(caller.role, caller.groups, cls, acl, "approved"):
            continue  # defence in depth: the same rule as the search that found the document
        # The SOP's safety preconditions (a "Safety" / "Before you start" section) come with its steps.
        in_safety = bool(section and _SAFETY.search(section.split(" > ")[-1]))
        for line in body.splitlines():
            ln = line.strip()
            if not ln or _STEP.match(ln):
                in_safety = in_safety and not ln
            elif len(ln.split()) <= 6 and ln[-1] not in ".!?;:":  # a heading
                in_safety = bool(_SAFETY.search(ln))
            elif in_safety and ln not in safety:
                safety.append(ln)
        for line in body.splitlines():
            m = _STEP.match(line)
            if not m:
                continue
            n = int(m.group(1))
            if n == 1 and steps:
                break  # a second numbered list: keep the first (the procedure)
            if not steps or n == steps[-1][0] + 1 or n == 1:
                steps.append((n, m.group(2).strip()))
    if not steps:
        return SkillResult("procedure_lookup", sop.title, sop.text, {"document_id": str(sop.document_id), "steps": 0})
    body = "\n".join([f"{SAFETY_FIRST} {line}" for line in safety] + [f"{n}. {s}" for n, s in steps])
    return SkillResult("procedure_lookup", f"{sop.title} (steps in order)", body,
                       {"document_id": str(sop.document_id), "steps": len(steps), "safety": safety})


def _first_sentences(text_: str, n: int = 2) -> str:
    parts = re.split(r"(?<=[.!?])\s+", " ".join(text_.split()))
    return " ".join(parts[:n])


def _document_analysis(session: Session, caller: Caller, question: str, hits: list[Hit] | None = None,
                       **_: object) -> SkillResult:
    hits = hits or search(session, caller, question, k=8).hits
    docs: dict[Any, list[Hit]] = {}
    for h in hits:
        docs.setdefault(h.document_id, []).append(h)
    chosen = list(docs.items())[:2]
    if not chosen:
        raise InvalidInput("no document found to analyse", code="no_document")
    parts = []
    for _doc_id, hs in chosen:
        parts.append(f"{hs[0].title}: " + " ".join(_first_sentences(h.text) for h in hs[:2]))
    label = "Comparison" if len(chosen) == 2 and re.search(r"compar|differ", question, re.I) else "Summary"
    return SkillResult("document_analysis", label, "\n".join(parts), {"documents": [str(d) for d, _ in chosen]})


def _report_generation(session: Session, caller: Caller, question: str, hits: list[Hit] | None = None,
                       tool_results: list[SkillResult] | None = None, **_: object) -> SkillResult:
    hits = hits or search(session, caller, question, k=6).hits
    lines = [f"# Report: {question.strip().rstrip('?')}", "", "## Findings"]
    for i, h in enumerate(hits, start=1):
        lines.append(f"- {_first_sentences(h.text, 1)} [{i}]")
    if tool_results:
        lines += ["", "## Calculations"] + [f"- {r.text}" for r in tool_results]
    lines += ["", "## Sources", "| # | document | page | section |", "|---|---|---|---|"]
    lines += [f"| {i} | {h.title} | {h.page or ''} | {h.section or ''} |" for i, h in enumerate(hits, start=1)]
    return SkillResult("report_generation", "Report", "\n".join(lines), {"sources": len(hits)})


REGISTRY: dict[str, Skill] = {s.name: s for s in (
    Skill("document_analysis", "Summarise or compare documents, citing them.", "viewer", _document_analysis),
    Skill("procedure_lookup", "Find an SOP and return its steps in order, cited.", "viewer", _procedure_lookup),
    Skill("report_generation", "A Markdown report from retrieved sources and tool results.", "operator",
          _report_generation),
    Skill("calculations", "Safe arithmetic, unit conversion and statistics (no eval).", "viewer", _calculations,
          (calculate, convert, statistics)),
)}


def _operational(name: str) -> Callable[..., SkillResult]:
    def run(session: Session, caller: Caller, question: str, **_: object) -> SkillResult:
        r = operational.run_skill(name, session, caller, question)
        # The records become record citations when the answer cites this result (agents/operational.py).
        return SkillResult(r.tool, r.title, r.text, {**r.data, "records": [x.as_dict() for x in r.records],
                                                     "text_digest": operational.text_digest(r.text)})
    return run


# SAP and MES reads (agents/operational.py): one skill per typed tool, with its minimum role.
OPERATIONAL = tuple(operational.SKILLS)
REGISTRY.update({name: Skill(name, (tool.__doc__ or name).split("\n\n")[0].replace("\n", " "), role,
                             _operational(name), (tool,))
                 for name, (tool, role, _runner) in operational.SKILLS.items()})


def as_tools(role: str) -> list[dict[str, Any]]:
    """The skills this role may use, offered to a model as OpenAI tools (least privilege: the others are
    not even offered; `invoke` still checks, for models that call what they were not given)."""
    return [{"type": "function", "function": {
        "name": s.name, "description": s.description,
        "parameters": {"type": "object", "properties": {"request": {"type": "string",
                                                                    "description": "what to do, in words"}},
                       "required": ["request"]}}} for s in REGISTRY.values() if s.name in available(role)]


def available(role: str) -> list[str]:
    return [s.name for s in REGISTRY.values() if Role.rank_of(role) >= Role(s.min_role).rank]


def invoke(name: str, session: Session, caller: Caller, question: str, **kwargs: object) -> SkillResult:
    skill = REGISTRY.get(name)
    if skill is None:
        raise InvalidInput(f"unknown skill {name!r}", code="unknown_skill")
    if Role.rank_of(caller.role) < Role(skill.min_role).rank:
        raise Forbidden(f"the {name} skill needs the {skill.min_role} role", code="skill_forbidden")
    return skill.run(session, caller, question, **kwargs)


def select_skill(specialist: str, question: str) -> str | None:
    """Rule-based skill choice (a configured LLM may also request skills through tool calls)."""
    q = question.lower()
    if re.search(r"\breport\b", q):
        return "report_generation"
    if specialist == "procedure_expert":
        return "procedure_lookup"
    if specialist == "document_analyst" and re.search(r"summar|compar|overview|differ", q):
        return "document_analysis"
    # A hyphen between digits without spaces is an identifier (lot 2026-125), not a subtraction.
    if re.search(r"\d\s*[+*/^%]\s*\d|\d\s+-\s*\d|\d-\s+\d|\bconvert\b|\b(mean|average|median|stdev)\b.*\d", q) or \
            any(phrase.search(question) for phrase, _ in _WORDED):
        return "calculations"
    # SAP/MES reads for the Data Analyst, Maintenance Advisor and Quality Inspector (agents/operational.py).
    return operational.select(specialist, question)
