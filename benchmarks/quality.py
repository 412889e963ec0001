"""Golden-set retrieval scores per retrieval method, so every retrieval change is judged by numbers.

    python benchmarks/quality.py [--k 6]

Indexes the sample documents into a fresh embedded database and scores the golden dataset
(evals/golden/manufacturing.json, questions with expected source documents) with recall@k, MRR
and nDCG of the expected documents for:

- dense only (HNSW cosine), BM25 only (exact BM25 over the postings), hybrid (RRF of both, as served);
- hybrid + feedback boosts: simulated users rate answers to the *first half* of the questions
  (thumbs up when the cited document is an expected one, down otherwise); the boosts asset's
  formula turns that into a boost set, and the *second half* is scored with and without it (a
  held-out split: the boosts never see the questions they are judged on), and the promotion gate's
  verdict on that boost set (the full golden evaluation, active vs candidate).
Prints one table; ratios are within this run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _doc_ranking(chunk_ids: Iterable[uuid.UUID], doc_title: dict) -> list[str]:
    out: list[str] = []
    for cid in chunk_ids:
        t = doc_title[cid]
        if t not in out:
            out.append(t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=6)
    args = ap.parse_args()
    os.environ.update({"EAP_HOME": tempfile.mkdtemp(prefix="eap-quality-"), "EAP_LOG_JSON": "false",
                       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1"})
    from sqlalchemy import text

    from benchmarks.common import ingest_in_process
    from core.db.database import bootstrap, stop_embedded, tenant_session
    from core.embedding import get_embedder
    from core.models import Conversation, Feedback, Message
    from evals import evaluation, feedback
    from evals.evaluation import load_golden, retrieval_scores
    from identity.tenancy import create_tenant
    from retrieval import builds, versions
    from retrieval.search import Caller, Filters, dense, lexical, rrf, search

    bootstrap()
    tenant, _ = create_tenant("quality-bench")
    ingest_in_process(tenant.id, sorted((ROOT / "samples").glob("*.*")), ROOT)
    golden = [q for q in load_golden()["questions"] if q["expected_sources"]]
    caller = Caller("admin", ())
    k = args.k
    vecs = get_embedder().embed([q["question"] for q in golden])
    import random

    order = list(range(len(golden)))
    random.Random(7).shuffle(order)  # both halves cover every specialist and document
    half = len(golden) // 2
    train, held_out = [golden[i] for i in order[:half]], [golden[i] for i in order[half:]]

    with tenant_session(tenant.id) as s:
        doc_title = dict(s.execute(text("SELECT c.id, d.title FROM chunks c JOIN documents d "
                                        "ON d.id = c.document_id")).all())

    def run(name: str, questions: list[dict], ranker: Callable[[Session, dict], list]) -> dict:
        rows = []
        with tenant_session(tenant.id) as s:
            for q in questions:
                ranked = _doc_ranking(ranker(s, q), doc_title)
                rows.append(retrieval_scores(ranked, set(q["expected_sources"]), k))
        return {"method": name, "n": len(rows), "recall": sum(r[0] for r in rows) / len(rows),
                "mrr": sum(r[1] for r in rows) / len(rows), "ndcg": sum(r[2] for r in rows) / len(rows)}

    vec_of = {q["id"]: v for q, v in zip(golden, vecs, strict=True)}
    dense_r = lambda s, q: [c for c, _ in dense(s, caller, vec_of[q["id"]], 50, Filters())]  # noqa: E731
    bm25_r = lambda s, q: [c for c, _ in lexical(s, caller, q["question"], 50, Filters())]  # noqa: E731

    def hybrid_r(s: Session, q: dict) -> list:
        fused = rrf([dense(s, caller, vec_of[q["id"]], 50, Filters()), lexical(s, caller, q["question"], 50,
                                                                               Filters())])
        return sorted(fused, key=lambda c: (-fused[c], str(c)))

    served_r = lambda s, q: [h.chunk_id for h in search(s, caller, q["question"], k=20).hits]  # noqa: E731
    results = [run(n, golden, r) for n, r in (("dense only", dense_r), ("BM25 only", bm25_r),
                                               ("hybrid (RRF)", hybrid_r), ("hybrid as served", served_r))]

    # Feedback on the first half: the top answer source rated up if expected, down otherwise.
    before = run("held-out: hybrid as served", held_out, served_r)
    with tenant_session(tenant.id) as s:
        votes = []
        for q in train:
            # One rating per answer (it cites the top two sources), as a user gives it: up when the
            # answer's main source is a right document; split over the cited chunks by score.
            hits = search(s, caller, q["question"], k=2).hits
            votes.append((q, hits, doc_title[hits[0].chunk_id] in q["expected_sources"]))
    with tenant_session(tenant.id) as s:
        for q, hits, good in votes:
            conv = Conversation(id=uuid.uuid4(), tenant_id=tenant.id, user_subject="sim", title=q["id"])
            s.add(conv)
            s.flush()
            msg = Message(id=uuid.uuid4(), tenant_id=tenant.id, conversation_id=conv.id, role="assistant",
                          content="[1] [2]", citations=[])
            s.add(msg)
            s.flush()
            s.add(Feedback(tenant_id=tenant.id, message_id=msg.id, user_subject="sim", rating="up" if good else "down",
                           value=1.0 if good else -1.0,
                           cited=[{"chunk_id": str(h.chunk_id), "document_id": str(h.document_id),
                                   "score": h.score} for h in hits]))
    cand = builds.start(tenant.id, "boosts", "benchmark")
    boosts = feedback.compute_boosts(tenant.id)
    feedback.write_boosts(tenant.id, cand.version, boosts)
    builds.finish(cand, {})
    with tenant_session(tenant.id) as s:
        ref = versions.get(s, cand.version)
    with versions.pinned(ref, tenant.id):
        after = run("held-out: hybrid + feedback boosts", held_out, served_r)
    verdict = evaluation.gate(tenant.id, cand.version)  # what the promotion gate decides for this boost set
    stop_embedded()

    print(f"golden set: {len(golden)} questions with expected sources, k = {k}")
    print(f"{'method':<36} {'n':>3} {'recall@k':>9} {'MRR':>7} {'nDCG':>7}")
    for r in [*results, before, after]:
        print(f"{r['method']:<36} {r['n']:>3} {r['recall']:>9.3f} {r['mrr']:>7.3f} {r['ndcg']:>7.3f}")
    base = results[2]
    print(f"ratios vs hybrid (MRR): dense {results[0]['mrr'] / base['mrr']:.3f}, "
          f"BM25 {results[1]['mrr'] / base['mrr']:.3f}; boosts on held-out {after['mrr'] / before['mrr']:.3f} "
          f"({len(boosts)} boost rows from {len(votes)} simulated ratings, "
          f"{sum(1 for *_, g in votes if not g)} of them down)")
    print(f"promotion gate on the full golden set for this boost set: {'PASS' if verdict['passed'] else 'REJECT'} "
          + ", ".join(f"{m} {verdict['active'][m]:.3f}→{verdict['candidate'][m]:.3f}"
                      for m in ("recall_at_k", "mrr", "ndcg", "facts", "routing")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
