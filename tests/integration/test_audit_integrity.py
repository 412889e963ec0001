"""Security issue 12 #9: the audit log has one privileged writer the application cannot imitate, and
every denial, failed model call and read of Class III/IV history is a record. Real API, real database
(the application role through its own URL), real LiteLLM."""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy import text

from compliance import audit
from core.db.database import get_urls, system_session, tenant_session
from core.models import Role
from core.security import mint_token
from core.settings import get_settings


def _h(t, subject: str, role: Role = Role.operator, groups=()) -> dict:
    tok = mint_token(get_settings(), tenant_id=t.id, tenant=t.name, role=role, subject=subject, groups=list(groups))
    return {"Authorization": f"Bearer {tok}"}


def _events(tenant_id, action: str, **where) -> list:
    """Audit events (owner role: the platform chain is readable by it only)."""
    cond = "tenant_id IS NULL" if tenant_id is None else "tenant_id = CAST(:t AS uuid)"
    extra = "".join(f" AND {k} = :{k}" for k in where)
    with system_session() as s:
        return s.execute(text(f"SELECT * FROM audit_events WHERE {cond} AND action = :a{extra} ORDER BY seq"),
                         {"t": str(tenant_id) if tenant_id else None, "a": action, **where}).mappings().all()


FORGED = ("INSERT INTO audit_events (id, tenant_id, ts, actor, actor_role, action, resource_type, resource_id, "
          "outcome, details, prev_hash, hash) VALUES (gen_random_uuid(), :t, now(), 'mallory', 'data_steward', "
          "'document.review.approved', 'document', :d, 'success', '{}', :prev, :hash)")


def test_app_role_cannot_append_a_forged_review_approval(make_tenant):
    t = make_tenant("forge")
    with tenant_session(t.id) as s:
        audit.record(s, tenant_id=t.id, actor="alice", action="doc.read")
        head = s.execute(text("SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1")).scalar()
        assert s.execute(text("SELECT current_user")).scalar() == get_settings().app_db_role
    doc = str(uuid.uuid4())
    # 1. A direct INSERT with a hash computed the way the chain computes it: no INSERT privilege.
    forged_hash = audit._digest(head, {"id": doc})
    with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
        with tenant_session(t.id) as s:
            s.execute(text(FORGED), {"t": str(t.id), "d": doc, "prev": head, "hash": forged_hash})
    # 2. The one way in refuses the decision events (only a run holding a consumed approval writes them)…
    with pytest.raises(sa.exc.DBAPIError, match="recorded by the platform"):
        with tenant_session(t.id) as s:
            audit.record(s, tenant_id=t.id, actor="mallory", actor_role="data_steward",
                         action="document.review.approved", resource_type="document", resource_id=doc)
    with pytest.raises(sa.exc.DBAPIError, match="recorded by the platform"):
        with tenant_session(t.id) as s:
            audit.record(s, tenant_id=t.id, actor="mallory", action="dataset.export.finetune.approved")
    # 3. …and any tenant but the session's, including the platform chain.
    other = make_tenant("forge-other")
    for target in (other.id, None):
        with pytest.raises(sa.exc.DBAPIError, match="not this session's tenant"):
            with tenant_session(t.id) as s:
                audit.record(s, tenant_id=target, actor="mallory", action="doc.read")
    # Nor can the API process's system role (member of the owner role, for cross-tenant tasks): decision
    # events come from the pipeline's identity only.
    eng = sa.create_engine(get_urls().system)
    try:
        with pytest.raises(sa.exc.DBAPIError, match="recorded by the platform"):
            with eng.begin() as conn:
                conn.execute(text(f'SET ROLE "{get_settings().owner_db_role}"'))
                conn.execute(text("SELECT audit_append(:t, 'mallory', 'document.review.approved', 'data_steward', "
                                  "'document', :d, 'success', '{}'::jsonb)"), {"t": str(t.id), "d": doc})
    finally:
        eng.dispose()
    # Nothing landed, and the chain (old and new rows) still verifies.
    assert _events(t.id, "document.review.approved") == []
    with tenant_session(t.id) as s:
        assert audit.verify_chain(s, t.id) == (True, 2, None)  # tenant.create, doc.read
        audit.record(s, tenant_id=t.id, actor="alice", action="doc.read")
    with tenant_session(t.id) as s:
        assert audit.verify_chain(s, t.id) == (True, 3, None)


