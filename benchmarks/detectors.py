"""Detector precision and recall, measured in one run (see evals/detectors.py).

    .venv/bin/python benchmarks/detectors.py [--corpus tests/data/corpora/python-docs-3.11.jsonl.gz]

Precision on a public technical corpus (pages raised above Class I, PII findings per 1,000 words, by kind)
and recall per kind on a synthetic personal-data set generated with Faker. Names are found only with a label
("Inspector: …") or an honorific, by design: a bare capitalised pair is as often a product or a place.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from evals.detectors import corpus_pages, precision, recall, synthetic_pii

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=ROOT / "tests/data/corpora/python-docs-3.11.jsonl.gz")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    t0 = time.perf_counter()
    p = precision(corpus_pages(args.corpus))
    t1 = time.perf_counter()
    print(f"precision corpus: {args.corpus.name}: {p.pages} pages, {p.words} words ({t1 - t0:.1f} s)")
    print(f"  raised above Class I: {len(p.raised)} pages ({p.raised_rate:.2%}) {p.raised[:5]}")
    print(f"  PII findings: {sum(p.findings.values())} ({p.findings_per_1000_words:.3f} per 1,000 words) "
          f"{dict(p.findings)}")
    r = recall(synthetic_pii(seed=args.seed))
    print(f"recall on a synthetic personal-data set (Faker, seed {args.seed}):")
    for kind, v in r.items():
        print(f"  {kind:12s} {v['caught']:3d}/{v['total']:3d}  {v['recall']:.1%}  missed: {v['missed']}")


if __name__ == "__main__":
    main()
