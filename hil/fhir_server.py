"""A small FHIR R4 server for tests and `bench bridge`: transactions with conditional create, validated by others' code.

No FHIR server installs from the package registries reachable here (HAPI FHIR's JPA server is built from its
starter project, not published as a runnable package; Medplum needs PostgreSQL and Redis), so the bridge is
tested against this one.  It does what the bridge relies on a real server for, and checks it independently:

- `POST [base]` with a transaction Bundle, all or nothing: each entry `POST Type` with `ifNoneExist:
  identifier=system|value` creates the resource unless one with that identifier exists (answered 200, not
  201); `urn:uuid:` references are rewritten to the resources created or found; a reference to a resource that
  does not exist, an entry it does not support or a resource that fails validation refuses the whole Bundle
  (400 with an OperationOutcome);
- every stored resource validates with `fhir.resources` (the R4B models) when it is installed (`validating`);
- `GET [base]/Type/id`, `GET [base]/Type?identifier=system|value`, `GET [base]/metadata`;
- faults on demand (`fail_next`: answer the next requests with a status) for the bridge's retry paths.

It never trusts the client to be idempotent: a Bundle without `ifNoneExist` creates a duplicate, and
`duplicates()` counts resources that share an identifier, which is how the tests and the bench see duplicates.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Validator = Callable[[dict[str, Any]], None]


def fhir_resources_validator() -> Validator | None:
    """A validator built on fhir.resources' R4B models, or None when the package is not installed."""
    try:
        from fhir.resources.R4B import get_fhir_model_class  # noqa: PLC0415 - optional: a test/dev dependency
    except ImportError:
        return None

    def validate(resource: dict[str, Any]) -> None:
        model = get_fhir_model_class(str(resource.get("resourceType")))
        model.model_validate({k: v for k, v in resource.items() if k != "resourceType"})

    return validate


class Refused(Exception):
    """A transaction the server refuses: HTTP status and an OperationOutcome issue code."""

    def __init__(self, status: int, code: str, diagnostics: str) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics


def _outcome(code: str, diagnostics: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }


