"""Measured precision and recall of the PII and classification detectors.

Precision: on a public technical corpus that is not personal data (pages of the Python documentation as
Debian's python3.11-doc ships them, text extracted by our own parser; tests/data/corpora), how many pages
the classifier raises above Class I and how many PII findings it makes per 1,000 words. Recall: on a
synthetic set of personal data generated with Faker (names with labels, e-mail addresses, international
phone numbers, IBANs, card numbers, public IP addresses, national ids), in sentences of the kind a
quality report or a maintenance log holds, how many values each detector catches.

Used by benchmarks/detectors.py (prints both) and tests/unit/test_detector_quality.py (thresholds).
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compliance.classification import classify
from compliance.pii import find_pii


def corpus_pages(path: Path) -> list[tuple[str, str]]:
    """(page, text) pairs of a JSON-lines corpus (gzip), as tests/data/corpora holds them."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [(row["page"], row["text"]) for row in map(json.loads, fh)]


@dataclass
class PrecisionReport:
    pages: int
    words: int
    raised: list[tuple[str, int]] = field(default_factory=list)  # (page, class) raised above Class I
    findings: Counter[str] = field(default_factory=Counter)

    @property
    def raised_rate(self) -> float:
        return len(self.raised) / self.pages if self.pages else 0.0

    @property
    def findings_per_1000_words(self) -> float:
        return sum(self.findings.values()) * 1000.0 / self.words if self.words else 0.0


def precision(pages: list[tuple[str, str]]) -> PrecisionReport:
    report = PrecisionReport(pages=len(pages), words=sum(len(t.split()) for _p, t in pages))
    for page, text in pages:
        report.findings.update(f.type for f in find_pii(text))
        decision = classify(text, 1)
        if decision.final > 1:
            report.raised.append((page, decision.final))
    return report


@dataclass
class Sample:
    kind: str
    text: str
    value: str


def synthetic_pii(seed: int = 7, per_kind: int = 40) -> list[Sample]:
    """Sentences with one personal value each, generated with Faker (a dev dependency) from a fixed seed."""
    from faker import Faker

    fake = Faker(["en_GB", "de_DE", "cs_CZ", "en_US"])
    fake.seed_instance(seed)
    rnd = random.Random(seed)  # noqa: S311 - a reproducible synthetic test set, not a secret
    labels = ["Inspector", "Operator", "Approved by", "Reported by", "Technician", "Checked by", "Contact"]
    out: list[Sample] = []
    for _ in range(per_kind):
        name = f"{fake.first_name()} {fake.last_name()}"
        out.append(Sample("PERSON", f"{rnd.choice(labels)}: {name}. Torque checked on press 4.", name))
        email = fake.free_email() if rnd.random() < 0.5 else f"{fake.user_name()}@{fake.domain_name()}"
        out.append(Sample("EMAIL", f"Send the 8D report to {email} before the end of the shift.", email))
        phone = f"+{rnd.choice(['420', '49', '44', '1'])} {rnd.randint(200, 999)} {rnd.randint(100, 999)} " \
                f"{rnd.randint(100, 999)}"
        out.append(Sample("PHONE", f"On-call maintenance: {phone} (night shift).", phone))
        iban = fake.iban()
        out.append(Sample("IBAN", f"Refund the supplier to IBAN {iban} within 30 days.", iban))
        card = fake.credit_card_number(card_type=rnd.choice(["visa16", "mastercard", "amex"]))
        out.append(Sample("CARD", f"Paid the spare parts with card {card} on the plant account.", card))
        ip = fake.ipv4_public()
        out.append(Sample("IP_ADDRESS", f"Login from client IP {ip} was blocked after three failures.", ip))
        ssn = fake.unique.ssn() if fake.locales[0] == "en_US" else Faker("en_US").ssn()
        out.append(Sample("NATIONAL_ID", f"Employee SSN {ssn} on file with HR.", ssn))
    return out


def recall(samples: list[Sample]) -> dict[str, dict[str, Any]]:
    """Per kind: how many values a finding of that kind covers."""
    per: dict[str, Counter[str]] = {}
    missed: dict[str, list[str]] = {}
    for s in samples:
        c = per.setdefault(s.kind, Counter())
        c["total"] += 1
        start = s.text.index(s.value)
        end = start + len(s.value)
        if any(f.type == s.kind and f.start <= start + 1 and f.end >= end - 1 for f in find_pii(s.text)):
            c["caught"] += 1
        else:
            missed.setdefault(s.kind, []).append(s.value)
    return {k: {"caught": c["caught"], "total": c["total"], "recall": c["caught"] / c["total"],
                "missed": missed.get(k, [])[:5]} for k, c in sorted(per.items())}
