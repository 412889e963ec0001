"""Golden-dataset evaluation: every question through the real orchestrator; retrieval scored by
recall@k, MRR and nDCG of the expected source documents, answers by expected facts present,
citation correctness and routing accuracy — overall and per specialist; history kept, regressions
flagged against the previous run, and an HTML report with tables and trend plots."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from agents import orchestrator
from agents.deps import build_deps
from core.db.database import tenant_session
from core.embedding import Embedder
from core.errors import PlatformError
from core.llm import Model
from core.models import EvalRun, Tenant
from core.settings import get_settings
from retrieval import versions

GOLDEN = Path(__file__).resolve().parent / "golden" / "manufacturing.json"
METRICS = ("recall_at_k", "mrr", "ndcg", "facts", "citation_precision", "routing")
REGRESSION_DROP = 0.05
K = 6


def load_golden(path: Path = GOLDEN) -> dict:
    data = json.loads(path.read_text())
    for q in data["questions"]:
        missing = {"id", "question", "expected_facts", "expected_sources", "specialist"} - set(q)
        if missing:
            raise ValueError(f"golden question {q.get('id')} lacks {sorted(missing)}")
    return data


def retrieval_scores(docs_ranked: list[str], expected: set[str], k: int = K) -> tuple[float, float, float]:
    """(recall@k, MRR, nDCG@k) of the expected documents in a ranking of documents."""
    top = docs_ranked[:k]
    recall = len(expected & set(top)) / len(expected)
    rank = next((i + 1 for i, d in enumerate(docs_ranked) if d in expected), None)
    dcg = sum(1.0 / math.log2(i + 2) for i, d in enumerate(top) if d in expected)
    idcg = sum(1.0 / math.log2(i + 2) for i in range(min(len(expected), k)))
    return recall, (1.0 / rank if rank else 0.0), (dcg / idcg if idcg else 0.0)


def _score(question: dict, docs_ranked: list[str], answer: str, cited_docs: list[str], specialist: str) -> dict:
    expected = set(question["expected_sources"])
    if expected:
        recall, mrr, ndcg = retrieval_scores(docs_ranked, expected)
        precision = (sum(1 for d in cited_docs if d in expected) / len(cited_docs)) if cited_docs else 0.0
    else:  # a pure calculation: no document to find, nothing to cite
        recall = mrr = ndcg = precision = 1.0
    low = answer.lower()
    facts = sum(1 for f in question["expected_facts"] if f.lower() in low) / max(1, len(question["expected_facts"]))
    return {"recall_at_k": recall, "mrr": mrr, "ndcg": ndcg, "facts": facts, "citation_precision": precision,
            "routing": 1.0 if specialist == question["specialist"] else 0.0}


def _mean(rows: list[dict]) -> dict:
    return {m: round(sum(r[m] for r in rows) / len(rows), 4) for m in METRICS} if rows else {}


def evaluate(tenant_id: uuid.UUID, golden: dict | None = None, kind: str = "nightly", *,
             model: Model | None = None, embedder: Embedder | None = None) -> EvalRun:
    """Run the golden set against the index version this thread serves (the active one, or a
    candidate pinned with retrieval.versions.pinned). `kind`: nightly (history, regression flags vs
    the previous nightly run) or gate (a promotion decision; not part of the nightly trend). `model` and
    `embedder` (default: the configured ones) go into the AgentDeps of the evaluation's caller: an admin
    without groups and without a tenant context (no budget, no memory). Without `golden`, the tenant's own
    set (evals/golden_sets.py); a tenant without one raises NoGoldenSet."""
    if golden is None:
        golden = tenant_golden(tenant_id)
    results = []
    with tenant_session(tenant_id) as s:
        served = versions.serving(s, tenant_id).version
        titles = {str(i): t for i, t in s.execute(text("SELECT id, title FROM documents")).all()}
        deps = build_deps(s, subject="golden-eval", role="admin", groups=(), model=model, embedder=embedder)
        for q in golden["questions"]:
            out = orchestrator.run(deps, q["question"], [], k=K)
            ranked: list[str] = []
            for h in out.prepared.hits:
                title = titles.get(str(h.document_id), "")
                if title not in ranked:
                    ranked.append(title)
            cited = [titles.get(str(c.document_id), "") for c in out.citations]
            scores = _score(q, ranked, out.text, cited, out.specialist)
            results.append({"id": q["id"], "question": q["question"], "specialist": q["specialist"],
                            "routed_to": out.specialist, "outcome": out.outcome, "retrieved": ranked[:K],
                            "cited": cited, **{m: round(v, 4) for m, v in scores.items()}})
    by_spec: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        by_spec[r["specialist"]].append(r)
    overall = {**_mean(results), "questions": len(results)}
    per_spec = {k: {**_mean(v), "questions": len(v)} for k, v in sorted(by_spec.items())}
    with tenant_session(tenant_id) as s:
        prev = s.execute(select(EvalRun).where(EvalRun.kind == "nightly").order_by(EvalRun.created_at.desc())
                         .limit(1)).scalar()
        regressions = _regressions(prev, overall, per_spec) if prev and kind == "nightly" else []
        run = EvalRun(id=uuid.uuid4(), tenant_id=tenant_id, dataset_version=golden["version"], overall=overall,
                      per_specialist=per_spec, per_question=results, regressions=regressions, kind=kind,
                      index_version=served)
        history = s.execute(select(EvalRun.created_at, EvalRun.overall).where(EvalRun.kind == "nightly")
                            .order_by(EvalRun.created_at)).all()
        run.created_at = dt.datetime.now(dt.UTC)
        run.report_path = str(_report(run, [*history, (run.created_at, overall)]))
        s.add(run)
        s.flush()
        s.expunge(run)
    return run


class NoGoldenSet(PlatformError):
    code = "no_golden_set"
    status_code = 409


def tenant_golden(tenant_id: uuid.UUID) -> dict[str, Any]:
    from evals.golden_sets import dataset_for

    with tenant_session(tenant_id) as s:
        tenant = s.get(Tenant, tenant_id)
        data = dataset_for(s, tenant.name if tenant else "")
    if data is None:
        raise NoGoldenSet("this tenant has no golden dataset: upload one (POST /v1/evals/golden) to evaluate it "
                          "and to gate its index promotions")
    return data


def has_golden(tenant_id: uuid.UUID) -> bool:
    try:
        tenant_golden(tenant_id)
    except NoGoldenSet:
        return False
    return True


def _regressions(prev: EvalRun, overall: dict, per_spec: dict) -> list[dict]:
    out = []
    scopes = [("overall", prev.overall, overall)] + [
        (k, prev.per_specialist.get(k, {}), v) for k, v in per_spec.items()]
    for scope, before, now in scopes:
        for m in METRICS:
            if m in before and m in now and before[m] - now[m] > REGRESSION_DROP:
                out.append({"scope": scope, "metric": m, "before": before[m], "now": now[m]})
    return out


def _plot(history: list) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
    # Dates on the axis: runs are nightly, but gates and re-runs make them uneven. Markers are drawn only
    # while they stay readable (one run still shows as a point; fifty as lines).
    xs = [h[0] for h in history]
    marker = "o" if len(history) <= 20 else None
    for m in METRICS:
        ax.plot(xs, [h[1].get(m, float("nan")) for h in history], marker=marker, markersize=4, label=m)
    locator = mdates.AutoDateLocator(minticks=2, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    if len(history) == 1:  # one point: a day either side, so the axis is not a single instant
        ax.set_xlim(xs[0] - dt.timedelta(days=1), xs[0] + dt.timedelta(days=1))
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("evaluation date (UTC)")
    ax.set_ylabel("score")
    ax.legend(loc="lower left", fontsize=7, ncol=3)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _table(rows: list[dict], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _report(run: EvalRun, history: list) -> Path:
    folder = get_settings().home / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"eval-{run.tenant_id}-{run.created_at:%Y%m%dT%H%M%S}.html"
    spec_rows = [{"specialist": k, **v} for k, v in run.per_specialist.items()]
    worst = sorted(run.per_question, key=lambda r: (r["facts"] + r["recall_at_k"] + r["routing"]))[:10]
    regress = ("<p class=bad>Regressions: " + "; ".join(
        f"{r['scope']} {r['metric']} {r['before']:.2f} → {r['now']:.2f}" for r in run.regressions) + "</p>"
               if run.regressions else "<p class=ok>No regression against the previous run.</p>")
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>Golden evaluation</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}th{{background:#f3f3f3}}.bad{{color:#b00}}
.ok{{color:#070}}</style></head><body>
<h1>Golden-dataset evaluation</h1>
<p>Dataset {html.escape(run.dataset_version)} · {run.overall.get('questions')} questions · run {run.id} ·
{html.escape(run.kind)} run on search index version {run.index_version} ·
{run.created_at:%Y-%m-%d %H:%M} UTC</p>{regress}
<h2>Overall</h2>{_table([run.overall], ['questions', *METRICS])}
<h2>Per specialist</h2>{_table(spec_rows, ['specialist', 'questions', *METRICS])}
<h2>Trend</h2><img alt="scores over runs" src="data:image/png;base64,{_plot(history)}">
<h2>Weakest questions</h2>{_table(worst, ['id', 'question', 'specialist', 'routed_to', 'facts', 'recall_at_k',
                                          'retrieved', 'cited'])}
</body></html>"""
    path.write_text(page)
    return path


