"""The live-stream relay of the chat use case (agents/chat.py Relay): what a client sees of model drafts under
each live policy, and that delta/retract/replace always bring it to exactly the final answer."""

from __future__ import annotations

import pytest

from agents.chat import HOLD, SENTENCES, TOKENS, Relay


def _drain(relay: Relay) -> list[tuple[str, object]]:
    out = []
    while not relay.events.empty():
        out.append(relay.events.get_nowait())
    return out


def _view(events) -> str:
    shown = ""
    for kind, data in events:
        if kind == "delta":
            shown += data
        elif kind == "retract":
            shown = ""
        elif kind == "replace":
            shown = data["text"]
    return shown


def _draft(relay: Relay, model: str, text: str) -> None:
    relay.begin(model)
    for piece in [text[i:i + 3] for i in range(0, len(text), 3)]:
        relay.delta(piece)


@pytest.mark.parametrize("policy", [TOKENS, SENTENCES, HOLD])
def test_escalation_and_notice_end_with_the_final_answer(policy):
    relay = Relay(policy)
    _draft(relay, "light", "Change the oil every 500 hours [1]. Check it daily. ")
    _draft(relay, "standard", "Change the oil every 4000 hours [1].")
    final = "Change the oil every 4000 hours [1].\n\nNotice: this answer failed automatic verification."
    relay.finish(final, "downgraded")
    events = _drain(relay)
    assert _view(events) == final
    kinds = [k for k, _ in events]
    if policy == HOLD:  # nothing before the final answer: nothing to take back
        assert "500" not in "".join(d for k, d in events if k == "delta") and "retract" not in kinds
    else:
        assert kinds.index("retract") > 0 and "500" in "".join(  # the rejected draft was shown, then taken back
            d for k, d in events[:kinds.index("retract")] if k == "delta")


def test_tokens_are_relayed_as_they_come_and_a_different_final_answer_replaces_them():
    relay = Relay(TOKENS)
    _draft(relay, "light", "The press uses HLP 46 [1].")
    assert [k for k, _ in _drain(relay)] == ["delta"] * 9
    relay.finish("Redacted answer.", "verified")
    assert _drain(relay) == [("replace", {"text": "Redacted answer.", "outcome": "verified",
                                          "reason": "the verified answer differs from the streamed draft"})]


def test_sentences_policy_withholds_a_sentence_with_an_export_control_term_and_the_rest_of_the_draft():
    relay = Relay(SENTENCES)
    _draft(relay, "light", "The valve is rated 40 bar [1]. Its ECCN 2B999 is dual-use. It weighs 3 kg [2]. ")
    shown = "".join(d for k, d in _drain(relay) if k == "delta")
    assert shown == "The valve is rated 40 bar [1]. "  # whole sentences only, nothing after the term
    final = "The valve is rated 40 bar [1].\n\nNotice: export-controlled statements were removed."
    relay.finish(final, "verified")
    assert _view([("delta", shown), *_drain(relay)]) == final
