"""Detector quality on data nobody tuned the thresholds on by looking at single cases: a public technical
corpus that holds no personal data of interest (220 pages of the Python 3.11 documentation, Debian's
python3.11-doc, text extracted by our parser) must stay Class I, and a synthetic personal-data set generated
with Faker must still be caught. benchmarks/detectors.py prints the same figures."""

from pathlib import Path

from evals.detectors import corpus_pages, precision, recall, synthetic_pii

CORPUS = Path(__file__).parent.parent / "data" / "corpora" / "python-docs-3.11.jsonl.gz"


def test_public_technical_corpus_is_not_raised():
    report = precision(corpus_pages(CORPUS))
    assert report.pages == 220 and report.words > 400_000
    assert report.raised_rate <= 0.01, report.raised
    assert report.findings_per_1000_words <= 0.2, report.findings


def test_synthetic_personal_data_is_still_caught():
    per_kind = recall(synthetic_pii(seed=11, per_kind=40))
    assert set(per_kind) == {"PERSON", "EMAIL", "PHONE", "IBAN", "CARD", "IP_ADDRESS", "NATIONAL_ID"}
    for kind, r in per_kind.items():
        assert r["recall"] >= 0.95, (kind, r)


def test_documentation_addresses_are_not_personal_data_but_real_ones_are():
    from compliance.pii import find_pii

    doc = ("Bind to 127.0.0.1 or 0.0.0.0, route 192.168.10.0/24 via 10.0.0.1, see 203.0.113.7 and "
           "198.51.100.20; mail admin@example.com or ops@plant.example. Section 4.8.1.2. Virtual environments.")
    assert find_pii(doc) == []
    real = "Login from client IP 81.2.69.142 by jana.novak@acme-steel.cz."
    assert sorted(f.type for f in find_pii(real)) == ["EMAIL", "IP_ADDRESS"]
