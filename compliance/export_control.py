"""Export control: the vocabulary that marks export-controlled content, and the policy for answers.

The classifier (compliance/classification.py) uses `EXPORT_CONTROL` to raise a document that names an
export-control regime (EU dual-use, US EAR/ITAR) to Class IV. Reading such a document is the access rule's
business (role ceiling, need-to-know, steward approval); *passing it on in an answer* is export control's:
a person may be allowed to open a document and still not be a permitted recipient of controlled technical
data (a deemed export). So every answer, on every path (POST /v1/chat JSON and SSE, `eap ask`, and anything
else built on agents/chat.py), goes through one guard (agents/export_guard.py) that applies `decide`:

- `pass`: the answer names no export-control term and cites no export-controlled document;
- `released`: it does, and the caller is cleared (a member of one of `EAP_EXPORT_CLEARED_GROUPS`,
  default `export-cleared`: the people the customer's export-compliance programme has cleared);
- `redacted`: the caller is not cleared, and the statements that name a term or cite a controlled
  document were removed (the rest of the answer stands);
- `withheld`: nothing was left after removing them; the answer is a notice instead.

The decision, the terms found (vocabulary only, never document text), the controlled documents and the
number of removed statements are a step of the answer's trace (`COMPLIANCE.export_control`).
Detection reads text folded by `compliance.normalise` (full-width or look-alike letters do not hide a term).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from compliance.normalise import fold

# Export-control vocabulary (EU dual-use, US EAR/ITAR).
EXPORT_CONTROL = re.compile(
    r"\b(?:ITAR|EAR99|ECCN\s*[:#]?\s*\d[A-E]\d{3}|dual[\s-]use|export[\s-]control(?:led)?|"
    r"Wassenaar|Regulation\s*\(EU\)\s*2021/821|USML\s+Category)\b",
    re.I,
)
PASS, RELEASED, REDACTED, WITHHELD = "pass", "released", "redacted", "withheld"
WITHHELD_NOTICE = ("Withheld by the export-control guard: the answer consists of export-controlled content and you "
                   "are not cleared to receive it. Ask your export-control officer.")
REDACTED_NOTICE = "Notice: export-controlled statements were removed from this answer (you are not cleared for them)."


def terms_in(value: str) -> list[str]:
    """The export-control terms in a text (as folded, upper-cased, unique, in order of appearance)."""
    out: list[str] = []
    for m in EXPORT_CONTROL.finditer(fold(value)):
        term = " ".join(m.group(0).upper().split())
        if term not in out:
            out.append(term)
    return out


def is_cleared(groups: Iterable[str], cleared_groups: Sequence[str]) -> bool:
    return bool(set(groups) & set(cleared_groups))


def controlled_documents(session: Session, document_ids: Iterable[uuid.UUID | str]) -> set[str]:
    """Those of the documents whose classification names an export-control finding (the classifier's
    `export_control` detector), under the caller's RLS."""
    ids = sorted({str(d) for d in document_ids})
    if not ids:
        return set()
    rows = session.execute(text(
        "SELECT id::text FROM documents WHERE id = ANY(CAST(:ids AS uuid[])) "
        "AND classification_reasons @> CAST(:probe AS jsonb)"),
        {"ids": ids, "probe": '[{"detector": "export_control"}]'}).scalars().all()
    return set(rows)


@dataclass
class Decision:
    decision: str
    cleared: bool
    terms: list[str] = field(default_factory=list)
    controlled_documents: list[str] = field(default_factory=list)
    removed: int = 0

    def as_trace(self) -> dict[str, Any]:
        return {"decision": self.decision, "cleared": self.cleared, "terms": self.terms,
                "controlled_documents": self.controlled_documents, "removed": self.removed}


def decide(*, cleared: bool, terms: Sequence[str], controlled: Sequence[str], removed: int, left: bool) -> Decision:
    """The guard's decision once it has looked at an answer (see the module docstring)."""
    if not terms and not controlled:
        return Decision(PASS, cleared)
    if cleared:
        return Decision(RELEASED, cleared, list(terms), list(controlled))
    return Decision(REDACTED if left else WITHHELD, cleared, list(terms), list(controlled), removed)


def scrub(value: Any) -> Any:
    """A JSON value with every string that names an export-control term replaced (for reasoning and
    tool results shown to a caller who is not cleared)."""
    if isinstance(value, str):
        return "[withheld: export-controlled]" if EXPORT_CONTROL.search(fold(value)) else value
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value
