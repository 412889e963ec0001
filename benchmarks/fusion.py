"""How to fuse dense and lexical rankings, measured on real documents.

    python benchmarks/ingest.py            # leaves an indexed corpus; note its EAP_HOME
    python benchmarks/fusion.py --home /tmp/eap-bench-XXXX [--queries 300]

Queries are section headings sampled from the indexed corpus (the Python docs by default); the
relevant answer is the document the section belongs to (a known-item proxy, no hand labels). For
each query the real dense and BM25 candidate lists (50 each) are fused several ways; prints MRR@10
and recall@10 per method, so the fusion used in retrieval/search.py is a measured choice.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", required=True, help="EAP_HOME of an indexed corpus (e.g. from benchmarks/ingest.py)")
    ap.add_argument("--tenant", default="bench")
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    os.environ.update({"EAP_HOME": args.home, "EAP_LOG_JSON": "false", "HF_HUB_OFFLINE": "1"})
    from sqlalchemy import text

    from core.db.database import bootstrap, stop_embedded, tenant_session
    from core.embedding import get_embedder
    from identity.tenancy import get_tenant
    from retrieval.search import Caller, Filters, dense, lexical, rrf

    bootstrap()
    t = get_tenant(args.tenant)
    caller = Caller("admin", ())
    with tenant_session(t.id) as s:
        rows = s.execute(text("SELECT DISTINCT ON (document_id, section) document_id, section FROM chunks "
                              "WHERE section IS NOT NULL")).all()
        doc_of = dict(s.execute(text("SELECT id, document_id FROM chunks")).all())
    cands = [(d, sec.split(" > ")[-1]) for d, sec in rows if 3 <= len(sec.split(" > ")[-1].split()) <= 12]
    random.Random(5).shuffle(cands)
    cands = cands[: args.queries]
    emb = get_embedder()
    vecs = emb.embed([q for _, q in cands])
    methods: dict[str, list[tuple[float, float]]] = {}

    def score(name: str, ranked: list, target: str) -> None:
        docs = []
        for cid in ranked:
            d = doc_of[cid]
            if d not in docs:
                docs.append(d)
            if len(docs) == 10:
                break
        rr = next((1.0 / (i + 1) for i, d in enumerate(docs) if d == target), 0.0)
        methods.setdefault(name, []).append((rr, 1.0 if target in docs else 0.0))

    with tenant_session(t.id) as s:
        for (target, q), v in zip(cands, vecs, strict=True):
            d = dense(s, caller, v, 50, Filters())
            lx = lexical(s, caller, q, 50, Filters())
            score("dense only", [c for c, _ in d], target)
            score("BM25 only", [c for c, _ in lx], target)
            for k in (10, 30, 60, 100):
                f = rrf([d, lx], k=k)
                score(f"RRF k={k}", sorted(f, key=lambda c, f=f: -f[c]), target)
            dd, ll = dict(d), dict(lx)

            def norm(m: dict) -> dict:
                if not m:
                    return {}
                lo, hi = min(m.values()), max(m.values())
                return {c: (x - lo) / (hi - lo) if hi > lo else 1.0 for c, x in m.items()}

            nd, nl = norm(dd), norm(ll)
            for a in (0.3, 0.5, 0.7):
                comb = {c: a * nd.get(c, 0.0) + (1 - a) * nl.get(c, 0.0) for c in set(nd) | set(nl)}
                score(f"weighted dense={a}", sorted(comb, key=lambda c, comb=comb: -comb[c]), target)
    print(f"{len(cands)} known-item queries (section heading -> its document)")
    print(f"{'method':<22} {'MRR@10':>7} {'recall@10':>10}")
    for name, xs in methods.items():
        arr = np.asarray(xs)
        print(f"{name:<22} {arr[:, 0].mean():7.3f} {arr[:, 1].mean():10.3f}")
    stop_embedded()
    return 0


if __name__ == "__main__":
    sys.exit(main())