def _references(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


class FhirStore:
    """The resources, by type and id, with an identifier index; thread-safe, one transaction at a time."""

    def __init__(self, *, validate: bool = True) -> None:
        self.validator = fhir_resources_validator() if validate else None
        self.resources: dict[str, dict[str, dict[str, Any]]] = collections.defaultdict(dict)
        self._index: dict[tuple[str, str, str], str] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._faults: collections.deque[int] = collections.deque()
        self.transactions = 0
        self.created = 0
        self.matched = 0  # conditional creates that found their resource
        self.refused = 0
        self.faults_served = 0

    @property
    def validating(self) -> bool:
        return self.validator is not None

    def fail_next(self, status: int, count: int = 1) -> None:
        with self._lock:
            self._faults.extend([status] * count)

    def take_fault(self) -> int | None:
        with self._lock:
            if self._faults:
                self.faults_served += 1
                return self._faults.popleft()
        return None

    def of_type(self, resource_type: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.resources.get(resource_type, {}).values())

    def count(self, resource_type: str) -> int:
        with self._lock:
            return len(self.resources.get(resource_type, {}))

    def seed(self, resource: dict[str, Any]) -> str:
        """Store a resource as an EHR would already hold it (a Patient the bridge refers to); its reference."""
        with self._lock:
            ident = str(resource.get("id") or next(self._ids))
            resource_type = str(resource["resourceType"])
            self.resources[resource_type][ident] = {**resource, "id": ident}
            return f"{resource_type}/{ident}"

    def get(self, reference: str) -> dict[str, Any] | None:
        resource_type, _, ident = reference.partition("/")
        with self._lock:
            return self.resources.get(resource_type, {}).get(ident)

    def find(self, resource_type: str, system: str, value: str) -> dict[str, Any] | None:
        with self._lock:
            ident = self._index.get((resource_type, system, value))
            return None if ident is None else self.resources[resource_type][ident]

    def duplicates(self) -> int:
        """Resources beyond the first that share a (type, identifier system, value)."""
        seen: collections.Counter[tuple[str, str, str]] = collections.Counter()
        with self._lock:
            for resource_type, by_id in self.resources.items():
                for resource in by_id.values():
                    for identifier in resource.get("identifier", []):
                        seen[(resource_type, str(identifier.get("system")), str(identifier.get("value")))] += 1
        return sum(n - 1 for n in seen.values() if n > 1)

    def _lookup(self, resource_type: str, query: str) -> tuple[str, str]:
        params = parse_qs(query, keep_blank_values=True)
        if set(params) != {"identifier"} or len(params["identifier"]) != 1 or "|" not in params["identifier"][0]:
            raise Refused(400, "not-supported", "ifNoneExist supports identifier=system|value only")
        system, _, value = params["identifier"][0].partition("|")
        return system, value

    def transaction(self, bundle: Any) -> dict[str, Any]:
        """Apply a transaction Bundle all or nothing; its transaction-response Bundle, or Refused."""
        if (
            not isinstance(bundle, dict)
            or bundle.get("resourceType") != "Bundle"
            or bundle.get("type") != "transaction"
        ):
            raise Refused(400, "invalid", "not a transaction Bundle")
        entries = bundle.get("entry")
        if not isinstance(entries, list):
            raise Refused(400, "invalid", "a transaction Bundle needs entries")
        with self._lock:
            self.transactions += 1
            try:
                return self._apply(entries)
            except Refused:
                self.refused += 1
                raise

    def _apply(self, entries: list[Any]) -> dict[str, Any]:
        targets: dict[str, str] = {}  # fullUrl -> Type/id
        plan: list[tuple[str, str, dict[str, Any] | None]] = []  # (type, id, resource to create or None)
        pending: dict[tuple[str, str, str], str] = {}
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
                raise Refused(400, "invalid", "an entry without a resource")
            resource = json.loads(json.dumps(entry["resource"]))
            request = entry.get("request") or {}
            resource_type = resource.get("resourceType")
            if (
                request.get("method") != "POST"
                or request.get("url") != resource_type
                or not isinstance(resource_type, str)
            ):
                raise Refused(400, "not-supported", "only POST Type entries are supported")
            existing: str | None = None
            if isinstance(request.get("ifNoneExist"), str):
                key = (resource_type, *self._lookup(resource_type, request["ifNoneExist"]))
                existing = self._index.get(key) or pending.get(key)
            if existing is None:
                ident = str(next(self._ids))
                resource["id"] = ident
                resource["meta"] = {"versionId": "1"}
                plan.append((resource_type, ident, resource))
                for identifier in resource.get("identifier", []):
                    if isinstance(identifier, dict):
                        pending[(resource_type, str(identifier.get("system")), str(identifier.get("value")))] = ident
            else:
                plan.append((resource_type, existing, None))
            full_url = entry.get("fullUrl")
            if isinstance(full_url, str):
                targets[full_url] = f"{resource_type}/{plan[-1][1]}"
        new = {(t, i) for t, i, r in plan if r is not None}
        for resource_type, _ident, resource in plan:
            if resource is None:
                continue
            for reference in _references(resource):
                ref = reference["reference"]
                if ref in targets:
                    reference["reference"] = targets[ref]
                    continue
                ref_type, _, ref_id = ref.partition("/")
                if ref.startswith("urn:") or (
                    ref_id not in self.resources.get(ref_type, {}) and (ref_type, ref_id) not in new
                ):
                    raise Refused(400, "not-found", "a reference to a resource that does not exist")
            if self.validator is not None:
                try:
                    self.validator(resource)
                except Exception as err:  # noqa: BLE001 - any validation failure refuses the Bundle
                    raise Refused(400, "invalid", f"{resource_type} fails validation: {type(err).__name__}") from None
        response = []
        for resource_type, ident, resource in plan:
            if resource is None:
                self.matched += 1
                response.append({"response": {"status": "200 OK", "location": f"{resource_type}/{ident}/_history/1"}})
                continue
            self.resources[resource_type][ident] = resource
            for identifier in resource.get("identifier", []):
                self._index.setdefault(
                    (resource_type, str(identifier.get("system")), str(identifier.get("value"))), ident
                )
            self.created += 1
            response.append({"response": {"status": "201 Created", "location": f"{resource_type}/{ident}/_history/1"}})
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": response}


BASE_PATH = "/fhir"


def _local_path(target: str) -> str:
    path = urlsplit(target).path
    return path[len(BASE_PATH) :] if path.startswith(BASE_PATH) else path


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # an idle keep-alive connection's thread ends after this
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        store = self.server.store
        fault = store.take_fault()
        if fault is not None:
            self._send(fault, _outcome("transient" if fault >= 500 else "invalid", "injected fault"))
            return
        if _local_path(self.path).strip("/") != "":
            self._send(404, _outcome("not-supported", "transactions are posted to the base URL"))
            return
        try:
            self._send(200, store.transaction(json.loads(body)))
        except json.JSONDecodeError:
            self._send(400, _outcome("structure", "body is not JSON"))
        except Refused as err:
            self._send(err.status, _outcome(err.code, err.diagnostics))

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = _local_path(self.path).strip("/").split("/")
        store = self.server.store
        if path == ["metadata"]:
            self._send(
                200,
                {"resourceType": "CapabilityStatement", "status": "active", "fhirVersion": "4.0.1", "kind": "instance"},
            )
        elif len(path) == 2:
            found = store.get("/".join(path))
            self._send(200, found) if found else self._send(404, _outcome("not-found", "no such resource"))
        elif len(path) == 1 and "identifier" in parse_qs(parts.query):
            system, _, value = parse_qs(parts.query)["identifier"][0].partition("|")
            hit = store.find(path[0], system, value)
            entries = [{"resource": hit}] if hit else []
            self._send(200, {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries})
        else:
            self._send(400, _outcome("not-supported", "unsupported read"))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a worker stopped or killed) is not an error of the server."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def __init__(self, address: tuple[str, int], store: FhirStore) -> None:
        super().__init__(address, _Handler)
        self.store = store


class FhirTestServer:
    """The server on a loopback port, in a thread: `with FhirTestServer() as server: server.base_url`."""

    def __init__(self, store: FhirStore | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.store = store or FhirStore()
        self._server = _Server((host, port), self.store)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fhir-test-server", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{BASE_PATH}"

    def start(self) -> FhirTestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> FhirTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_fhir_server(*, validate: bool = True) -> Iterator[FhirTestServer]:
    with FhirTestServer(FhirStore(validate=validate)) as server:
        yield server
