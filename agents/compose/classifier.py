"""The complexity classifier: which class (SIMPLE, DEEP, MULTI_PERSPECTIVE, QUALITY_CRITICAL) and
which composition (direct, tdd, pipeline, fan-out, gate) a request gets, with its sub-questions, the
specialists in execution order and the thinking tool. Rules plus the router's embeddings, deterministic;
only with EAP_LLM_ROUTING on and a non-extractive model is a model asked about a complex question the
rules left SIMPLE."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from agents import thinking
from agents.router import Route, route
from agents.trace import ComposeStep
from core import llm
from core.embedding import Embedder
from core.llm import Model, default_model

SIMPLE, DEEP, MULTI, CRITICAL = "SIMPLE", "DEEP", "MULTI_PERSPECTIVE", "QUALITY_CRITICAL"
LEVELS = ("SIMPLE", "MODERATE", "COMPLEX")
CLASS_FLOOR = {SIMPLE: "SIMPLE", DEEP: "MODERATE", MULTI: "MODERATE", CRITICAL: "MODERATE"}
MAX_BRANCHES = 3
PANEL_MARGIN = 0.08  # specialists within this route score of the best join a perspective panel

_GATE = re.compile(
    r"\b(?:is it safe|safe to|safe for|can (?:we|i) (?:release|ship|approve|skip|bypass|restart)|"
    r"releas\w* (?:the |this )?lots?|approv\w+|sign[- ]off|(?:is|are) (?:this|it|they|the \w+) compliant|"
    r"allowed to (?:release|ship|skip|bypass|restart)|may (?:we|i) (?:release|ship|skip|restart|bypass))\b", re.I)
_DECISION = re.compile(
    r"(?:^|[,;:]\s*|\b(?:or|and)\s+)should (?:we|i)\b|\bwhich (?:option|alternative|approach|one)\b|"
    r"\b(?:is it|would it be) better\b|\bbetter to\b|\bdo you recommend\b|\bis it worth\b|\btrade-?offs?\b", re.I)
WHY = re.compile(r"\b(?:why|root causes?|what caused|causes? of|reasons? for)\b", re.I)
_PERSPECTIVE = re.compile(
    r"\b(?:perspectives?|points? of view|viewpoints?|from (?:the |a |every |each )?(?:quality|maintenance|safety|"
    r"procedure|data|production) (?:side|view|angle|and)|each say|both (?:documents|the)|all angles)\b", re.I)
_CHAIN = re.compile(r"\b(?:then|after that|afterwards|next|based on|as a result|fix|repair|correct|prevent|remedy)\b",
                    re.I)
_ASKS = re.compile(r"\b(?:what|how|which|who|whom|when|where|why)\b|^\W*(?:and\s+|then\s+)*(?:is|are|can|could|"
                   r"should|do|does|did|may|must|will|would)\b", re.I)
_SPLIT_HARD = re.compile(r"[?;\n]+")
_SPLIT_SOFT = re.compile(r",\s*(?:and\s+)?(?:then\s+)?(?=(?:what|how|which|who|when|where|why)\b)|"
                         r"\s+and\s+(?:then\s+)?(?=(?:what|how|which|who|when|where|why)\b)", re.I)
PRONOUN = re.compile(r"\b(?:it|its|that|this|them|they|those|these)\b", re.I)
_IDENT = re.compile(r"\b(?=[A-Za-z0-9-]*\d)(?=[A-Za-z0-9-]*[A-Za-z-])[A-Za-z0-9]+(?:-[A-Za-z0-9]+)+\b|"
                    r"\b[A-Z]{1,4}\d+[A-Za-z0-9]*\b")
# How each specialist looks at a shared question (its retrieval and its prompt get this focus).


def subquestions(question: str) -> list[str]:
    """Split a request into its asked parts: at '?', ';', and before a wh-word joined by a comma or
    'and'. Fragments without a question word or under three words stay with the part before them
    ("… need and how often" is one part)."""
    pieces: list[tuple[str, str]] = []  # (separator before it, text)
    for hard in _SPLIT_HARD.split(question):
        sep, last = "; ", 0
        for m in [*_SPLIT_SOFT.finditer(hard), None]:
            text = hard[last:m.start() if m else len(hard)]
            if text.strip(" ,.:"):
                pieces.append((sep, text.strip(" ,.:")))
            if m:
                sep, last = m.group(0), m.end()
    out: list[str] = []
    carry = ""
    for sep, p in pieces:
        if carry:
            p, carry = carry + sep + p, ""
        if len(p.split()) >= 3 and _ASKS.search(p):
            out.append(p)
        elif out:
            out[-1] = out[-1] + sep + p
        else:
            carry = p
    if carry:
        out.append(carry)
    return out or [question.strip()]


def identifiers(text: str) -> list[str]:
    """Codes a quality-critical answer must find in its sources: lots, parts, SOPs, machines (BR-220, 2026-118)."""
    seen: list[str] = []
    for m in _IDENT.finditer(text):
        if m.group(0) not in seen:
            seen.append(m.group(0))
    return seen


@dataclass
class Plan:
    klass: str
    composition: str  # direct | tdd | pipeline | fan-out | gate
    specialists: list[str]  # execution order; [primary] for single-specialist compositions
    queries: dict[str, str]  # specialist → the part of the request it answers
    subquestions: list[str]
    tool: str | None  # Council | RedTeam | FirstPrinciples
    level: str  # tier floor: SIMPLE / MODERATE / COMPLEX
    reasons: list[str]
    by: str = "rules"

    @property
    def direct(self) -> bool:
        return self.composition == "direct" and self.tool is None

    def as_step(self, ms: float) -> ComposeStep:
        """The THINK.compose trace step: what later steps and the Outcome read the composition from."""
        return ComposeStep(ms=ms, klass=self.klass, composition=self.composition, specialists=self.specialists,
                           subquestions=self.subquestions, thinking_tool=self.tool, complexity=self.level,
                           reasons=self.reasons, by=self.by)


def _raise(level: str, floor: str) -> str:
    return LEVELS[max(LEVELS.index(level), LEVELS.index(floor))]


def _panel(r: Route) -> list[str]:
    ranked = sorted(r.scores, key=lambda k: -r.scores[k]) if r.scores else [r.specialist]
    top = r.scores.get(ranked[0], 0.0) if r.scores else 0.0
    panel = [r.specialist] + [k for k in ranked if k != r.specialist and r.scores[k] >= top - PANEL_MARGIN]
    if len(panel) < 2:
        panel += [k for k in ranked if k not in panel][: 2 - len(panel)]
    return panel[:MAX_BRANCHES]


def classify(question: str, r: Route, level: str, embedder: Embedder, *, model: Model | None = None,
             name: str | None = None, allow_model: bool = False) -> Plan:
    """The complexity classifier. `level` is the request-shape level (orchestrator.complexity); the
    class raises it to its floor, so tiers and compositions agree. `model` (the seam) and `name` (the
    LIGHT tier's model string) are asked only with `allow_model` and a non-extractive `name`."""
    subs = subquestions(question)
    reasons: list[str] = []
    primary = r.specialist
    assigned: list[tuple[str, str]] = []  # (specialist, sub-question) in question order
    if len(subs) > 1:
        for i, sq in enumerate(subs):
            sr = route(sq if i == 0 or not PRONOUN.search(sq) else f"{subs[0]} {sq}", embedder)
            key = sr.specialist if not sr.fallback else (assigned[-1][0] if assigned else primary)
            assigned.append((key, sq))
    order: list[str] = []
    for key, _sq in assigned:
        if key not in order:
            order.append(key)
    queries = {k: " and ".join(sq for kk, sq in assigned if kk == k) for k in order}

    def plan(klass: str, comp: str, specs: list[str], tool: str | None, qs: dict[str, str] | None = None) -> Plan:
        return Plan(klass, comp, specs[:MAX_BRANCHES], qs or {s: question for s in specs[:MAX_BRANCHES]}, subs, tool,
                    _raise(level, CLASS_FLOOR[klass]), reasons)

    if m := _GATE.search(question):
        reasons.append(f"quality-critical wording '{m.group(0)}': the answer must pass the gate")
        return plan(CRITICAL, "gate", [primary], thinking.REDTEAM)
    if m := _DECISION.search(question):
        reasons.append(f"decision wording '{m.group(0).strip(' ,;:')}': several perspectives, then a synthesis")
        return plan(MULTI, "fan-out", _panel(r), thinking.COUNCIL)
    if len(order) >= 2:
        at = question.find(subs[0])
        later = question[at + len(subs[0]):] if at >= 0 else " ".join(sq for _k, sq in assigned[1:])
        if (m := _CHAIN.search(later)) or PRONOUN.search(later):
            cue = m.group(0) if m else "a reference back to an earlier part"
            reasons.append(f"{len(subs)} parts for {len(order)} specialists, chained by '{cue}': each builds on "
                           "the last")
            causal = any(WHY.search(sq) for _k, sq in assigned)
            if causal:
                reasons.append("a causal part: its specialist decomposes root causes (FirstPrinciples)")
            return plan(DEEP, "pipeline", order, thinking.FIRST_PRINCIPLES if causal else None, queries)
        reasons.append(f"{len(subs)} independent parts for {len(order)} specialists")
        return plan(MULTI, "fan-out", order, None, queries)
    if m := _PERSPECTIVE.search(question):
        reasons.append(f"asks for several viewpoints ('{m.group(0)}')")
        return plan(MULTI, "fan-out", _panel(r), None)
    if m := WHY.search(question):
        reasons.append(f"causal question ('{m.group(0)}'): decompose root causes")
        return plan(DEEP, "pipeline", [primary], thinking.FIRST_PRINCIPLES)
    if len(subs) > 1:
        reasons.append(f"{len(subs)} asked parts for one specialist: draft, check each part, revise")
        return plan(SIMPLE, "tdd", [primary], None)
    reasons.append("one specialist, one question")
    p = plan(SIMPLE, "direct", [primary], None)
    if allow_model and name and not llm.is_extractive(name) and level == "COMPLEX":
        return _classify_with_model(question, r, level, p, name, model or default_model())
    return p


def _classify_with_model(question: str, r: Route, level: str, rules: Plan, model: str, lm: Model) -> Plan:
    """Optional LLM escalation for complex questions the rules left SIMPLE."""
    msgs = [{"role": "system", "content": "Classify how a manufacturing assistant should answer. Reply with exactly "
                                          "one of: SIMPLE (one specialist), DEEP (specialists in sequence), "
                                          "MULTI_PERSPECTIVE (several specialists, merged), QUALITY_CRITICAL (a "
                                          "safety, compliance or release decision that must pass a check)."},
            {"role": "user", "content": question}]
    reply = lm.complete(msgs, model=model).text.strip().upper().strip(" .`'\"")
    rules.reasons.append(f"rules: SIMPLE for a complex question; model {model} says {reply or 'nothing'}")
    if reply == CRITICAL:
        return dataclasses.replace(rules, klass=CRITICAL, composition="gate", tool=thinking.REDTEAM,
                                   level=_raise(level, CLASS_FLOOR[CRITICAL]), by="model")
    if reply in (DEEP, MULTI):
        panel = _panel(r)
        return dataclasses.replace(rules, klass=reply, composition="pipeline" if reply == DEEP else "fan-out",
                                   specialists=panel, queries={s: question for s in panel},
                                   level=_raise(level, CLASS_FLOOR[reply]), by="model")
    return rules

