"""Issue 15 #1: the audit trail proves itself. Each row is sealed with a keyed MAC (key outside the database),
chain heads are checkpointed into a signed append-only store, and a database superuser who edits, deletes,
truncates, reorders or recomputes the chain without the key is caught by GET /v1/audit/verify and by the Dagster
check — real API, real database (superuser connection), real Dagster jobs."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets

import dagster as dg
import sqlalchemy as sa
from sqlalchemy import text

from compliance import audit
from core.db.database import get_urls, system_session, tenant_session
from core.models import Role
from tests.builders import officer_headers as _officer
from tests.builders import role_headers as _h


def _fill(t, n: int = 5) -> None:
    with tenant_session(t.id) as s:
        for i in range(n):
            audit.record(s, tenant_id=t.id, actor=f"user{i % 2}", action="doc.read" if i % 2 else "doc.write",
                         resource_type="document", resource_id=f"d{i}", details={"i": i, "x": 0.1 * i})


def _rows(t) -> list:
    with system_session() as s:
        return s.execute(text("SELECT * FROM audit_events WHERE tenant_id = :t ORDER BY seq"), {"t": t.id}).all()


def _superuser(stmts: list[tuple[str, dict]]) -> None:
    """Run statements as the database superuser with the append-only trigger switched off."""
    eng = sa.create_engine(get_urls().admin)
    try:
        with eng.begin() as conn:
            conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
            for sql, params in stmts:
                conn.execute(text(sql), params)
            conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only"))
    finally:
        eng.dispose()


def _job(name: str) -> dg.ExecuteInProcessResult:
    import definitions

    return definitions.defs.resolve_job_def(name).execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), resources=definitions.defs.resources,
        raise_on_error=False)


def test_officer_reads_pages_and_verifies_sealed_chain_across_a_key_rotation(client, make_tenant):
    t = make_tenant("auditapi")
    _fill(t, 5)
    # Not for an operator, nor for a tenant admin without the permission — and the refusal is itself a record.
    assert client.get("/v1/audit", headers=_h(t, "olaf")).status_code == 403
    r = client.get("/v1/audit/verify", headers=_h(t, "ada", Role.admin))
    assert r.status_code == 403 and r.json()["error"]["code"] == "compliance_officer_required"
    with system_session() as s:
        denied = s.execute(text("SELECT actor FROM audit_events WHERE tenant_id = :t AND action = 'access.denied' "
                                "ORDER BY seq"), {"t": t.id}).scalars().all()
    assert denied == ["olaf", "ada"]

    # Filters and keyset paging, newest first.
    page1 = client.get("/v1/audit", params={"action": "doc.*", "limit": 2}, headers=_officer(t)).json()
    assert [e["resource_id"] for e in page1["events"]] == ["d4", "d3"]
    page2 = client.get("/v1/audit", params={"action": "doc.*", "limit": 2, "before": page1["next_before"]},
                       headers=_officer(t)).json()
    assert [e["resource_id"] for e in page2["events"]] == ["d2", "d1"]
    only = client.get("/v1/audit", params={"actor": "user1", "action": "doc.read"}, headers=_officer(t)).json()
    assert {e["resource_id"] for e in only["events"]} == {"d1", "d3"} and only["next_before"] is None
    assert client.get("/v1/audit", params={"limit": 0}, headers=_officer(t)).status_code == 422

    v = client.get("/v1/audit/verify", headers=_officer(t)).json()
    assert v["ok"] is True and v["breaks"] == []
    assert v["events"] == v["sealed"] == len(_rows(t)) - 1  # the verify call's own record comes after
    first_key = audit.load_keys().active
    assert v["key_ids"] == [first_key]
    # Every row carries its key id and a MAC; the database holds neither the key nor anything to derive it.
    assert all(r.key_id == first_key and len(r.mac) == 64 for r in _rows(t))

    new_key = audit.rotate_key()
    assert new_key != first_key and set(audit.load_keys().secrets) >= {first_key, new_key}
    _fill(t, 2)
    v = client.get("/v1/audit/verify", headers=_officer(t)).json()
    assert v["ok"] is True and v["key_ids"] == sorted({first_key, new_key})
    with system_session() as s:
        kinds = s.execute(text("SELECT action FROM audit_events WHERE tenant_id = :t AND action LIKE 'audit.%' "
                               "ORDER BY seq"), {"t": t.id}).scalars().all()
    assert kinds == ["audit.read", "audit.read", "audit.read", "audit.verified", "audit.verified"]


def test_superuser_tampering_is_detected_by_the_api_and_the_dagster_check(client, make_tenant, scratch_tenants):
    names = ("clean", "edit", "delete_middle", "truncate", "reorder", "recompute")
    ts = {n: make_tenant(f"tamper-{n.replace('_', '')}") for n in names}
    scratch_tenants.extend(t.id for t in ts.values())
    for t in ts.values():
        _fill(t, 6)
    # The hourly checkpoint job signs every chain's head into the store outside the database.
    run = _job("checkpoint_audit_trail")
    assert run.success
    for t in ts.values():
        cps = audit.read_checkpoints(t.id)
        assert len(cps) == 1 and cps[0]["seq"] == _rows(t)[-2].seq  # then the audit.checkpoint record itself
        assert _rows(t)[-1].action == "audit.checkpoint"
    _fill(ts["truncate"], 2)

    rows = {n: _rows(t) for n, t in ts.items()}
    tid = {n: str(t.id) for n, t in ts.items()}
    # 1. Edit a row in the middle.
    _superuser([("UPDATE audit_events SET actor = 'mallory' WHERE id = :id", {"id": rows["edit"][3].id})])
    # 2. Delete a row in the middle.
    _superuser([("DELETE FROM audit_events WHERE id = :id", {"id": rows["delete_middle"][3].id})])
    # 3. Delete the newest rows, down to and including the checkpointed head.
    cp_seq = audit.read_checkpoints(ts["truncate"].id)[0]["seq"]
    _superuser([("DELETE FROM audit_events WHERE tenant_id = :t AND seq >= :s", {"t": tid["truncate"], "s": cp_seq})])
    # 4. Reorder two rows (swap their positions).
    a, b = rows["reorder"][2].seq, rows["reorder"][3].seq
    _superuser([("ALTER TABLE audit_events ALTER COLUMN seq SET GENERATED BY DEFAULT", {}),
                ("UPDATE audit_events SET seq = -seq WHERE seq IN (:a, :b)", {"a": a, "b": b}),
                ("UPDATE audit_events SET seq = CASE WHEN seq = -:a THEN :b ELSE :a END WHERE seq IN (-:a, -:b)",
                 {"a": a, "b": b}),
                ("ALTER TABLE audit_events ALTER COLUMN seq SET GENERATED ALWAYS", {})])
    # 5. Edit a row, then recompute the whole chain — every unkeyed hash and link, and MACs under a key of one's own.
    forged_key = secrets.token_bytes(32)
    _superuser([
        ("UPDATE audit_events SET details = '{\"i\": 99}' WHERE id = :id", {"id": rows["recompute"][2].id}),
        ("DO $$ DECLARE r record; p text := NULL; h text; BEGIN FOR r IN SELECT * FROM audit_events WHERE tenant_id = "
         f"'{tid['recompute']}' ORDER BY seq LOOP h := eap_audit_digest(p, r.id, r.tenant_id, r.ts, r.actor, "
         "r.actor_role, r.action, r.resource_type, r.resource_id, r.outcome, r.details); UPDATE audit_events SET "
         "prev_hash = p, hash = h WHERE id = r.id; p := h; END LOOP; END $$", {})])
    prev_mac = None
    for r in _rows(ts["recompute"]):
        prev_mac = hmac.new(forged_key, json.dumps([prev_mac, r.hash]).encode(), hashlib.sha256).hexdigest()
        _superuser([("UPDATE audit_events SET mac = :m WHERE id = :id", {"m": prev_mac, "id": r.id})])
    recomputed = _rows(ts["recompute"])
    assert all(r2.prev_hash == r1.hash for r1, r2 in zip(recomputed, recomputed[1:], strict=False))

    expected = {"edit": "mac_mismatch", "delete_middle": "link_broken", "truncate": "checkpoint_missing",
                "reorder": "link_broken", "recompute": "mac_mismatch"}
    for name, t in ts.items():
        v = client.get("/v1/audit/verify", headers=_officer(t)).json()
        if name == "clean":
            assert v["ok"] is True and v["checkpoints"] == 1, v
        else:
            assert v["ok"] is False, name
            assert expected[name] in [b["reason"] for b in v["breaks"]], (name, v["breaks"])
    # The edited row is named; the recomputed chain's links all hold, only the key gives it away.
    v = client.get("/v1/audit/verify", headers=_officer(ts["edit"])).json()
    assert v["breaks"][0]["event_id"] == str(rows["edit"][3].id)
    v = client.get("/v1/audit/verify", headers=_officer(ts["recompute"])).json()
    assert {b["reason"] for b in v["breaks"]} == {"mac_mismatch", "checkpoint_mismatch"}  # the store saw the head
    v = client.get("/v1/audit/verify", headers=_officer(ts["truncate"])).json()
    # New records after the truncation link to what was left, but the signed checkpoint's row is gone.
    assert [b["reason"] for b in v["breaks"]] == ["checkpoint_missing"] and v["breaks"][0]["seq"] == cp_seq

    # The nightly Dagster check fails visibly and names exactly the tampered chains (other tests' tenants may be
    # broken too: only ours are asserted).
    res = _job("verify_audit_trail")
    (check,) = res.get_asset_check_evaluations()
    assert check.check_name == "audit_chain_verified" and check.passed is False
    assert check.severity == dg.AssetCheckSeverity.ERROR
    broken = check.metadata["broken_chains"].value
    assert tid["clean"] not in broken
    for name, reason in expected.items():
        assert reason in [b["reason"] for b in broken[tid[name]]], name
    # …and the checkpoint job does not sign a broken chain's head.
    before = {n: len(audit.read_checkpoints(t.id)) for n, t in ts.items()}
    assert _job("checkpoint_audit_trail").success
    after = {n: len(audit.read_checkpoints(t.id)) for n, t in ts.items()}
    assert after["clean"] == before["clean"] + 1
    assert all(after[n] == before[n] for n in expected)


def test_checkpoint_store_is_signed_and_append_only(make_tenant):
    t = make_tenant("cpstore")
    _fill(t, 3)
    with system_session() as s:
        cp = audit.write_checkpoint(s, t.id)
    assert cp is not None and cp.seq == _rows(t)[-1].seq
    with system_session() as s:
        again = audit.write_checkpoint(s, t.id)  # the head has not moved: the same checkpoint, not a rewrite
    assert again is not None and again.path == cp.path and again.at == cp.at
    # A checkpoint file forged without the key is reported.
    folder = audit.checkpoint_dir() / str(t.id)
    forged = {**json.loads(open(cp.path).read()), "seq": cp.seq + 10_000, "sig": "0" * 64}
    (folder / f"{cp.seq + 10_000:020d}.json").write_text(json.dumps(forged))
    with tenant_session(t.id) as s:
        res = audit.verify(s, t.id)
    assert not res.ok and [b.reason for b in res.breaks] == ["checkpoint_invalid"]


def test_concurrent_writers_keep_one_sealed_chain(make_tenant):
    """Writers racing on one chain: the advisory lock taken by audit_append is held until commit, so each MAC is
    computed over the MAC directly before it (and a rolled-back writer leaves neither row nor seal)."""
    import threading

    t = make_tenant("auditrace")
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for i in range(8):
                with tenant_session(t.id) as s:
                    audit.record(s, tenant_id=t.id, actor=f"w{w}", action="doc.read", resource_id=str(i))
            try:
                with tenant_session(t.id) as s:
                    audit.record(s, tenant_id=t.id, actor=f"w{w}", action="doc.read", resource_id="rolled back")
                    raise RuntimeError("rollback")
            except RuntimeError:
                pass
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    with tenant_session(t.id) as s:
        res = audit.verify(s, t.id)
    assert res.ok, res.breaks
    assert res.events == res.sealed == 1 + 4 * 8  # tenant.create + every committed record, nothing rolled back