def gate(tenant_id: uuid.UUID, candidate_version: int, max_drop: float | None = None, *,
         model: Model | None = None, embedder: Embedder | None = None) -> dict:
    """The promotion gate: the golden set against the active version and against the candidate,
    in the same code and data state; the candidate passes unless an overall score drops by more
    than `max_drop` (EAP_PROMOTION_MAX_DROP)."""
    max_drop = get_settings().promotion_max_drop if max_drop is None else max_drop
    with tenant_session(tenant_id) as s:
        active = versions.active(s)
        cand = versions.get(s, candidate_version)
    if cand is None:
        raise ValueError(f"index version {candidate_version} does not exist")
    with versions.pinned(active, tenant_id):
        before = evaluate(tenant_id, kind="gate", model=model, embedder=embedder)
    with versions.pinned(cand, tenant_id):
        after = evaluate(tenant_id, kind="gate", model=model, embedder=embedder)
    regressions = [{"metric": m, "active": before.overall[m], "candidate": after.overall[m]}
                   for m in METRICS if before.overall[m] - after.overall[m] > max_drop]
    return {"gated": True, "passed": not regressions, "active_version": active.version,
            "candidate_version": candidate_version, "max_drop": max_drop, "active": before.overall,
            "candidate": after.overall, "regressions": regressions,
            "eval_runs": {"active": str(before.id), "candidate": str(after.id)}, "report": after.report_path}