def test_denials_are_recorded(client, make_tenant, monkeypatch):
    t = make_tenant("deny")
    missing = uuid.uuid4()

    # 401: no credentials → the platform chain (no tenant can be trusted), never a tenant's.
    r = client.get(f"/v1/conversations/{missing}")
    assert r.status_code == 401
    ev = _events(None, "access.denied", resource_id=f"GET /v1/conversations/{missing}")
    assert len(ev) == 1 and ev[0]["outcome"] == "denied" and ev[0]["actor"] == "anonymous"
    assert ev[0]["details"]["status"] == 401 and ev[0]["details"]["code"] == "missing_token"
    # A forged token naming this tenant is still not attributed to it.
    other_key = get_settings().model_copy(update={"jwt_secret": SecretStr("x" * 40)})
    forged = mint_token(other_key, tenant_id=t.id, tenant=t.name, role=Role.admin, subject="mallory")
    r = client.get(f"/v1/conversations/{missing}", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401
    assert len(_events(None, "access.denied", resource_id=f"GET /v1/conversations/{missing}")) == 2
    assert _events(t.id, "access.denied") == []

    # 404: a conversation that is not there (or not yours).
    r = client.get(f"/v1/conversations/{missing}", headers=_h(t, "olga"))
    assert r.status_code == 404
    ev = _events(t.id, "access.denied", actor="olga")
    assert [(e["details"]["status"], e["resource_id"]) for e in ev] == [(404, f"GET /v1/conversations/{missing}")]

    # 403: a viewer asking for an admin's export approval.
    r = client.post("/v1/finetune/export-token", json={"reason": "x"}, headers=_h(t, "vic", Role.viewer))
    assert r.status_code == 403
    ev = _events(t.id, "access.denied", actor="vic")
    assert [(e["details"]["status"], e["actor_role"]) for e in ev] == [(403, "viewer")]

    # 429: over the per-user budget.
    monkeypatch.setenv("EAP_RATE_LIMIT_USER_PER_MINUTE", "1")
    get_settings.cache_clear()
    try:
        statuses = [client.post("/v1/search", json={"query": "oil"}, headers=_h(t, "rita")).status_code
                    for _ in range(2)]
    finally:
        monkeypatch.delenv("EAP_RATE_LIMIT_USER_PER_MINUTE")
        get_settings.cache_clear()
    assert statuses == [200, 429]
    ev = _events(t.id, "access.denied", actor="rita")
    assert [(e["details"]["status"], e["details"]["code"]) for e in ev] == [(429, "rate_limited")]
    with tenant_session(t.id) as s:
        assert audit.verify_chain(s, t.id)[0]
    with system_session() as s:
        assert audit.verify_chain(s, None)[0]


def test_failed_model_call_is_recorded(make_tenant, monkeypatch):
    from core import llm
    from core.llm.testing import allow_model_requests

    t = make_tenant("llmfail")
    # A model server that is not there (loopback port 9 refuses): the real LiteLLM call fails.
    monkeypatch.setenv("EAP_LLM_API_BASE", "http://127.0.0.1:9/v1")
    get_settings.cache_clear()
    bound = audit.bind_actor(t.id, "olga", "operator")  # what the API binds for an authenticated request
    try:
        with pytest.raises(llm.LLMUnavailable), allow_model_requests():
            llm.complete([{"role": "user", "content": "hello"}], model="openai/eap-light")
    finally:
        audit.unbind_actor(bound)
        monkeypatch.delenv("EAP_LLM_API_BASE")
        get_settings.cache_clear()
    ev = _events(t.id, "model.call.failed")
    assert len(ev) == 1 and ev[0]["outcome"] == "failure" and ev[0]["actor"] == "olga"
    assert ev[0]["resource_id"] == "openai/eap-light" and ev[0]["details"]["error"]


def test_reading_class_iii_history_and_traces_is_recorded(client, make_tenant):
    from core.models import AgentRun, Conversation, Message
    from tests.builders import index_document

    t = make_tenant("histread")
    vec = np.zeros(384, dtype=np.float32)
    vec[3] = 1.0
    secret = index_document(t, "recipe", 3, ["metallurgy"], "Anneal at 540 C for 4 hours.", vector=vec)
    public = index_document(t, "sop", 2, [], "Grease the ram bearings every 500 hours.", vector=vec)
    with tenant_session(t.id) as s:
        chunk = dict(s.execute(text("SELECT document_id, id FROM chunks")).all())
    convs = {}
    for name, doc in (("secret", secret), ("public", public)):
        with tenant_session(t.id) as s:
            conv = Conversation(id=uuid.uuid4(), tenant_id=t.id, user_subject="mia", title=name)
            s.add(conv)
            s.flush()
            mid = uuid.uuid4()
            s.add(Message(id=mid, tenant_id=t.id, conversation_id=conv.id, role="assistant", content="answer [1]",
                          citations=[{"n": 1, "document_id": str(doc), "chunk_id": str(chunk[doc]), "score": 0.1,
                                      "title": name, "page": 1, "section": None}],
                          created_at=dt.datetime.now(dt.UTC)))
            s.flush()
            run = AgentRun(id=uuid.uuid4(), tenant_id=t.id, user_subject="mia", conversation_id=conv.id,
                           message_id=mid, specialist="document_analyst", model_tier="light", model="m",
                           outcome="answered", escalations=0,
                           trace=[{"step": "retrieve", "chunk_ids": [str(chunk[doc])], "result": "..."}])
            s.add(run)
            convs[name] = (conv.id, run.id)
    mia = _h(t, "mia", groups=("metallurgy",))
    for conv_id, run_id in convs.values():
        assert client.get(f"/v1/conversations/{conv_id}", headers=mia).status_code == 200
        assert client.get(f"/v1/traces/{run_id}", headers=mia).status_code == 200
    reads = _events(t.id, "conversation.read_restricted")
    assert [(e["resource_id"], e["actor"], e["details"]["max_class"]) for e in reads] == [
        (str(convs["secret"][0]), "mia", 3)]
    assert reads[0]["details"]["documents"] == [str(secret)]
    traces = _events(t.id, "trace.read_restricted")
    assert [(e["resource_id"], e["details"]["max_class"]) for e in traces] == [(str(convs["secret"][1]), 3)]
