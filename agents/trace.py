"""The reasoning trace of one answer, as typed steps.

Every stage of the orchestrator and of a composition appends one step; code that needs what an
earlier step found reads its fields (`trace.compose.composition`, `trace.learn.learned = …`), never
scans dicts. `Trace.to_json()` gives the stored shape — the list of dicts kept on `agent_runs.trace`
and returned by `GET /v1/traces/{id}`: `{"step": <name>, "ms": …, <fields in declaration order>}`,
a field left `UNSET` is absent (each step name has a few variants, e.g. a denied skill has no result),
and a step a branch of a composition ran carries its specialist last.

History redaction (agents/answer_access.py) works on the stored JSON with an allow-list of field
names, so a new field here is withheld from unreadable traces until it is added there.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, dataclass_transform


class _Unset:
    """A step field that is not part of this variant of the step: left out of its JSON."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Any = _Unset()


def ms_since(t0: float) -> float:
    """Milliseconds since a `time.perf_counter()` reading, as the trace records them."""
    return round((time.perf_counter() - t0) * 1000, 1)


@dataclass_transform(kw_only_default=True, field_specifiers=(field,))
@dataclass(kw_only=True)
class Step:
    """A trace step. A kind of step is a subclass naming itself, `class VerifyStep(Step, name="VERIFY")`,
    with its fields: it is made a keyword-only dataclass here, so the kinds declare data and nothing else."""

    name: ClassVar[str]
    ms: float
    # The specialist whose branch ran this step (several specialists in one answer); emitted last.
    owner: str | None = field(default=None, metadata={"emit": False})

    def __init_subclass__(cls, *, name: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name is not None:  # (a kind decorated with @dataclass itself sets its `name` ClassVar instead)
            cls.name = name
            dataclass(kw_only=True)(cls)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step": self.name}
        for f in dataclasses.fields(self):
            if f.metadata.get("emit", True) is False:
                continue
            value = getattr(self, f.name)
            if value is not UNSET:
                out[f.metadata.get("key", f.name)] = value
        if self.owner is not None:
            out.setdefault("specialist", self.owner)
        return out


class ObserveStep(Step, name="OBSERVE"):
    history_turns: int
    role: str
    ceiling: int
    groups: list[str]
    budget: str
    memories: list[dict[str, Any]] = UNSET  # recalled memories (ids, types, scores): only with a tenant
    goals: list[dict[str, Any]] = UNSET
    preferences_applied: dict[str, str] = UNSET


class RouteStep(Step, name="THINK.route"):
    specialist: str
    confidence: float
    fallback: bool
    reason: str
    scores: dict[str, float]


class RetrieveStep(Step, name="THINK.retrieve"):
    tool: str = "hybrid_search"
    query: str = UNSET  # a composition branch's own query
    hits: int
    index_version: Any = UNSET  # the request's main retrieval only
    chunk_ids: list[str]
    timings_ms: dict[str, Any] = UNSET


class SkillStep(Step, name="THINK.skill"):
    tool: str
    args: dict[str, Any] = UNSET
    result: Any = UNSET
    denied: str = UNSET  # the error code when the skill was refused
    reason: str = UNSET
    requested_by: str = UNSET  # "model" for a tool call


class ComposeStep(Step, name="THINK.compose"):
    klass: str = field(metadata={"key": "class"})
    composition: str
    specialists: list[str]
    subquestions: list[str]
    thinking_tool: str | None
    complexity: str
    reasons: list[str]
    by: str


class TierStep(Step, name="THINK.tier"):
    complexity: str
    tier: str
    specialist_default: str
    allowed: list[str] = UNSET  # the tenant's tier policy (core/llm/tiers.py), when it has one
    requested: str = UNSET  # the tier the client asked for
    downgraded_from: str = UNSET  # ... when the policy answered it on a lower tier


class GenerateStep(Step, name="THINK.generate"):
    tier: str
    model: str
    note: str = UNSET  # answered without a model call
    purpose: str = UNSET  # a thinking tool's or a revision's call
    prompt_tokens: int = UNSET
    completion_tokens: int = UNSET
    tool_calls: list[str] = UNSET


class VerifyStep(Step, name="VERIFY"):
    ok: bool
    abstained: bool
    problems: list[str]


class EscalateStep(Step, name="ESCALATE"):
    to: str
    because: list[str]


class ReasoningStep(Step, name="THINK.reasoning"):
    reasoning: dict[str, Any]


class LearnStep(Step, name="LEARN"):
    specialist: str
    tier: str
    outcome: str
    escalations: int
    learned: dict[str, Any] = UNSET  # set by agents/learning.after_answer


class PipelineStage(Step, name="PIPELINE.stage"):
    stage: int
    specialist: str
    question: str
    builds_on: list[str]


class FanOutStep(Step, name="FANOUT"):
    branches: list[str]
    execution: str


class MergeStep(Step, name="MERGE"):
    composition: str
    sections: list[str]
    sources: int
    tool_sources: int
    renumbered: dict[str, dict[str, int]]


class CouncilStep(Step, name="THINK.council"):
    perspectives: list[str]
    common_ground: int
    considerations: int


class FirstPrinciplesStep(Step, name="THINK.first_principles"):
    probes: int
    candidates: int
    hypotheses: list[dict[str, Any]]


class RedTeamStep(Step, name="THINK.redteam"):
    round: int
    findings: list[dict[str, Any]]
    blocking: list[str]


class TDDCheck(Step, name="TDD.check"):
    round: int
    passed: bool
    criteria: list[dict[str, Any]]


class TDDRevise(Step, name="TDD.revise"):
    round: int
    note: str = UNSET  # the loop stopped: nothing could be revised
    tier: str = UNSET
    because: list[str] = UNSET


class ComposeDone(Step, name="COMPOSE.done"):
    composition: str
    klass: str = field(metadata={"key": "class"})
    thinking_tool: str | None
    specialists: list[str]
    revisions: int
    criteria_passed: bool
    outcome: str


class ExportControlStep(Step, name="COMPLIANCE.export_control"):
    """The export-control guard's decision on the final answer (agents/export_guard.py)."""

    decision: str  # pass | released | redacted | withheld
    cleared: bool
    terms: list[str]  # the vocabulary found (e.g. "ITAR"), never document text
    controlled_documents: list[str]
    removed: int


S = TypeVar("S", bound=Step)


class Trace:
    """The steps of one answer, in the order they ran."""

    def __init__(self, steps: Iterable[Step] = ()) -> None:
        self.steps: list[Step] = list(steps)

    def append(self, step: Step) -> None:
        self.steps.append(step)

    def extend(self, steps: Iterable[Step]) -> None:
        self.steps.extend(steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def of(self, kind: type[S]) -> list[S]:
        return [s for s in self.steps if isinstance(s, kind)]

    def first(self, kind: type[S]) -> S | None:
        return next((s for s in self.steps if isinstance(s, kind)), None)

    def last(self, kind: type[S]) -> S | None:
        return next((s for s in reversed(self.steps) if isinstance(s, kind)), None)

    @property
    def route(self) -> RouteStep | None:
        return self.first(RouteStep)

    @property
    def compose(self) -> ComposeStep | None:
        return self.first(ComposeStep)

    @property
    def reasoning(self) -> ReasoningStep | None:
        return self.first(ReasoningStep)

    @property
    def learn(self) -> LearnStep | None:
        return self.last(LearnStep)

    @property
    def skills(self) -> list[SkillStep]:
        return self.of(SkillStep)

    def tools(self) -> list[str]:
        """Every tool a step used (retrieval, skills), in order."""
        return [s.tool for s in self.steps if isinstance(s, RetrieveStep | SkillStep) and s.tool]

    def to_json(self) -> list[dict[str, Any]]:
        """The stored shape (agent_runs.trace, GET /v1/traces/{id})."""
        return [s.as_dict() for s in self.steps]
