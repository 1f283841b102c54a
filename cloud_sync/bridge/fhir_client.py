"""A FHIR R4 client for transaction Bundles (httpx), with the server's answers sorted into retry or park.

- 200 with a transaction-response Bundle: delivered; each entry's status says created (201) or already there
  (200, the conditional create matched: a redelivery).
- 4xx other than 408 and 429: the server refuses this content for good -> `TargetRejected` (parked).  Only the
  OperationOutcome's issue codes are kept, never its diagnostics (they may quote the content).
- 408, 429, 5xx, timeouts and connection errors -> `TargetUnavailable` (retried with backoff).  A 500 for the
  same message `max_server_errors` times in a row is taken as the content's fault -> parked.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from cloud_sync.bridge.errors import TargetRejected, TargetUnavailable

FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True, slots=True)
class TransactionResult:
    created: int
    existing: int


def _issue_codes(response: httpx.Response) -> str:
    try:
        outcome = response.json()
        issues = outcome.get("issue", []) if isinstance(outcome, dict) else []
        codes = sorted({str(i.get("code")) for i in issues if isinstance(i, dict)})
    except (ValueError, AttributeError):
        return "none"
    return ",".join(codes)[:100] or "none"


class FhirClient:
    """POSTs transaction Bundles to a FHIR base URL; one connection pool per client."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 30.0,
        verify: ssl.SSLContext | bool = True,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            timeout=timeout_s,
            verify=verify,
            headers={"Accept": FHIR_JSON, "Content-Type": FHIR_JSON, **(headers or {})},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def transaction(self, bundle: dict[str, Any]) -> TransactionResult:
        body = json.dumps(bundle, separators=(",", ":"), allow_nan=False).encode()
        try:
            response = await self._http.post(self.base_url + "/", content=body)
        except httpx.TimeoutException:
            raise TargetUnavailable("FHIR server timed out", reason="timeout") from None
        except httpx.HTTPError as err:
            raise TargetUnavailable("FHIR server unreachable", reason="connection", error=type(err).__name__) from None
        status = response.status_code
        if status in (408, 429) or status >= 500:
            raise TargetUnavailable("FHIR server did not take the bundle", reason=f"http-{status}", status=status)
        if 400 <= status < 500:
            raise TargetRejected(
                "FHIR server refused the bundle", reason=f"http-{status}:{_issue_codes(response)}", status=status
            )
        if status != 200:
            raise TargetUnavailable("unexpected FHIR answer to a transaction", reason=f"http-{status}", status=status)
        try:
            reply = response.json()
            entries = reply["entry"]
            statuses = [str(e["response"]["status"]).split(" ", 1)[0] for e in entries]
        except (ValueError, KeyError, TypeError):
            raise TargetUnavailable("FHIR transaction response is not a Bundle", reason="bad-response") from None
        if len(statuses) != len(bundle["entry"]) or any(s not in ("200", "201") for s in statuses):
            raise TargetUnavailable("FHIR transaction response does not match the request", reason="bad-response")
        return TransactionResult(created=statuses.count("201"), existing=statuses.count("200"))
