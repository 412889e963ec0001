"""Auto-composition and thinking tools through /v1/chat: the classifier picks each pattern for a
question built to need it; merged answers keep citations that point at the chunk each quoted
sentence comes from; Council / RedTeam / FirstPrinciples return a reasoning section, simple
questions none; the TDD loop revises a scripted bad draft and stops at its bound."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from agents import compose as composition
from agents import orchestrator, thinking
from core.db.database import tenant_session
from core.embedding import get_embedder
from core.llm.extractive import PREFIX
from core.llm.testing import ScriptedModel
from core.models import Role
from core.security import mint_token
from core.settings import get_settings
from retrieval.search import Caller
from tests.builders import run_agent

ROOT = Path(__file__).resolve().parents[2]
# The samples have no procedure for the welding cell; a pipeline question ends with one.
SOP_130 = """# SOP-130 Restart of Welding Robot Cell W2

Document owner: Production. Revision A.

## Procedure

1. Check the gas cylinder pressure and open the shielding gas valve.
2. Run the daily gas-flow check: the flow at the torch must be between 15 and 18 l/min.
3. Inspect the gas hose and the torch cable for damage.
4. Run one test weld on a scrap bracket and inspect it for porosity.
5. Release the cell to production and record the restart in the cell log.
"""


@pytest.fixture(scope="module")
def plant(platform_db, tmp_path_factory):
    """A tenant with the six sample documents and SOP-130, ingested by the real Dagster job."""
    from benchmarks.common import ingest_in_process
    from identity.tenancy import create_tenant

    t, _ = create_tenant(f"compose-{uuid.uuid4().hex[:8]}")
    extra = tmp_path_factory.mktemp("extra")
    (extra / "sop-130-welding-cell-restart.md").write_text(SOP_130)
    ingest_in_process(t.id, sorted((ROOT / "samples").glob("*.*")), ROOT)
    ingest_in_process(t.id, [extra / "sop-130-welding-cell-restart.md"], extra)
    with tenant_session(t.id) as s:
        assert s.execute(text("SELECT count(*) FROM documents WHERE status = 'indexed'")).scalar() == 7
    return t


def _h(t, role=Role.operator, user="ann"):
    return {"Authorization": "Bearer " + mint_token(get_settings(), tenant_id=t.id, tenant=t.name, role=role,
                                                    subject=user, groups=[])}


def _ask(client, t, message, user="ann"):
    r = client.post("/v1/chat", json={"message": message}, headers=_h(t, user=user))
    assert r.status_code == 200, r.text
    return r.json()


def _plan(body_or_trace) -> dict:
    trace = body_or_trace["trace"] if isinstance(body_or_trace, dict) else body_or_trace
    return next(s for s in trace if s["step"] == "THINK.compose")


def _chunks(t, ids) -> dict[str, str]:
    with tenant_session(t.id) as s:
        rows = s.execute(text("SELECT id::text, text FROM chunks WHERE id::text = ANY(:ids)"), {"ids": list(ids)})
        return dict(rows.all())


def _norm(s: str) -> str:
    return " ".join(s.split()).lower()


def assert_citations_point_at_their_quotes(t, body) -> None:
    """Every [n] in the answer is a returned citation, and the sentence it backs is in that chunk
    (the extractive answers quote verbatim; synthesised lines carry a 'Who: ' label before the quote)."""
    cites = {c["n"]: c for c in body["citations"]}
    texts = _chunks(t, {c["chunk_id"] for c in cites.values()})
    sts = thinking.statements(body["answer"])
    assert sts
    for st in sts:
        assert st.markers and set(st.markers) <= set(cites), (st.text, sorted(cites))
        quote = st.plain
        candidates = [quote] + ([quote.split(": ", 1)[1]] if ": " in quote else [])
        assert any(_norm(q) in _norm(texts[cites[n]["chunk_id"]]) for q in candidates for n in st.markers), st.text


def _sections(answer: str) -> dict[str, str]:
    parts = re.split(r"^\*\*(.+?)\*\*$", answer, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _titles(body, section: str) -> set[str]:
    cites = {c["n"]: c["title"] for c in body["citations"]}
    return {cites[int(n)] for n in thinking.MARK.findall(section)}


def test_simple_question_keeps_the_direct_path(client, plant):
    body = _ask(client, plant, "Which hydraulic oil does the HP-400 press use?")
    plan = _plan(body)
    assert (plan["class"], plan["composition"], plan["thinking_tool"]) == ("SIMPLE", "direct", None)
    steps = [s["step"] for s in body["trace"]]
    assert steps == ["OBSERVE", "THINK.route", "THINK.retrieve", "THINK.compose", "THINK.tier", "THINK.generate",
                     "VERIFY", "COMPLIANCE.export_control", "LEARN"]
    assert body["reasoning"] is None and body["outcome"] == "verified" and "HLP 46" in body["answer"]
    assert body["answer"].startswith(PREFIX)
    assert_citations_point_at_their_quotes(plant, body)


def test_deep_question_runs_a_pipeline_each_stage_building_on_the_last(client, plant):
    q = ("Bracket BR-220 has weld porosity: what caused it, how do we fix the welding robot, and then which steps "
         "restart welding cell W2?")
    body = _ask(client, plant, q)
    plan = _plan(body)
    assert (plan["class"], plan["composition"]) == ("DEEP", "pipeline")
    assert plan["specialists"] == ["quality_inspector", "maintenance_advisor", "procedure_expert"]
    stages = [s for s in body["trace"] if s["step"] == "PIPELINE.stage"]
    assert [s["builds_on"] for s in stages] == [[], ["quality_inspector"], ["quality_inspector", "maintenance_advisor"]]
    # The maintenance stage searched with the cause the quality stage found, and was prompted with it.
    retrieve = [s for s in body["trace"]
                if s["step"] == "THINK.retrieve" and s.get("specialist") == "maintenance_advisor"]
    assert "cracked gas hose" in retrieve[0]["query"]
    sections = _sections(body["answer"])
    assert list(sections) == ["First, the Quality Inspector", "Then, the Maintenance Advisor",
                              "Finally, the Procedure Expert"]
    quality, maintenance, procedure = sections.values()
    assert "cracked gas hose" in quality and _titles(body, quality) >= {"qr-2026-044-weld-porosity"}
    assert "mm-310-welding-robot-manual" in _titles(body, maintenance)
    assert _titles(body, procedure) == {"sop-130-welding-cell-restart"}
    assert [ln[:2] for ln in procedure.splitlines() if re.match(r"\d\.", ln)] == ["1.", "2.", "3.", "4.", "5."]
    assert body["outcome"] == "verified"
    assert_citations_point_at_their_quotes(plant, body)
    merge = next(s for s in body["trace"] if s["step"] == "MERGE")
    assert merge["sections"] == plan["specialists"] and merge["sources"] >= len(body["citations"])
    # The causal part was decomposed (FirstPrinciples): its reasoning comes back with the answer.
    assert body["reasoning"]["tool"] == "FirstPrinciples"
    trace = client.get(f"/v1/traces/{body['trace_id']}", headers=_h(plant)).json()["trace"]
    assert _plan(trace)["composition"] == "pipeline" and any(s["step"] == "MERGE" for s in trace)


FAN_OUT_Q = ("What is the defect rate of BR-220 after the corrective actions, and which hydraulic oil does the HP-400 "
             "press use?")


def test_independent_parts_fan_out_and_merge_with_renumbered_citations(client, plant):
    q = FAN_OUT_Q
    body = _ask(client, plant, q)
    plan = _plan(body)
    assert (plan["class"], plan["composition"]) == ("MULTI_PERSPECTIVE", "fan-out")
    assert plan["specialists"] == ["quality_inspector", "maintenance_advisor"] and plan["thinking_tool"] is None
    fan = next(s for s in body["trace"] if s["step"] == "FANOUT")
    assert fan["execution"].startswith("sequential")  # the extractive responder: no threads on 2 cores
    sections = _sections(body["answer"])
    assert list(sections) == ["Quality Inspector", "Maintenance Advisor"]
    assert "1.2 percent" in sections["Quality Inspector"]
    assert _titles(body, sections["Quality Inspector"]) == {"qr-2026-044-weld-porosity"}
    assert "HLP 46" in sections["Maintenance Advisor"]
    assert "mm-200-maintenance-manual" in _titles(body, sections["Maintenance Advisor"])
    merge = next(s for s in body["trace"] if s["step"] == "MERGE")
    # The second branch's local [1] is not the merged [1]: its markers were renumbered.
    assert merge["renumbered"]["maintenance_advisor"]["1"] != 1
    verify = [s for s in body["trace"] if s["step"] == "TDD.check"][-1]
    assert verify["passed"] and body["outcome"] == "verified" and body["reasoning"] is None
    assert_citations_point_at_their_quotes(plant, body)


def test_fan_out_branches_run_concurrently_when_each_can_have_its_own_session(plant):
    q = FAN_OUT_Q
    with tenant_session(plant.id) as s:
        sequential = run_agent(s, Caller("operator"), "u", q, [], tenant_id=plant.id)
    # A remote model would take this path; force it with the extractive responder to prove it equivalent.
    with tenant_session(plant.id) as s:
        concurrent = run_agent(s, Caller("operator"), "u", q, [], tenant_id=plant.id,
                               model=ScriptedModel(concurrent=True))
    assert next(st for st in concurrent.trace if st["step"] == "FANOUT")["execution"].startswith("concurrent")
    assert concurrent.text == sequential.text
    assert [c.chunk_id for c in concurrent.citations] == [c.chunk_id for c in sequential.citations]
    assert [st.get("specialist") for st in concurrent.trace if st["step"] == "THINK.retrieve"] == \
        [st.get("specialist") for st in sequential.trace if st["step"] == "THINK.retrieve"]


def test_decision_goes_to_a_council_with_a_reasoning_section(client, plant):
    q = "Should we replace the gas hose on robot W2 or only check the gas flow daily?"
    body = _ask(client, plant, q, user="dora")
    plan = _plan(body)
    assert (plan["class"], plan["composition"], plan["thinking_tool"]) == ("MULTI_PERSPECTIVE", "fan-out", "Council")
    assert len(plan["specialists"]) >= 2
    assert "Council synthesis" in body["answer"] and body["outcome"] == "verified"
    r = body["reasoning"]
    assert r["tool"] == "Council" and r["summary"]
    sources = [set(p["sources"]) for p in r["perspectives"] if p["sources"]]
    assert len(sources) >= 2 and sources[0] != sources[1]  # each perspective read its own kind of document
    assert r["common_ground"] and all(len(g["shared_by"]) >= 2 for g in r["common_ground"])
    assert_citations_point_at_their_quotes(plant, body)
    # Stored with the message: the conversation returns it.
    conv = client.get(f"/v1/conversations/{body['conversation_id']}", headers=_h(plant, user="dora")).json()
    assert conv["messages"][-1]["reasoning"] == r and conv["messages"][0]["reasoning"] is None


def test_why_question_gets_first_principles_hypotheses_backed_by_evidence(client, plant):
    body = _ask(client, plant, "Why did the defect rate of bracket BR-220 rise above the control limit?")
    plan = _plan(body)
    assert (plan["class"], plan["thinking_tool"]) == ("DEEP", "FirstPrinciples")
    r = body["reasoning"]
    assert r["tool"] == "FirstPrinciples" and len(r["hypotheses"]) == 6
    supported = {h["category"]: h for h in r["hypotheses"] if h["status"] == "supported"}
    assert "cracked gas hose" in supported["Machine"]["evidence"]
    assert {"no evidence in your documents", "supported"} <= {h["status"] for h in r["hypotheses"]}
    assert "Cause hypotheses backed by your documents" in body["answer"] and "cracked gas hose" in body["answer"]
    assert_citations_point_at_their_quotes(plant, body)


def test_quality_critical_questions_pass_the_gate_or_are_refused(client, plant):
    ok = _ask(client, plant, "Is it safe to reach into the die area of press P3 after lockout?")
    plan = _plan(ok)
    assert (plan["class"], plan["composition"], plan["thinking_tool"]) == ("QUALITY_CRITICAL", "gate", "RedTeam")
    assert ok["outcome"] == "verified" and "Quality gate: passed" in ok["answer"]
    assert {c["title"] for c in ok["citations"]} == {"sop-114-lockout-tagout"}
    assert "SB-300" in ok["answer"] and ok["reasoning"]["tool"] == "RedTeam"
    checks = [s for s in ok["trace"] if s["step"] == "TDD.check"]
    assert {c["criterion"] for c in checks[-1]["criteria"]} >= {
        "a controlling document is cited", "identifiers in the question confirmed by the cited sources",
        "no unresolved red-team finding"}
    assert_citations_point_at_their_quotes(plant, ok)

    no = _ask(client, plant, "Can we release lot 2026-125 of bracket BR-220?")
    assert no["outcome"] == "refused" and no["answer"].startswith("Quality gate: NOT PASSED")
    assert "2026-125" in no["answer"] and no["reasoning"]["tool"] == "RedTeam"
    failed = [c for c in [s for s in no["trace"] if s["step"] == "TDD.check"][-1]["criteria"] if not c["passed"]]
    assert [c["criterion"] for c in failed] == ["identifiers in the question confirmed by the cited sources"]
    assert "calculations" not in json.dumps(no["trace"])  # a lot number is not a subtraction


def _hit_index(plant, question: str, title: str) -> int:
    with tenant_session(plant.id) as s:
        dry = run_agent(s, Caller("operator"), "u", question, [])
    return next(i for i, h in enumerate(dry.prepared.hits, start=1) if h.title == title)


def test_red_team_removes_an_unsupported_assurance_then_the_gate_revises(plant):
    q = "Is it safe to reach into the die area of press P3 after lockout?"
    n = _hit_index(plant, q, "sop-114-lockout-tagout")
    draft = f"Yes, it is safe once the press has stopped. Block the ram with the safety block SB-300 [{n}]."
    with tenant_session(plant.id) as s:
        out = run_agent(s, Caller("operator"), "u", q, [], scripted=[draft])
    assert "it is safe once" not in out.text and "SB-300" in out.text and "Quality gate: passed" in out.text
    findings = out.reasoning["findings"]
    assert findings[0]["attack"] == "unsupported" and findings[0]["action"] == "removed"
    assert "assurance" in findings[0]["problem"] and "that no cited source makes" in findings[0]["problem"]
    # What survived no longer answered the question: one revision added cited evidence, then the gate passed.
    assert [c["passed"] for c in out.trace if c["step"] == "TDD.check"] == [False, True]
    assert out.outcome == "verified" and "sop-114-lockout-tagout" in {c.title for c in out.citations}
    assert all(c.title.startswith("sop-") for c in out.citations)


TDD_Q = "Which hydraulic oil does the HP-400 press use and how often are the ram guide bearings greased?"


def test_tdd_loop_revises_a_scripted_bad_draft(plant):
    n = _hit_index(plant, TDD_Q, "mm-200-maintenance-manual")
    bad = "The press uses HLP 46 hydraulic oil."
    good = f"Use only HLP 46 hydraulic oil [{n}]. The ram guide bearings are greased every 500 operating hours [{n}]."
    with tenant_session(plant.id) as s:
        out = run_agent(s, Caller("operator"), "u", TDD_Q, [], scripted=[bad, good, "never used"])
    assert _plan(out.trace)["composition"] == "tdd"
    checks = [st for st in out.trace if st["step"] == "TDD.check"]
    assert [c["passed"] for c in checks] == [False, True]
    first = {c["criterion"]: c for c in checks[0]["criteria"]}
    assert not first["every statement cited"]["passed"] and not first["answers every part"]["passed"]
    assert "how often are the ram guide bearings greased" in first["answers every part"]["detail"]
    revise = [st for st in out.trace if st["step"] == "TDD.revise"]
    assert len(revise) == 1 and "every statement cited" in revise[0]["because"]
    assert out.text == good and out.outcome == "verified" and len(out.calls) == 2
    assert {c.title for c in out.citations} == {"mm-200-maintenance-manual"}


def test_tdd_loop_stops_at_its_bound(plant):
    bad = ["HLP 46 is used.", "It is HLP 46.", "The oil is HLP 46 and the grease EP2.", "Oil HLP 46, grease EP2.",
           "never used"]
    with tenant_session(plant.id) as s:
        out = run_agent(s, Caller("operator"), "u", TDD_Q, [], scripted=bad)
    checks = [st for st in out.trace if st["step"] == "TDD.check"]
    assert len(checks) == composition.MAX_ROUNDS + 1 and not any(c["passed"] for c in checks)
    assert len([st for st in out.trace if st["step"] == "TDD.revise"]) == composition.MAX_ROUNDS
    assert len(out.calls) == composition.MAX_ROUNDS + 1  # draft + three revisions; the fifth reply is never asked for
    assert out.outcome == "downgraded" and "failed automatic verification" in out.text


def test_reasoning_is_in_the_sse_done_event_only_when_a_thinking_tool_ran(client, plant):
    def done(message):
        r = client.post("/v1/chat", json={"message": message}, headers={**_h(plant), "Accept": "text/event-stream"})
        assert r.status_code == 200
        events = [block for block in r.text.strip().split("\n\n") if block.startswith("event: done")]
        return json.loads(events[0].split("data: ", 1)[1])

    assert done("What does alarm A-117 mean?")["reasoning"] is None
    why = done("Why does the press stop with alarm A-117?")
    assert why["reasoning"]["tool"] == "FirstPrinciples"


def test_classifier_asks_a_configured_model_only_for_complex_questions_the_rules_left_simple():
    from agents.router import route

    long_q = ("Compare the lubrication intervals of the press with the consumable replacement intervals of the welding "
              "robot cell so that the maintenance planner can put all of them into one combined weekly plan")
    r = route(long_q, get_embedder())
    assert orchestrator.complexity(long_q) == "COMPLEX"
    rules = composition.classify(long_q, r, "COMPLEX", get_embedder())
    assert (rules.composition, rules.by) == ("direct", "rules")  # extractive default: never asks a model
    replies = ["MULTI_PERSPECTIVE"]
    by_model = composition.classify(long_q, r, "COMPLEX", get_embedder(), model=ScriptedModel(replies),
                                    name="openai/eap-light", allow_model=True)
    assert (by_model.klass, by_model.composition, by_model.by) == ("MULTI_PERSPECTIVE", "fan-out", "model")
    assert len(by_model.specialists) >= 2 and replies == []
    garbled = composition.classify(long_q, r, "COMPLEX", get_embedder(), model=ScriptedModel(["no idea"]),
                                   name="openai/eap-light", allow_model=True)
    assert garbled.composition == "direct"  # an unusable reply: the rules stand
    short = composition.classify("What does alarm A-117 mean?", route("What does alarm A-117 mean?", get_embedder()),
                                 "SIMPLE", get_embedder(), model=ScriptedModel(["QUALITY_CRITICAL"]),
                                 name="openai/eap-light", allow_model=True)
    assert short.composition == "direct"  # simple questions never cost a model call
