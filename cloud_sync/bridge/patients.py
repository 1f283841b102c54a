"""Patient references from the pseudonym a gateway's batches carry, resolved through a configurable lookup.

The gateway never sends a patient's identity, only the pseudonym its configuration binds a device to.  The bridge
turns it into a FHIR Reference: the entry of a mapping file (`{"pt-ZX81Q": "Patient/123"}`, kept by whoever
enrols patients) where there is one, else a logical reference by identifier (`Reference.identifier` with the
configured system and the pseudonym as value), which a FHIR server or a later reconciliation resolves.  Without
a pseudonym there is no subject (device data not bound to a patient).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.core.errors import ConfigError

DEFAULT_SYSTEM = "urn:iomt-gateway:patient-pseudonym"
_REFERENCE = re.compile(r"^Patient/[A-Za-z0-9\-.]{1,64}$")


class PatientDirectory:
    """pseudonym -> FHIR Reference (a mapped `Patient/id`, else a logical reference by identifier)."""

    def __init__(self, system: str = DEFAULT_SYSTEM, mapping: Mapping[str, str] | None = None) -> None:
        self.system = system
        self.mapping = dict(mapping or {})
        for reference in self.mapping.values():
            if not isinstance(reference, str) or not _REFERENCE.match(reference):
                raise ConfigError("patient map: every value must be a reference of the form Patient/<id>")

    @classmethod
    def from_file(cls, path: Path, system: str = DEFAULT_SYSTEM) -> PatientDirectory:
        """A JSON object file of pseudonym -> "Patient/<id>"; ConfigError naming the problem, never a value."""
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError("patient map: cannot read it as a JSON object", error=type(err).__name__) from None
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise ConfigError("patient map: the file must hold one JSON object of pseudonym -> Patient/<id>")
        return cls(system, data)

    def __call__(self, pseudonym: str | None) -> dict[str, Any] | None:
        if not pseudonym:
            return None
        mapped = self.mapping.get(pseudonym)
        if mapped is not None:
            return {"reference": mapped}
        return {"identifier": {"system": self.system, "value": pseudonym}}
