"""Security issue 12 #2: Dagster's webserver has no login, so a job that releases or exports data must
not act on its run config alone. Each attack launches the real job the UI/GraphQL launches (same
definitions, same run config) against the real API and database and shows it refused with nothing
changed; the decision that passes is bound to the authenticated steward the API issued the token to."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import dagster as dg
import jwt
import pytest
from sqlalchemy import text

from compliance import approvals
from core.db.database import system_session, tenant_session
from core.models import Role
from core.security import mint_token
from core.settings import get_settings
from tests.builders import chunk_rows, document_row, finetune_export_config, steward_review_config, upload_file

BODY = b"# Recipe R-9\n\nAnneal the housing at 555 C for 3 h, then quench in oil.\n"
REASON = "checked against the export list"


def _bearer(t, subject, role=Role.operator, groups=(), roles=()) -> dict:
    tok = mint_token(get_settings(), tenant_id=t.id, tenant=t.name, role=role, subject=subject, groups=list(groups),
                     extra={"roles": list(roles)} if roles else None)
    return {"Authorization": f"Bearer {tok}"}


def _launch(inst, doc_id, config: dict) -> dg.ExecuteInProcessResult:
    import definitions

    return definitions.defs.resolve_job_def("steward_review").execute_in_process(
        instance=inst, partition_key=str(doc_id), raise_on_error=False,
        run_config={"ops": {"search_index": {"config": config}}}, resources=definitions.defs.resources)


def _unchanged(t, doc_id) -> bool:
    row = document_row(t.id, doc_id)
    return (row["status"], row["review_status"], row["reviewed_by"]) == ("awaiting_approval", "pending", None) \
        and chunk_rows(t.id, doc_id) == []


def _review_events(t) -> list:
    with tenant_session(t.id) as s:
        return s.execute(text("SELECT action, actor, details FROM audit_events WHERE action LIKE 'document.review.%' "
                              "ORDER BY seq")).all()


def _ui_text(result: dg.ExecuteInProcessResult) -> str:
    """Everything the Dagster UI shows for a run: event messages and materialization metadata."""
    parts = []
    for ev in result.all_events:
        parts.append(ev.message or "")
        if ev.is_step_materialization:
            mat = ev.step_materialization_data.materialization
            parts.append(json.dumps({k: str(v.value) for k, v in mat.metadata.items()}))
    return "\n".join(parts)


def test_steward_review_needs_an_approval_token_from_the_api(client, dagster_env, make_tenant):
    inst, run_pipeline, _ = dagster_env
    t = make_tenant("dagauth")
    a = upload_file(client, t, "recipe.md", BODY, classification="III", acl_groups="metallurgy").json()["document_id"]
    b = upload_file(client, t, "other.md", b"# Other\n\nSecret alloy mix 7 of 9.\n", classification="III",
                acl_groups="metallurgy").json()["document_id"]
    ingest = run_pipeline()
    assert ingest[0].success
    assert "555 C" not in _ui_text(ingest[0])
    assert _unchanged(t, a) and _unchanged(t, b)

    # The attack as found: a free-text steward in the config is not even a valid config any more.
    with pytest.raises(dg.DagsterInvalidConfigError):
        _launch(inst, a, {"decision": "approve", "steward": "Jana Novak", "reason": REASON})
    # No token, a blank one, an API bearer token, a token signed with the API key: refused.
    admin_bearer = _bearer(t, "ada", Role.admin, ("metallurgy",))["Authorization"].split()[1]
    signed_with_api_key = jwt.encode(
        {"iss": "eap", "aud": "eap:steward-review", "sub": "mallory", "jti": str(uuid.uuid4()), "tid": str(t.id),
         "kind": "document_review", "doc": a, "sha256": document_row(t.id, a)["content_hash"], "decision": "approve",
         "reason_sha256": approvals.reason_digest(REASON), "iat": dt.datetime.now(dt.UTC),
         "exp": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)},
        get_settings().jwt_signing_secret(), algorithm="HS256")
    for bad in ({"decision": "approve", "reason": REASON},
                {"decision": "approve", "reason": REASON, "approval_token": " "},
                {"decision": "approve", "reason": REASON, "approval_token": admin_bearer},
                {"decision": "approve", "reason": REASON, "approval_token": signed_with_api_key}):
        assert not _launch(inst, a, bad).success
        assert _unchanged(t, a)

    # Who may ask the API: a steward (roles claim or admin) who can read the document and did not upload it.
    url = f"/v1/documents/{a}/review-token"
    body = {"decision": "approve", "reason": REASON}
    assert client.post(url, json=body, headers=_bearer(t, "olaf", groups=("metallurgy",))).status_code == 403
    r = client.post(url, json=body, headers=_bearer(t, "operator@t", groups=("metallurgy",), roles=("steward",)))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "own_document")  # the uploader
    assert client.post(url, json=body, headers=_bearer(t, "sam", roles=("steward",))).status_code == 404  # no group
    assert client.post(url, json={"decision": "approve", "reason": ""},
                       headers=_bearer(t, "sam", groups=("metallurgy",), roles=("steward",))).status_code == 422

    # A real token, misused: another document, another decision, another reason, expired.
    token_cfg = steward_review_config(client, a, "approve", REASON, steward="sam.steward")
    token = token_cfg["ops"]["search_index"]["config"]["approval_token"]
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401  # not a bearer
    for doc, cfg in ((b, {"decision": "approve", "reason": REASON, "approval_token": token}),
                     (a, {"decision": "reject", "reason": REASON, "approval_token": token}),
                     (a, {"decision": "approve", "reason": "looks fine", "approval_token": token})):
        assert not _launch(inst, doc, cfg).success
    claims = jwt.decode(token, options={"verify_signature": False})
    expired = jwt.encode({**claims, "iat": claims["iat"] - 3600, "exp": claims["exp"] - 3600},
                         approvals._key(get_settings()), algorithm="HS256")
    assert not _launch(inst, a, {"decision": "approve", "reason": REASON, "approval_token": expired}).success
    assert _unchanged(t, a) and _unchanged(t, b) and _review_events(t) == []

    # The real thing: approved, recorded as the token's authenticated user, nothing classified in the UI.
    ok = _launch(inst, a, token_cfg["ops"]["search_index"]["config"])
    assert ok.success
    row = document_row(t.id, a)
    assert (row["status"], row["review_status"], row["reviewed_by"]) == ("indexed", "approved", "sam.steward")
    assert chunk_rows(t.id, a)
    shown = _ui_text(ok)
    assert "555 C" not in shown and REASON not in shown
    events = _review_events(t)
    assert [(e.action, e.actor) for e in events] == [("document.review.approved", "sam.steward")]
    assert events[0].details["reason"] == REASON and events[0].details["run_id"] == ok.run_id
    # Single use: the token is spent (by this run), a replay is refused.
    with system_session() as s:
        used = s.execute(text("SELECT used_by_run FROM approval_tokens WHERE id = :i"), {"i": claims["jti"]}).scalar()
    assert used == ok.run_id
    with pytest.raises(approvals.ApprovalRefused, match="already used"):
        approvals.consume_review(token, tenant_id=t.id, document_id=uuid.UUID(a), content_hash=row["content_hash"],
                                 decision="approve", reason=REASON, run_id="replay", class_name="III")
    assert not _launch(inst, a, token_cfg["ops"]["search_index"]["config"]).success
    assert document_row(t.id, b)["status"] == "awaiting_approval" and len(_review_events(t)) == 1


def test_finetune_export_needs_an_admin_approval(client, make_tenant):
    import definitions
    from assets.evals import finetune_dataset
    from core.models import Conversation, Feedback, Message

    t = make_tenant("ftauth")
    other = make_tenant("ftauth-other")
    resources = {"db": definitions.defs.resources["db"]}
    root = get_settings().home / "datasets" / "finetune"

    with pytest.raises(dg.DagsterInvalidConfigError):  # launched with no approval at all
        dg.materialize([finetune_dataset], resources=resources)
    forged = {"ops": {"finetune_dataset": {"config": {"reason": "x", "approval_token": "eyJhbGciOiJIUzI1NiJ9.e30.x"}}}}
    assert not dg.materialize([finetune_dataset], resources=resources, run_config=forged, raise_on_error=False).success
    r = client.post("/v1/finetune/export-token", json={"reason": "x"}, headers=_bearer(t, "olaf", Role.operator))
    assert r.status_code == 403

    for tenant in (t, other):  # both tenants have a positively rated answer (citing nothing restricted)
        with tenant_session(tenant.id) as s:
            conv = Conversation(id=uuid.uuid4(), tenant_id=tenant.id, user_subject="u", title="q")
            s.add(conv)
            s.flush()
            q, mid = Message(tenant_id=tenant.id, conversation_id=conv.id, role="user", content="How often?",
                             created_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)), uuid.uuid4()
            s.add_all([q, Message(id=mid, tenant_id=tenant.id, conversation_id=conv.id, role="assistant",
                                  content="Every 500 hours.", citations=[])])
            s.flush()
            s.add(Feedback(tenant_id=tenant.id, message_id=mid, user_subject="u", rating="up", value=1.0))

    cfg = finetune_export_config(client, t, reason="quarterly set", admin="ada")
    res = dg.materialize([finetune_dataset], resources=resources, run_config=cfg)
    assert res.success
    meta = res.asset_materializations_for_node("finetune_dataset")[0].metadata
    assert meta["approved_by"].value == "ada"
    # Replayed (e.g. from the run's page in the UI): refused, nothing written.
    assert not dg.materialize([finetune_dataset], resources=resources, run_config=cfg, raise_on_error=False).success
    assert (root / t.name / "train.jsonl").read_text().count("\n") == 1
    assert not (root / other.name).exists()  # the token covers its own tenant only
    with tenant_session(t.id) as s:
        events = s.execute(text("SELECT action, actor FROM audit_events WHERE action LIKE 'dataset.export.%' "
                                "ORDER BY seq")).all()
    assert [(e.action, e.actor) for e in events] == [("dataset.export.finetune.approved", "ada"),
                                                     ("dataset.export.finetune.written", "ada")]
