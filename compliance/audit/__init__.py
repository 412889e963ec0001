"""The audit trail: append-only, per-tenant chains that prove themselves with a key the database never sees.

Writing. There is one way in, the SQL function `audit_append` (SECURITY DEFINER, migrations 0012/0017): it
takes the chain's advisory lock (`pg_advisory_xact_lock`, held until the transaction ends), stamps id and
time, computes the unkeyed SHA-256 link (`hash` over the content and the previous row's hash) and inserts
the row. It refuses a tenant other than the session's and the decision events only the pipeline writes.
`record` then, *in the same transaction and so still under that lock*, computes the row's keyed MAC

    mac_n = HMAC-SHA256(K_mac[key_id], canonical(v, key_id, prev_mac, seq, id, tenant, ts, prev_hash, hash,
                                                 actor_role, action, resource_type, outcome,
                                                 ref(actor), ref(resource_id), ref(details)))

and seals the row with `audit_seal(id, key_id, mac)`, which refuses anything but the unsealed head of the
caller's own chain. Because the lock is held from the append to the commit, no other writer of that chain
can append between the two statements, so `prev_mac` (returned by `audit_append` under the lock) is the MAC
of the row directly before: the keyed chain is exactly as serial as the unkeyed one. Both statements run in
the caller's transaction; a rollback removes both. The SQL side never sees the key, and nothing in the
database can compute a MAC: a superuser who edits, deletes, reorders or inserts rows and recomputes every
unkeyed hash still cannot produce MACs that verify.

Keys. `EAP_AUDIT_KEY_FILE` (default EAP_HOME/secrets/audit_keys.json, 0600, created on first use) holds
`{"active": kid, "keys": {kid: secret}}`. `rotate_key()` adds a key and makes it active; old keys stay for
verification. Each row records the key id it was sealed with (the chain continues across a rotation:
mac_n covers mac_{n-1} whatever key made it). Three keys are derived from each secret: for MACs, for field
references and for checkpoint signatures.

Field references and GDPR. The MAC covers `actor`, `resource_id` and `details` through keyed references
(HMAC of the value) rather than the values themselves. A GDPR erasure replaces such a value by the marker
`erased:<ref>` (`{"erased": "<ref>"}` for details; `pseudonymise`, through the pipeline-only SQL function
`audit_redact`): the record stays, its MAC still verifies, and the person's identifier is gone. Without the
key nobody can link a marker to a person or forge one that verifies. The unkeyed hash of a redacted row no
longer matches (it covered the original); verification skips that check for redacted rows only.

Checkpoints and truncation. A chain whose newest rows are deleted is still internally consistent, so the
Dagster asset `audit_checkpoint` periodically signs each chain's head (seq, hash, MAC, count) and writes it
to an append-only file store outside the database (EAP_AUDIT_CHECKPOINT_DIR, one file per checkpoint, created
exclusively, never rewritten) and records an `audit.checkpoint` event. Verification requires every
checkpoint's row to be present with the same hash and MAC: removing rows up to and including a checkpointed
head is detected. Rows appended after the newest checkpoint can be removed undetected until the next one;
the checkpoint interval bounds that window.

Retention. Rows past their retention period are purged from the oldest end only (`purge_before`): the last
purged row's seq, hash and MAC become a signed anchor (`audit_anchors`) from which verification starts, and
the pipeline-only SQL function `audit_purge` deletes up to it (never the head). A forged anchor fails its
signature.

Rows written before 0017 carry no MAC (hash_alg 1: hashed here; 2: hashed in SQL); they verify by their
unkeyed hash as a prefix of the chain, and the first sealed row's MAC covers the last of them.

The platform chain (tenant_id NULL) holds denials no tenant can be attached to, e.g. a request without valid
credentials; only the owner role can read it.
"""
# The package: keys.py (the key file), chain.py (hash, MAC, references, signatures), writer.py (record …),
# checkpoints.py, verification.py, records.py (list, pseudonymise, purge). `from compliance import audit` is the API.

from compliance.audit.chain import MAC_VERSION, MARKER, _digest, chain_name, field_ref
from compliance.audit.checkpoints import Checkpoint, checkpoint_dir, read_checkpoints, write_checkpoint
from compliance.audit.keys import AuditKeys, key_file, load_keys, rotate_key
from compliance.audit.records import EventFilter, PurgeResult, list_events, pseudonym, pseudonymise, purge_before
from compliance.audit.verification import ChainBreak, VerifyResult, chains, verify, verify_all, verify_chain
from compliance.audit.writer import (
    Actor,
    bind_actor,
    record,
    record_detached,
    record_failure,
    record_restricted_read,
    unbind_actor,
)

__all__ = [
    "MAC_VERSION", "MARKER", "Actor", "AuditKeys", "ChainBreak", "Checkpoint", "EventFilter", "PurgeResult",
    "VerifyResult", "_digest", "bind_actor", "chain_name", "chains", "checkpoint_dir", "field_ref", "key_file",
    "list_events", "load_keys", "pseudonym", "pseudonymise", "purge_before", "read_checkpoints", "record",
    "record_detached", "record_failure", "record_restricted_read", "rotate_key", "unbind_actor", "verify",
    "verify_all", "verify_chain", "write_checkpoint",
]
