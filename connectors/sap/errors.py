"""The errors of the SAP connector. Every one is a SAPError (SAP unreachable, 502, after the retries), so a
caller can catch them all; the refusals are also the platform's own error kinds (a 4xx with an OData
error message): SAPRejected is an InvalidInput (422), SAPNotFound a NotFound (404) and
SAPPreconditionFailed a Conflict (409), with their status codes from core/errors.py.
"""

from __future__ import annotations

from core.errors import Conflict, InvalidInput, NotFound, PlatformError


class SAPError(PlatformError):
    """SAP could not be reached or did not answer in time (after the retries)."""

    code = "sap_unavailable"
    status_code = 502


class SAPBadResponse(SAPError):
    """Garbage, an HTML logon page, a partial page or a record that does not validate: never data."""

    code = "sap_bad_response"


class SAPAuthFailed(SAPError):
    """The logon failed (HTTP 401): not retried."""

    code = "sap_auth_failed"


class SAPRejected(InvalidInput, SAPError):
    """SAP refused the request (4xx with an OData error message): not retried."""

    code = "sap_rejected"


class SAPNotFound(NotFound, SAPRejected):
    """The record or entity set does not exist in SAP."""

    code = "sap_not_found"


class SAPPreconditionFailed(Conflict, SAPRejected):
    """The record changed since it was read (ETag mismatch): the write was not applied."""

    code = "sap_precondition_failed"
