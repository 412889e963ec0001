"""The connection to one SAP system: its configuration (from a tenant's `sap` settings and a password
variable) and the `requests` session pyodata sends through (a timeout on every request, the `sap-client`
on every URL), and the message of an OData v2 error body.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import requests

from connectors.sap.errors import SAPError


@dataclass(frozen=True)
class SAPConfig:
    base_url: str
    username: str
    password: str = field(repr=False)
    sap_client: str | None = None
    timeout_s: float = 10.0
    retries: int = 2
    backoff_s: float = 0.2
    max_pages: int = 200  # a server that pages forever is an error, not a hang

    @classmethod
    def from_tenant(cls, cfg: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> SAPConfig:
        """From a tenant's `sap` settings. The password is never stored there: `password_env` names the
        environment variable (a deployment secret) that holds it (default EAP_SAP_PASSWORD)."""
        env = os.environ if environ is None else environ
        var = str(cfg.get("password_env") or "EAP_SAP_PASSWORD")
        password = env.get(var)
        if not cfg.get("base_url") or not cfg.get("username"):
            raise SAPError("the tenant's SAP connection needs base_url and username", code="sap_not_configured")
        if password is None:
            raise SAPError(f"the SAP password variable {var} is not set", code="sap_not_configured")
        return cls(base_url=str(cfg["base_url"]).rstrip("/"), username=str(cfg["username"]), password=password,
                   sap_client=str(cfg["sap_client"]) if cfg.get("sap_client") else None,
                   timeout_s=float(cfg.get("timeout_s", 10)), retries=int(cfg.get("retries", 2)),
                   backoff_s=float(cfg.get("backoff_s", 0.2)))


class SAPSession(requests.Session):
    """A requests session with a timeout on every request and the sap-client on every URL (pyodata
    passes its own query string, which would replace session-level params)."""

    def __init__(self, timeout_s: float, sap_client: str | None) -> None:
        super().__init__()
        self.timeout_s, self.sap_client = timeout_s, sap_client

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout_s)
        method = method.decode() if isinstance(method, bytes) else method
        url = url.decode() if isinstance(url, bytes) else url
        if self.sap_client and "sap-client=" not in url:
            parts = urlsplit(url)
            query = "&".join(p for p in (parts.query, urlencode({"sap-client": self.sap_client})) if p)
            url = urlunsplit(parts._replace(query=query))
        return super().request(method, url, *args, **kwargs)


def odata_error_message(resp: Any) -> str:
    """The message of an OData v2 error body, or the start of the body."""
    try:
        body = json.loads(resp.content)
        return str(body["error"]["message"]["value"])[:300]
    except (ValueError, KeyError, TypeError):
        text = (resp.content or b"")[:200].decode("utf-8", "replace").strip()
        return text or f"HTTP {resp.status_code}"

