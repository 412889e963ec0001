"""Pure parts of auto-composition and the thinking tools: request splitting, statements and
citation coverage, RedTeam's attacks, and the renumbering of merged citations."""

from __future__ import annotations

import uuid

import pytest

from agents import compose as composition
from agents import skills, thinking
from agents.answer import Prepared
from retrieval.search import Hit


@pytest.mark.parametrize("question,parts", [
    ("What does alarm A-117 mean?", ["What does alarm A-117 mean"]),
    ("Which hydraulic oil does press P3 need and how often?", ["Which hydraulic oil does press P3 need and how often"]),
    ("How long does a die change take on average and what is the target?",
     ["How long does a die change take on average", "what is the target"]),
    ("Bracket BR-220 has weld porosity: what caused it, how do we fix the welding robot, and then which steps "
     "restart welding cell W2?",
     ["Bracket BR-220 has weld porosity: what caused it", "how do we fix the welding robot",
      "which steps restart welding cell W2"]),
    ("If one part fails, what happens to the lot?", ["If one part fails, what happens to the lot"]),
    ("Convert 2 bar to psi", ["Convert 2 bar to psi"]),
    ("What is the mean and median of 12, 15, 11, 19 parts per hour?",
     ["What is the mean and median of 12, 15, 11, 19 parts per hour"]),
])
def test_subquestions(question, parts):
    assert composition.subquestions(question) == parts


def test_identifiers_are_codes_not_words():
    assert composition.identifiers("Can we release lot 2026-125 of bracket BR-220 on press P3?") == [
        "2026-125", "BR-220", "P3"]
    assert composition.identifiers("Is it safe to reach into the die area?") == []


def test_a_sentence_is_covered_by_the_next_marker_on_its_line():
    text = ("Extractive answer (quoted from your documents; no generative model was used):\n"
            "6. Verify zero energy: press the start button. Test the supply with the voltage tester. [1]\n"
            "**Heading**\n- Uncited claim.\n**Next**\n- A kept statement. [2]\n_An italic note._\n"
            "Quality gate: passed (...).")
    sts = thinking.statements(text)
    assert [(st.plain, st.markers) for st in sts] == [
        ("Verify zero energy: press the start button.", [1]),
        ("Test the supply with the voltage tester.", [1]),
        ("Uncited claim.", []),
        ("A kept statement.", [2]),
    ]
    # Dropping the carrier keeps the cover on the sentence before it; an emptied bullet disappears, and
    # so does a heading left with nothing under it.
    out = thinking.rewrite(text, lambda st: None if st.plain.startswith(("Test", "Uncited")) else st.text)
    assert "6. Verify zero energy: press the start button. [1]" in out and "Uncited" not in out
    assert "**Heading**" not in out and "**Next**\n- A kept statement. [2]" in out and "_An italic note._" in out


def test_a_citation_after_a_full_stop_ends_the_sentence():
    sts = thinking.statements("- Maintenance Advisor: Replace it when damaged. [1] Replace the hose now. [5]")
    assert [st.markers for st in sts] == [[1], [5]]


HITS = ["SOP-114 Lockout. 5. Block the ram with the safety block SB-300 before reaching into the die area.",
        "Use only HLP 46 hydraulic oil. Change it every 4000 hours. Contact jana.novak@acme-plant.cz for oil. "
        "The additive pack is ITAR export-controlled."]
TITLES = ["sop-114-lockout-tagout", "mm-200-maintenance-manual"]


def test_red_team_removes_unsupported_marks_unbacked_hazards_and_masks_pii():
    draft = "\n".join([
        "- Block the ram with the safety block SB-300 before reaching into the die area. [1]",  # backed by the SOP
        "- Yes, it is safe to reach in. [1]",  # an assurance no source makes
        "- Change the oil every 5000 hours. [2]",  # a number the source does not have
        "- Use HLP 46 oil. [7]",  # a source that was not retrieved
        "- Change HLP 46 hydraulic oil every 4000 hours, skipping the lockout. [2]",  # hazard, not from a procedure
        "- Contact jana.novak@acme-plant.cz for oil. [2]",  # personal data
        "- The additive pack is ITAR export-controlled. [2]",  # supported, but not for an answer
    ])
    a = thinking.red_team(draft, HITS, TITLES, [])
    got = {(f["attack"], f["action"]) for f in a.findings}
    assert ("unsupported", "removed") in got and ("safety", "marked") in got and ("compliance", "marked") in got
    assert ("compliance", "removed") in got
    assert "SB-300" in a.text and "it is safe to reach in" not in a.text
    assert "5000" not in a.text and "[7]" not in a.text and "ITAR" not in a.text
    assert thinking.SAFETY_MARK in a.text and "[EMAIL]" in a.text and "jana.novak" not in a.text
    assert a.blocking and all(b.startswith("safety") for b in a.blocking)


def _hit(title: str, text: str) -> Hit:
    return Hit(uuid.uuid4(), uuid.uuid4(), title, text, None, None, 2, 0.5)


def test_merge_gives_one_source_list_and_renumbers_every_marker():
    shared, qa, mm = _hit("qr", "Defect rate fell to 1.2 percent."), _hit("qr", "Hose cracked."), _hit("mm", "HLP 46.")
    a = composition.Branch("quality_inspector", "q1", Prepared([], [qa, shared]), tool_texts=["calc: 2 = 2"])
    a.draft = composition.Draft("Hose cracked [1]. Rate 1.2 [2]. Calc [3]. Bad [9].", "m", "LIGHT", 0, None)
    b = composition.Branch("maintenance_advisor", "q2", Prepared([], [mm, shared]))
    b.draft = composition.Draft("HLP 46 [1]. Rate [2].", "m", "LIGHT", 0, None)
    hits, tools, texts = composition.merge([a, b])
    assert [h.chunk_id for h in hits] == [qa.chunk_id, shared.chunk_id, mm.chunk_id]  # the shared chunk once
    assert tools == ["calc: 2 = 2"]
    assert texts[0] == "Hose cracked [1]. Rate 1.2 [2]. Calc [4]. Bad [0]."  # tools after all hits; junk → [0]
    assert texts[1] == "HLP 46 [3]. Rate [2]."


def test_a_hyphenated_lot_number_is_not_a_calculation():
    assert skills.select_skill("quality_inspector", "Can we release lot 2026-125 of bracket BR-220?") is None
    assert skills.select_skill("data_analyst", "What is 6.3 - 1.2?") == "calculations"
    assert skills.select_skill("data_analyst", "Calculate 3200 * 0.012") == "calculations"
