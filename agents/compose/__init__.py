"""Auto-composition (11D1–2): after intent routing, a complexity classifier picks how the answer is
built, and this package runs it.

class               composition   what runs
SIMPLE              direct        one specialist: generate → VERIFY → escalate (today's path, untouched)
SIMPLE, multi-part  tdd           one specialist's draft, then the TDD loop
DEEP                pipeline      specialists in sequence, each retrieving and prompting with the findings of
                                  the one before (e.g. Quality Inspector → Maintenance Advisor → Procedure
                                  Expert); a "why" question adds FirstPrinciples
MULTI_PERSPECTIVE   fan-out       several specialists independently (a thread pool when the model is remote
                                  and each branch can have its own session), merged into one answer with a
                                  section per specialist; decisions add Council
QUALITY_CRITICAL    gate          RedTeam attacks the draft; it must pass stricter criteria or is refused

Every composed answer then goes through the TDD loop: check it against explicit criteria derived
from the question (every sub-question answered, every statement cited, citations valid, numbers in
the sources; for the gate also a controlling document cited, the question's identifiers found in
the sources, no unresolved safety finding), revise, at most MAX_ROUNDS times. Each check is a trace
step. Merged answers get one combined source list and renumbered [n] markers, so `citations_for`
maps every marker to the right chunk and VERIFY runs on the merged answer.

The classifier is rules + embeddings (the router's), deterministic; only when EAP_LLM_ROUTING is on
with a non-extractive model, and the rules found a complex question they could not place, a model

Modules: classifier (the class and the plan), patterns (direct/TDD/gate, pipeline, fan-out), merge
(one source list, renumbered markers, one answer), thinking_tools (Council, FirstPrinciples, model
calls), criteria and tdd (the TDD loop and the gate's decision), deps (the typed seams and results).
"""

from agents.compose.classifier import CRITICAL, DEEP, MULTI, SIMPLE, Plan, classify, identifiers, subquestions
from agents.compose.criteria import criteria
from agents.compose.deps import Branch, Composed, Deps, Draft, DraftFn, SkillFn
from agents.compose.merge import merge
from agents.compose.patterns import execute
from agents.compose.tdd import MAX_ROUNDS

__all__ = ["CRITICAL", "DEEP", "MAX_ROUNDS", "MULTI", "SIMPLE", "Branch", "Composed", "Deps", "Draft", "DraftFn",
           "Plan", "SkillFn", "classify", "criteria", "execute", "identifiers", "merge", "subquestions"]
