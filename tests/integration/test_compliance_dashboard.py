"""Issue 15 #4: GET /v1/compliance/dashboard counts what the tenant's records hold — documents by class,
pending steward approvals and their age, PII detections, AI usage by tier, refused requests, holds and open
GDPR requests — for admins and compliance officers only, and nothing of another tenant."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from sqlalchemy import text

from core.db.database import system_session, tenant_session
from core.models import Document, Role
from tests.builders import bearer, index_document

PII_REASONS = [{"detector": "declared", "class": "I"},
               {"detector": "pii_density", "findings": 6, "per_1000_words": 80.0, "types": ["EMAIL", "IP_ADDRESS"],
                "class": "III"}]


def _pending(t, title: str, hours: float, reasons=None) -> uuid.UUID:
    doc_id = uuid.uuid4()
    with tenant_session(t.id) as s:
        s.add(Document(id=doc_id, tenant_id=t.id, source_key=f"dash:{doc_id}", title=title, filename=f"{title}.md",
                       content_hash=f"h-{doc_id}", storage_path="/dev/null", declared_classification=1,
                       classification=3, classification_reasons=reasons or [], acl_groups=[],
                       status="awaiting_approval", review_status="pending", created_by="uploader",
                       queued_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)))
    return doc_id


def _records_management(t) -> tuple[bool, bool]:
    """A hold and an overdue GDPR request, where the records-management tables exist (migration 0017)."""
    with system_session() as s:
        have = [bool(s.execute(text("SELECT to_regclass(:n) IS NOT NULL"), {"n": n}).scalar())
                for n in ("public.destruction_holds", "public.gdpr_requests")]
        if have[0]:
            s.execute(text("INSERT INTO destruction_holds (id, tenant_id, scope, target, reason, placed_by) "
                           "VALUES (:i, :t, 'user', 'olaf', 'litigation', 'cora')"), {"i": uuid.uuid4(), "t": t.id})
        if have[1]:
            s.execute(text("INSERT INTO gdpr_requests (id, tenant_id, subject, kind, requested_by, due_at) VALUES "
                           "(:i, :t, 'olaf', 'access', 'olaf', now() - interval '1 day')"),
                      {"i": uuid.uuid4(), "t": t.id})
    return have[0], have[1]


def test_dashboard_counts_the_tenants_records(client, make_tenant):
    t = make_tenant("dash")
    other = make_tenant("dash-other")
    for name, cls in (("open", 1), ("internal", 2), ("recipe", 3)):
        index_document(t, name, cls, ["qa"] if cls >= 3 else [], f"{name} document about press P3 maintenance.")
    index_document(other, "elsewhere", 4, ["qa"], "another tenant's restricted document")
    old = _pending(t, "netconf-manual", 30, PII_REASONS)
    _pending(t, "fresh", 1)
    holds, gdpr = _records_management(t)
    assert client.post("/v1/chat", json={"message": "press P3 maintenance"},
                       headers=bearer(t, "olaf", Role.operator)).status_code == 200
    assert client.get("/v1/compliance/dashboard", headers=bearer(t, "olaf", Role.operator)).status_code == 403

    with system_session() as s:  # the officer is a user whose record grants the permission
        s.execute(text("INSERT INTO users (id, tenant_id, username, role, permissions) VALUES "
                       "(:i, :t, 'cora', 'viewer', ARRAY['compliance_officer'])"), {"i": uuid.uuid4(), "t": t.id})
    r = client.get("/v1/compliance/dashboard", headers=bearer(t, "cora", Role.viewer))
    assert r.status_code == 200, r.text
    d = r.json()
    by_class = d["documents_by_class"]
    assert (by_class["I"]["total"], by_class["II"]["total"], by_class["III"]["total"], by_class["IV"]["total"]) \
        == (1, 1, 3, 0)
    assert by_class["III"]["awaiting_approval"] == 2 and by_class["III"]["indexed"] == 1
    pending = d["pending_approvals"]
    assert pending["count"] == 2 and pending["over_24h"] == 1 and 29.9 <= pending["oldest_hours"] <= 30.5
    assert pending["oldest"][0]["document_id"] == str(old) and pending["oldest"][0]["title"] == "netconf-manual"
    assert d["pii"] == {"documents_with_pii": 1, "findings": 6, "documents_by_type": {"EMAIL": 1, "IP_ADDRESS": 1},
                        "raised_to_class_iii": 1}
    with tenant_session(t.id) as s:
        calls = dict(s.execute(text("SELECT tier, count(*) FROM usage_records GROUP BY tier")).all())
    assert calls and {k: v["calls"] for k, v in d["ai_usage_by_tier"].items()} == calls
    denied = [row for row in d["refused_requests"]["by_action"] if row["action"] == "access.denied"]
    assert denied and denied[0]["count"] == 1 and d["refused_requests"]["total"] >= 1
    assert d["export_control"] == {"pass": 1}
    if holds:
        assert d["holds"] == {"available": True, "active": 1, "by_scope": {"user": 1}}
    if gdpr:
        assert d["gdpr_requests"] == {"available": True, "open": 1, "overdue": 1, "by_kind": {"access": 1}}
    assert "elsewhere" not in json.dumps(d)

    # An admin sees the same; a bad period is a 422, not a 500.
    again = client.get("/v1/compliance/dashboard", headers=bearer(t, "ada", Role.admin)).json()["pending_approvals"]
    assert [p["document_id"] for p in again["oldest"]] == [p["document_id"] for p in pending["oldest"]]
    assert client.get("/v1/compliance/dashboard?days=0", headers=bearer(t, "ada", Role.admin)).status_code == 422
