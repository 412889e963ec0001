"""The TDD loop (draft → check → revise, at most MAX_ROUNDS revisions) and the quality gate's
release-or-refuse decision."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from agents import thinking
from agents.answer import Prepared
from agents.compose.classifier import Plan
from agents.compose.criteria import answered, criteria
from agents.compose.deps import Deps
from agents.compose.thinking_tools import call_model
from agents.trace import RedTeamStep, TDDCheck, TDDRevise, ms_since
from agents.verify import Verdict, verify
from core.enums import TIERS
from core.llm.extractive import NO_ANSWER

MAX_ROUNDS = 3  # TDD revisions after the first draft


def tdd_loop(plan: Plan, deps: Deps, text: str, merged: Prepared, tool_texts: list[str], tier_i: int,
         gate: bool) -> tuple[str, int, int, list[dict[str, Any]], thinking.Attack | None]:
    """Draft → check → revise, at most MAX_ROUNDS revisions; each check is a trace step."""
    revisions, results, attack = 0, [], None
    found: list[dict[str, Any]] = []
    titles = [h.title for h in merged.hits]
    for rnd in range(MAX_ROUNDS + 1):
        t = time.perf_counter()
        if gate:
            attack = thinking.red_team(text, [h.text for h in merged.hits], titles, tool_texts)
            deps.trace.append(RedTeamStep(ms=ms_since(t), round=rnd, findings=attack.findings,
                                          blocking=attack.blocking))
            text = attack.text  # may be empty: then nothing survived the attack and the checks fail
            found += [{**f, "round": rnd} for f in attack.findings]
            attack = dataclasses.replace(attack, findings=list(found))  # the reasoning shows every round's
        verdict = verify(text, merged, deps.caller, tool_texts)
        results = criteria(text, plan.subquestions, merged, verdict, strict=gate, question=deps.message, attack=attack,
                           embed=deps.embedder.embed)
        ok = all(r["passed"] for r in results)
        deps.trace.append(TDDCheck(ms=ms_since(t), round=rnd, passed=ok, criteria=results))
        if ok or rnd == MAX_ROUNDS:
            break
        new_tier = min(tier_i + 1, len(TIERS) - 1)
        new = _revise(deps, plan, text, merged, tool_texts, results, TIERS[new_tier])
        if new.strip() == text.strip():
            deps.trace.append(TDDRevise(ms=0.0, round=rnd + 1, note="no revision possible from these sources: stopped"))
            break
        text, tier_i, revisions = new, new_tier, revisions + 1
        deps.trace.append(TDDRevise(ms=ms_since(t), round=rnd + 1, tier=TIERS[tier_i],
                                    because=[r["criterion"] for r in results if not r["passed"]]))
    return text, tier_i, revisions, results, attack


def _revise(deps: Deps, plan: Plan, text: str, merged: Prepared, tool_texts: list[str], results: list[dict[str, Any]],
            tier: str) -> str:
    failed = [r for r in results if not r["passed"]]
    if deps.model.generative(deps.model_for(tier)):
        feedback = "\n".join(f"- {r['criterion']}: {r['detail']}" for r in failed)
        msgs = merged.messages + [{"role": "assistant", "content": text}, {"role": "user", "content": (
            f"Revise your answer to: {deps.message}\nThese checks failed:\n{feedback}\nAnswer every part, cite every "
            "statement with its source number, use only numbers that appear in the sources.")}]
        return call_model(deps, msgs, tier, "TDD revision")
    # Extractive revision: drop what fails, then answer each unanswered part on its own.
    n_src = len(merged.hits) + len(tool_texts)
    src = " ".join([h.text for h in merged.hits] + tool_texts)

    def keep(st: thinking.Statement) -> str | None:
        if not st.markers or any(not 1 <= n <= n_src for n in st.markers):
            return None
        if any(n not in src for n in thinking.NUMBER.findall(st.plain)):
            return None
        return st.text

    revised = thinking.rewrite(text, keep)
    sts = thinking.statements(revised)
    have = {st.plain for st in sts}
    added: list[str] = []
    for sq in plan.subquestions:
        if answered(sq, sts, deps.embedder.embed):
            continue
        msgs = merged.messages[:-1] + [{"role": "user", "content": sq}]
        reply = call_model(deps, msgs, tier, f"TDD revision: {sq[:60]}")
        for st in thinking.statements(reply):
            if st.markers and st.plain not in have:
                have.add(st.plain)
                added.append(f"- {st.text}")
    if added:
        revised = f"{revised}\n\nFurther from your documents:\n" + "\n".join(added[:4])
    if not thinking.statements(revised):
        return NO_ANSWER
    return revised


def gate_decision(text: str, failed: list[dict[str, Any]], verdict: Verdict) -> tuple[str, str | None, Verdict]:
    """Release with a passed-gate line, or refuse: a clear notice, the reasons, the evidence found."""
    if verdict.abstained:
        return text, None, verdict
    if not failed and verdict.ok:
        return (f"{text}\n\nQuality gate: passed (every statement cited from a controlling document, identifiers "
                "confirmed, red-team findings resolved)."), None, verdict
    reasons = "; ".join(f"{r['criterion']} — {r['detail']}" for r in failed) or "; ".join(verdict.problems)
    evidence = [st for st in thinking.statements(text) if st.markers]
    body = "\n".join(f"- {st.text}" for st in evidence[:4])
    refusal = ("Quality gate: NOT PASSED. This is a safety, compliance or release question and the answer could not "
               f"be confirmed from your documents ({reasons}). Do not act on it; the responsible person must decide.")
    if body:
        refusal += "\n\nEvidence found (for the responsible person to review):\n" + body
    return refusal, "refused", Verdict(verdict.ok, False, list(verdict.problems))
