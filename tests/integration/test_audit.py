import pytest
import sqlalchemy as sa
from sqlalchemy import text

from compliance import audit
from core.db.database import get_urls, tenant_session


def test_chain_verifies_and_app_role_cannot_rewrite_history(make_tenant):
    t = make_tenant("audit")
    with tenant_session(t.id) as s:
        for i in range(5):
            audit.record(s, tenant_id=t.id, actor="alice", action="doc.read", resource_id=str(i), details={"i": i})
    with tenant_session(t.id) as s:
        ok, n, broken = audit.verify_chain(s, t.id)
        assert (ok, broken) == (True, None)
        assert n == 6  # tenant.create + 5
    for stmt in ("UPDATE audit_events SET actor = 'mallory'", "DELETE FROM audit_events", "TRUNCATE audit_events"):
        with pytest.raises(sa.exc.DBAPIError):
            with tenant_session(t.id) as s:
                s.execute(text(stmt))


def test_owner_is_refused_too_and_tampering_is_detected(make_tenant):
    t = make_tenant("audit")
    with tenant_session(t.id) as s:
        for i in range(3):
            audit.record(s, tenant_id=t.id, actor="alice", action="doc.read", resource_id=str(i))
    eng = sa.create_engine(get_urls().admin)
    try:
        with eng.begin() as conn:
            conn.execute(text("SET LOCAL ROLE eap_owner"))
            with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                conn.execute(text("UPDATE audit_events SET actor='x' WHERE tenant_id=:t"), {"t": str(t.id)})
        # A superuser who disables the trigger can still edit a row, but the chain exposes it.
        with eng.begin() as conn:
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
            conn.execute(
                text("UPDATE audit_events SET actor='mallory' WHERE tenant_id=:t AND resource_id='1'"),
                {"t": str(t.id)},
            )
            conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only"))
    finally:
        eng.dispose()
    with tenant_session(t.id) as s:
        ok, _, broken = audit.verify_chain(s, t.id)
    assert ok is False and broken is not None
