import pytest

from compliance.access import can_read
from compliance.classification import classify, parse_class
from compliance.pii import contains_pii, sanitise


@pytest.mark.parametrize(
    "text,kind",
    [
        ("mail me at jana.novak@acme-steel.cz today", "EMAIL"),
        ("call +420 601 123 456 after the shift", "PHONE"),
        ("Tel: 0171 234 5678", "PHONE"),
        ("IBAN DE89 3704 0044 0532 0130 00", "IBAN"),
        ("card 4111 1111 1111 1111", "CARD"),
        ("SSN 123-45-6789", "NATIONAL_ID"),
        ("rodne cislo 736028/5163", "NATIONAL_ID"),
        ("Inspected by Mr. Karel Dvorak", "PERSON"),
        ("Approved by: Jana Novakova", "PERSON"),
    ],
)
def test_pii_is_replaced_by_typed_placeholder(text, kind):
    out = sanitise(text)
    assert out.counts[kind] == 1, (out.text, out.counts)
    assert f"[{kind}]" in out.text
    assert not contains_pii(out.text)


@pytest.mark.parametrize(
    "text",
    [
        "Torque 45 Nm, part 3200-445-12, lot 2026-118, date 2024-03-12.",
        "Document owner: Maintenance Engineering.",
        "Pressure below 2 bar; 210 bar nominal; 1000 V CAT III tester.",
        "IBAN DE00 1234 5678 9012 3456 78",  # fails mod-97
        "card 1234 5678 9012 3456",  # fails Luhn
    ],
)
def test_manufacturing_numbers_are_not_pii(text):
    assert sanitise(text).text == text


def test_classification_raises_never_lowers():
    assert classify("RESTRICTED\nPump design", 1).final == 4
    assert classify("Item classified ECCN 2B001 under EAR", 2).final == 4
    assert classify("Plain SOP about gloves. CRITICAL: wear gloves.", 2).final == 2
    low = classify("Classification: Class I\nhello", 3)
    assert low.final == 3 and low.declared == 3
    many = " ".join(f"user{i}@acme.com" for i in range(10))
    assert classify(many, 2).final == 3


def test_parse_class():
    assert [parse_class(v) for v in ("I", "ii", "Class III", "4", None, "")] == [1, 2, 3, 4, 2, 2]
    with pytest.raises(ValueError):
        parse_class("V")


def test_access_rule():
    assert can_read("viewer", [], 2, [])
    assert not can_read("viewer", ["qa"], 3, ["qa"])  # above the viewer ceiling
    assert can_read("operator", ["qa"], 3, ["qa"])
    assert not can_read("operator", ["maint"], 3, ["qa"])  # not need-to-know
    assert not can_read("admin", ["qa"], 4, ["qa"], "pending")
    assert can_read("admin", ["qa"], 4, ["qa"], "approved")
