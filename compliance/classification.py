"""Data classification (Class I–IV): the declared class, checked by detectors.

Detectors may raise the class, never lower it; every decision keeps its reasons so a steward
(and an auditor) can see why a document ended up where it did. They read the text as
`compliance.normalise` folds it (full-width `ＩＴＡＲ`, Cyrillic look-alikes and zero-width characters
cannot hide a marker); the evidence quoted in a reason is the original text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from compliance.export_control import EXPORT_CONTROL
from compliance.normalise import normalise
from compliance.pii import find_pii

CLASS_NAMES = {1: "I", 2: "II", 3: "III", 4: "IV"}
CLASS_LABELS = {1: "General", 2: "Confidential", 3: "Critical", 4: "Restricted"}
_BY_NAME = {"I": 1, "II": 2, "III": 3, "IV": 4, "1": 1, "2": 2, "3": 3, "4": 4}
DEFAULT_CLASS = 2
# PII findings per 1,000 words above which a document is treated as personal data (Class III).
PII_DENSITY_CLASS_III = 5.0
# …and at least this many findings: one contact address in a short SOP is not a personal-data record.
PII_MIN_FINDINGS_CLASS_III = 3
APPROVAL_REQUIRED_FROM = 3


def parse_class(value: str | int | None) -> int:
    """'I'..'IV' or 1..4 (case-insensitive, optional 'Class ' prefix) → 1..4; ValueError otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_CLASS
    s = str(value).strip().upper().removeprefix("CLASS").strip()
    if s not in _BY_NAME:
        raise ValueError(f"unknown classification {value!r}: use I, II, III or IV")
    return _BY_NAME[s]


# Markers count where documents put them: a header/footer line of their own, or an explicit
# "Classification: …" label. Words like CRITICAL inside a safety warning are not markers.
_LABEL = r"(?:classification|classified|security\s+class|data\s+class|label)\s*[:=-]\s*"
_MARKERS: list[tuple[int, re.Pattern[str], str]] = [
    (4, re.compile(rf"(?im)(?:^\s*(?:STRICTLY\s+CONFIDENTIAL|RESTRICTED|TOP\s+SECRET)\s*$|{_LABEL}"
                   rf"(?:class\s+)?(?:IV|restricted|strictly\s+confidential)\b)"), "restricted marker"),
    (3, re.compile(rf"(?im)(?:^\s*(?:NEED[\s-]TO[\s-]KNOW|TRADE\s+SECRET)\s*$|{_LABEL}"
                   rf"(?:class\s+)?(?:III|critical)\b)"), "critical marker"),
    (2, re.compile(rf"(?im)(?:^\s*(?:CONFIDENTIAL|INTERNAL\s+USE\s+ONLY)\s*$|{_LABEL}"
                   rf"(?:class\s+)?(?:II|confidential|internal)\b)"), "confidential marker"),
]
# Export-control vocabulary (EU dual-use, US EAR/ITAR; one copy, in compliance/export_control.py): a hit makes
# the document Restricted.
_EXPORT_CONTROL = EXPORT_CONTROL


@dataclass
class ClassificationDecision:
    declared: int
    final: int
    reasons: list[dict[str, Any]] = field(default_factory=list)

    @property
    def raised(self) -> bool:
        return self.final > self.declared

    @property
    def requires_approval(self) -> bool:
        return self.final >= APPROVAL_REQUIRED_FROM


def classify(text: str, declared: int) -> ClassificationDecision:
    reasons: list[dict[str, Any]] = [{"detector": "declared", "class": CLASS_NAMES[declared]}]
    final = declared
    norm = normalise(text)
    head = norm.text[:20000]
    for cls, pattern, label in _MARKERS:
        m = pattern.search(head)
        if m:
            reasons.append({"detector": "marker", "class": CLASS_NAMES[cls],
                            "evidence": norm.original_text(m.start(), m.end()), "label": label})
            final = max(final, cls)
            break
    m = _EXPORT_CONTROL.search(norm.text)
    if m:
        reasons.append({"detector": "export_control", "class": "IV",
                        "evidence": norm.original_text(m.start(), m.end())})
        final = max(final, 4)
    words = max(1, len(norm.text.split()))
    pii = find_pii(text)
    density = len(pii) * 1000.0 / words
    if pii:
        kinds = sorted({f.type for f in pii})
        reasons.append({"detector": "pii_density", "findings": len(pii), "per_1000_words": round(density, 2),
                        "types": kinds})
        if density >= PII_DENSITY_CLASS_III and len(pii) >= PII_MIN_FINDINGS_CLASS_III:
            reasons[-1]["class"] = "III"
            final = max(final, 3)
    return ClassificationDecision(declared=declared, final=final, reasons=reasons)
