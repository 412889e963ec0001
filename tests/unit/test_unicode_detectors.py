"""Issue 12 #8: full-width, look-alike and invisible characters must not get text past the detectors
(classification markers, export control, PII) — and replacing PII must keep the rest of the text as
the document wrote it."""

from __future__ import annotations

import pytest

from agents import thinking
from compliance.classification import classify
from compliance.normalise import fold, normalise
from compliance.pii import contains_pii, find_pii, sanitise

FW_ITAR = "\uff29\uff34\uff21\uff32"  # ＩＴＡＲ
CYRILLIC_ITAR = "\u0406\u0422\u0410R"  # І Т А (Cyrillic) + Latin R
FW_EMAIL = "ｊａｎａ．ｎｏｖａｋ＠ａｃｍｅ．ｃｚ"
FW_PHONE = "＋４２０ ６０１ １２３ ４５６"


@pytest.mark.parametrize("term", [FW_ITAR, CYRILLIC_ITAR, "IT\u200bAR", "I\u00adTAR", "\u2160TAR",
                                  "\U0001d408\U0001d413\U0001d400\U0001d411", "ｄｕａｌ－ｕｓｅ"])
def test_export_control_terms_are_found_whatever_their_glyphs(term):
    d = classify(f"Servo drive datasheet. This assembly is {term} controlled.", 1)
    assert d.final == 4, term
    ev = next(r for r in d.reasons if r["detector"] == "export_control")
    assert ev["evidence"] in f"This assembly is {term} controlled."  # the document's own characters


def test_full_width_classification_marker_raises_the_class():
    d = classify("Ｃｌａｓｓｉｆｉｃａｔｉｏｎ： ＩＩＩ\nAnneal at 540 C.", 1)
    assert d.final == 3 and d.reasons[1]["detector"] == "marker"


def test_normalise_folds_and_maps_spans_back():
    text = f"Mail {FW_EMAIL} now"
    n = normalise(text)
    assert n.text == "Mail jana.novak@acme.cz now"
    start = n.text.index("jana")
    assert n.original_text(start, start + len("jana.novak@acme.cz")) == FW_EMAIL
    assert fold("ab\u200bc \u0661\u0662") == "abc 12"  # zero-width removed, Arabic-Indic digits → ASCII
    ascii_text = "Change HLP 46 every 4000 h."
    assert normalise(ascii_text).text == ascii_text and normalise(ascii_text).starts is None


def test_full_width_email_and_phone_are_replaced_in_the_original_text():
    text = f"Résumé: contact {FW_EMAIL}, phone {FW_PHONE}. Anneal at 540 °C."
    assert contains_pii(text)
    assert {f.type for f in find_pii(text)} == {"EMAIL", "PHONE"}
    out = sanitise(text)
    # Only the PII changes; the rest keeps the document's own characters (accents, °).
    assert out.text == "Résumé: contact [EMAIL], phone [PHONE]. Anneal at 540 °C."
    assert out.counts == {"EMAIL": 1, "PHONE": 1}
    assert not contains_pii(out.text)


def test_zero_width_split_email_and_look_alike_at():
    assert sanitise("write to jo\u200bhn@acme\u200d-steel.cz today").text == "write to [EMAIL] today"
    assert sanitise("write to john\ufe6bacme-steel.cz today").text == "write to [EMAIL] today"  # small ﹫


def test_ascii_behaviour_unchanged():
    text = "Contact: jana.novak@acme.cz or +420 601 123 456; part 12-345-678."
    assert sanitise(text).text == "Contact: [EMAIL] or [PHONE]; part 12-345-678."
    assert classify("Use HLP 46 hydraulic oil.", 2).final == 2


def test_red_team_removes_a_full_width_export_controlled_statement():
    sources = [f"The additive pack is {FW_ITAR} export-controlled.", "Grease the bearings every 500 hours."]
    draft = f"- The additive pack is {FW_ITAR} controlled. [1]\n- Grease the bearings every 500 hours. [2]"
    attack = thinking.red_team(draft, sources, ["Datasheet", "MM-200 manual"], [])
    assert FW_ITAR not in attack.text and "500 hours" in attack.text
    assert any(f["problem"] == "export-controlled term" for f in attack.findings)
