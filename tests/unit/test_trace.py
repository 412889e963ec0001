"""The typed trace serialises to the stored shape: `{"step", "ms", fields…}`, variants without unset fields."""

from agents.trace import (
    ComposeStep,
    GenerateStep,
    LearnStep,
    ReasoningStep,
    RetrieveStep,
    SkillStep,
    TDDRevise,
    Trace,
)


def test_steps_serialise_in_declaration_order_without_unset_fields() -> None:
    assert RetrieveStep(ms=1.5, hits=2, chunk_ids=["a", "b"], query="q").as_dict() == {
        "step": "THINK.retrieve", "ms": 1.5, "tool": "hybrid_search", "query": "q", "hits": 2, "chunk_ids": ["a", "b"]}
    main = RetrieveStep(ms=0.0, hits=0, index_version=None, chunk_ids=[], timings_ms={})
    assert list(main.as_dict()) == ["step", "ms", "tool", "hits", "index_version", "chunk_ids", "timings_ms"]
    denied = SkillStep(ms=0.1, tool="report_generation", denied="forbidden", requested_by="model").as_dict()
    assert denied == {"step": "THINK.skill", "ms": 0.1, "tool": "report_generation", "denied": "forbidden",
                      "requested_by": "model"}
    assert TDDRevise(ms=0.0, round=2, note="stopped").as_dict() == {"step": "TDD.revise", "ms": 0.0, "round": 2,
                                                                     "note": "stopped"}


def test_compose_step_keeps_its_json_keys_and_a_branch_step_names_its_specialist_last() -> None:
    step = ComposeStep(ms=0.2, klass="DEEP", composition="pipeline", specialists=["a"], subquestions=["q"],
                       thinking_tool=None, complexity="MODERATE", reasons=[], by="rules")
    assert list(step.as_dict()) == ["step", "ms", "class", "composition", "specialists", "subquestions",
                                    "thinking_tool", "complexity", "reasons", "by"]
    gen = GenerateStep(ms=1.0, tier="LIGHT", model="m", note="n", owner="quality_inspector")
    assert list(gen.as_dict())[-1] == "specialist" and gen.as_dict()["specialist"] == "quality_inspector"


def test_trace_is_read_by_field() -> None:
    trace = Trace([ComposeStep(ms=0.0, klass="SIMPLE", composition="tdd", specialists=["a"], subquestions=[],
                               thinking_tool=None, complexity="SIMPLE", reasons=[], by="rules"),
                   SkillStep(ms=0.0, tool="calculations", args={}, result={}),
                   ReasoningStep(ms=0.0, reasoning={"tool": "Council"}),
                   LearnStep(ms=0.0, specialist="a", tier="LIGHT", outcome="verified", escalations=0)])
    assert trace.compose is not None and trace.compose.composition == "tdd"
    assert trace.reasoning is not None and trace.reasoning.reasoning == {"tool": "Council"}
    assert trace.tools() == ["calculations"] and [s.tool for s in trace.skills] == ["calculations"]
    assert trace.learn is not None
    trace.learn.learned = {"memories": []}
    assert trace.to_json()[-1]["learned"] == {"memories": []}
