"""Approval tokens: how a decision taken in the Dagster UI is bound to an authenticated person.

Dagster's open-source webserver has no login: anyone who reaches its GraphQL endpoint can launch any
job with any run config. So a job that releases or exports data does nothing on its own say-so: its
run config must carry an approval token that the platform API issued to an authenticated user with
the right permission, and the run verifies it before changing anything.

- A *review* token (kind `document_review`) is issued by `POST /v1/documents/{id}/review-token` to
  a data steward (admin, or "steward" in the roles claim) who may read the document and did not
  upload it, for ONE document version (id + content hash), ONE decision (approve | reject) and the
  reason (bound by its SHA-256). The run records the token's subject as the steward, never a name
  typed into the config; that subject must be an active user of the tenant with the steward permission
  (admin, or `steward` granted on the user record) when the token is issued and when it is used, and not
  the document's uploader. An approval may also lower a detector-raised class (`classification`, bound
  by the token's signature; never below the uploader's declared class), recorded on the document with
  the steward and the reason.
- An *export* token (kind `finetune_export`) is issued by `POST /v1/finetune/export-token` to a
  tenant admin and lets one run export that tenant's fine-tuning dataset.

Tokens are HS256 JWTs signed with a key derived from the platform signing secret (domain-separated,
so an approval token is never an API bearer token and vice versa), short-lived (`TTL_S`), and
single-use: each is a row in `approval_tokens` that the run consumes, as the platform's system
identity, in the same transaction that records the decision. The application database role can
issue rows but not consume them, and cannot write the decision's audit event (migration 0012).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from sqlalchemy import text
from sqlalchemy.orm import Session

from compliance import audit
from compliance.classification import CLASS_NAMES
from core.db.database import rowcount, system_session
from core.errors import Forbidden, InvalidInput
from core.settings import Settings, get_settings

TTL_S = 15 * 60  # long enough to paste into the Launchpad, short enough that a leaked one expires
REVIEW = "document_review"
EXPORT = "finetune_export"
DECISIONS = ("approve", "reject")
_AUDIENCE = {REVIEW: "eap:steward-review", EXPORT: "eap:finetune-export"}
_REQUIRED = ["exp", "iat", "iss", "aud", "sub", "jti", "tid", "kind", "reason_sha256"]


class ApprovalRefused(Forbidden):
    code = "approval_refused"


@dataclass(frozen=True)
class Approval:
    id: uuid.UUID
    tenant_id: uuid.UUID
    kind: str
    subject: str
    subject_role: str
    document_id: uuid.UUID | None
    content_hash: str | None
    decision: str | None
    expires_at: dt.datetime


def _key(settings: Settings) -> bytes:
    return hmac.new(settings.jwt_signing_secret().encode(), b"eap approval tokens v1", hashlib.sha256).digest()


def reason_digest(reason: str) -> str:
    return hashlib.sha256(reason.strip().encode()).hexdigest()


def known_steward(session: Session, tenant_id: uuid.UUID, subject: str) -> bool:
    """The subject is an active user of the tenant who holds the steward permission (admins hold it)."""
    row = session.execute(text(
        "SELECT role, permissions, is_active FROM users WHERE tenant_id = CAST(:t AS uuid) AND username = :u"),
        {"t": str(tenant_id), "u": subject}).one_or_none()
    return row is not None and bool(row.is_active) and (row.role == "admin" or "steward" in (row.permissions or []))


def issue(session: Session, *, kind: str, tenant_id: uuid.UUID, subject: str, subject_role: str, reason: str,
          document_id: uuid.UUID | None = None, content_hash: str | None = None, decision: str | None = None,
          classification: int | None = None, settings: Settings | None = None) -> tuple[str, Approval]:
    """Record a single-use approval (in the caller's tenant transaction) and return its signed token.
    The caller has already checked who may ask for it."""
    settings = settings or get_settings()
    if not reason.strip():
        raise InvalidInput("a reason is required", code="reason_required")
    if kind == REVIEW and (document_id is None or not content_hash or decision not in DECISIONS):
        raise InvalidInput("a review token names one document version and a decision", code="invalid_decision")
    if classification is not None and (kind != REVIEW or decision != "approve" or classification not in (1, 2, 3, 4)):
        raise InvalidInput("a class can only be lowered by approving the document", code="invalid_decision")
    if kind == REVIEW and not known_steward(session, tenant_id, subject):
        raise ApprovalRefused("the data steward must be an active user of this tenant with the steward permission",
                              code="steward_not_known")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    approval = Approval(uuid.uuid4(), tenant_id, kind, subject, subject_role, document_id, content_hash, decision,
                        now + dt.timedelta(seconds=TTL_S))
    session.execute(text(
        "INSERT INTO approval_tokens (id, tenant_id, kind, subject, subject_role, document_id, content_hash, decision, "
        "reason_sha256, issued_at, expires_at) VALUES (:id, :t, :kind, :sub, :role, :doc, :sha, :decision, :reason, "
        ":now, :exp)"),
        {"id": approval.id, "t": tenant_id, "kind": kind, "sub": subject, "role": subject_role, "doc": document_id,
         "sha": content_hash, "decision": decision, "reason": reason_digest(reason), "now": now,
         "exp": approval.expires_at})
    claims = {"iss": settings.jwt_issuer, "aud": _AUDIENCE[kind], "sub": subject, "jti": str(approval.id),
              "tid": str(tenant_id), "kind": kind, "role": subject_role, "iat": now, "exp": approval.expires_at,
              "reason_sha256": reason_digest(reason)}
    if kind == REVIEW:
        claims |= {"doc": str(document_id), "sha256": content_hash, "decision": decision}
        if classification is not None:
            claims["class"] = classification  # bound by the signature: the run lowers to exactly this class
    token = jwt.encode(claims, _key(settings), algorithm="HS256")
    audit.record(session, tenant_id=tenant_id, actor=subject, actor_role=subject_role, action=f"approval.issued.{kind}",
                 resource_type="document" if document_id else "dataset",
                 resource_id=str(document_id) if document_id else "finetune",
                 details={"approval_id": str(approval.id), "decision": decision, "sha256": content_hash,
                          "expires_at": approval.expires_at.isoformat(), "lower_to": classification})
    return token, approval


def _claims(token: str, kind: str, settings: Settings) -> dict[str, Any]:
    if not (token or "").strip():
        raise ApprovalRefused("an approval token is required: ask the platform API for one", code="approval_missing")
    try:
        claims = jwt.decode(token.strip(), _key(settings), algorithms=["HS256"], audience=_AUDIENCE[kind],
                            issuer=settings.jwt_issuer, options={"require": _REQUIRED})
        uuid.UUID(str(claims["jti"]))
        uuid.UUID(str(claims["tid"]))
    except jwt.ExpiredSignatureError:
        raise ApprovalRefused("approval token expired: ask for a new one", code="approval_expired") from None
    except (jwt.InvalidTokenError, ValueError) as exc:
        raise ApprovalRefused(f"approval token invalid: {exc}", code="approval_invalid") from None
    if claims.get("kind") != kind:
        raise ApprovalRefused("approval token is for another purpose", code="approval_invalid")
    return claims


def _consume(s: Session, claims: dict[str, Any], kind: str, run_id: str, *, document_id: uuid.UUID | None = None,
             content_hash: str | None = None, decision: str | None = None) -> Approval:
    """Mark the approval used (system identity, caller's transaction); refuses unknown, used or expired ones
    and any whose recorded document version or decision differ."""
    row = s.execute(text(
        "UPDATE approval_tokens SET used_at = now(), used_by_run = :run "
        "WHERE id = CAST(:id AS uuid) AND tenant_id = CAST(:t AS uuid) AND kind = :kind AND used_at IS NULL "
        "AND expires_at > now() AND subject = :sub AND reason_sha256 = :reason "
        "AND document_id IS NOT DISTINCT FROM CAST(:doc AS uuid) AND content_hash IS NOT DISTINCT FROM :sha "
        "AND decision IS NOT DISTINCT FROM :decision "
        "RETURNING id, tenant_id, kind, subject, subject_role, document_id, content_hash, decision, expires_at"),
        {"run": run_id, "id": claims["jti"], "t": claims["tid"], "kind": kind, "sub": claims["sub"],
         "reason": claims["reason_sha256"], "doc": str(document_id) if document_id else None, "sha": content_hash,
         "decision": decision}).one_or_none()
    if row is None:
        raise ApprovalRefused("approval token already used, withdrawn or not issued by this platform",
                              code="approval_used")
    return Approval(*row)


def consume_review(token: str, *, tenant_id: uuid.UUID, document_id: uuid.UUID, content_hash: str, decision: str,
                   reason: str, run_id: str, class_name: str, classification: int | None = None,
                   settings: Settings | None = None) -> Approval:
    """Verify a review token for this document version, decision, reason and (when lowering) target class;
    then, in one system transaction, check the steward is still an active steward of the tenant and not the
    uploader, consume the token, record the decision (and a lowered class) on the document (steward = the
    token's subject) and append `document.review.approved|rejected`. Either all of it happens or none."""
    settings = settings or get_settings()
    claims = _claims(token, REVIEW, settings)
    checks = [(claims.get("tid") == str(tenant_id), "another tenant"),
              (claims.get("doc") == str(document_id), "another document"),
              (claims.get("sha256") == content_hash, "another version of the document (it changed since)"),
              (claims.get("decision") == decision, f"the decision {claims.get('decision')!r}, not {decision!r}"),
              (claims.get("reason_sha256") == reason_digest(reason), "another reason"),
              (claims.get("class") == classification, "another class (or none)")]
    for ok, what in checks:
        if not ok:
            raise ApprovalRefused(f"approval token was issued for {what}", code="approval_mismatch")
    status = "approved" if decision == "approve" else "rejected"
    with system_session() as s:
        approval = _consume(s, claims, REVIEW, run_id, document_id=document_id, content_hash=content_hash,
                            decision=decision)
        if not known_steward(s, tenant_id, approval.subject):
            raise ApprovalRefused(f"{approval.subject!r} is not (any more) an active data steward of this tenant",
                                  code="steward_not_known")
        doc = s.execute(text("SELECT created_by, classification, declared_classification FROM documents "
                             "WHERE id = CAST(:d AS uuid) AND tenant_id = CAST(:t AS uuid)"),
                        {"d": str(document_id), "t": str(tenant_id)}).one_or_none()
        if doc is not None and doc.created_by is not None and doc.created_by == approval.subject:
            raise ApprovalRefused("the uploader cannot review their own document", code="own_document")
        lowered: dict[str, Any] = {}
        if classification is not None and doc is not None:
            if not doc.declared_classification <= classification < doc.classification:
                raise ApprovalRefused(
                    f"class {classification} is not below the detected class {doc.classification} and at or above "
                    f"the declared class {doc.declared_classification}", code="invalid_class")
            lowered = {"lowered_from": doc.classification, "lowered_to": classification}
            s.execute(text(
                "UPDATE documents SET classification = :c, classification_reasons = classification_reasons || "
                "CAST(:r AS jsonb) WHERE id = CAST(:d AS uuid) AND tenant_id = CAST(:t AS uuid)"),
                {"c": classification, "d": str(document_id), "t": str(tenant_id),
                 "r": json.dumps([{"detector": "steward", "class": CLASS_NAMES[classification],
                                   "from": CLASS_NAMES[doc.classification], "by": approval.subject,
                                   "reason": reason.strip()}])})
            audit.record(s, tenant_id=tenant_id, actor=approval.subject, actor_role="data_steward",
                         action="document.classification_lowered", resource_type="document",
                         resource_id=str(document_id),
                         details={"from": CLASS_NAMES[doc.classification], "to": CLASS_NAMES[classification],
                                  "reason": reason.strip(), "sha256": content_hash, "approval_id": str(approval.id),
                                  "run_id": run_id})
        updated = rowcount(s.execute(text(
            "UPDATE documents SET review_status = :st, reviewed_by = :who, reviewed_at = now(), review_reason = :why, "
            "reviewed_hash = content_hash, updated_at = now() "
            "WHERE id = CAST(:d AS uuid) AND tenant_id = CAST(:t AS uuid) AND content_hash = :sha"),
            {"st": status, "who": approval.subject, "why": reason.strip(), "d": str(document_id),
             "t": str(tenant_id), "sha": content_hash}))
        if updated != 1:
            raise ApprovalRefused("the document changed or was deleted since the token was issued",
                                  code="approval_mismatch")
        audit.record(s, tenant_id=tenant_id, actor=approval.subject, actor_role="data_steward",
                     action=f"document.review.{status}", resource_type="document", resource_id=str(document_id),
                     details={"reason": reason.strip(), "sha256": content_hash, "class": class_name,
                              "approval_id": str(approval.id), "steward_role": approval.subject_role,
                              "run_id": run_id, **lowered})
    return approval


def consume_export(token: str, *, reason: str, run_id: str, settings: Settings | None = None) -> Approval:
    """Verify and consume a fine-tuning export token; the export is limited to the token's tenant."""
    settings = settings or get_settings()
    claims = _claims(token, EXPORT, settings)
    if claims.get("reason_sha256") != reason_digest(reason):
        raise ApprovalRefused("approval token was issued for another reason", code="approval_mismatch")
    with system_session() as s:
        approval = _consume(s, claims, EXPORT, run_id)
        audit.record(s, tenant_id=approval.tenant_id, actor=approval.subject, actor_role=approval.subject_role,
                     action="dataset.export.finetune.approved", resource_type="dataset", resource_id="finetune",
                     details={"approval_id": str(approval.id), "run_id": run_id})
    return approval
