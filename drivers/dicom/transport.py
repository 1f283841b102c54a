"""The DICOM transport: a Storage SCP or a drop folder feeding the images lane; its section and its intake."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from drivers.base import Driver
from drivers.transport import BuildContext, DeviceSection, Transport, server_tls
from gateway.core.settings import SecretRef


class DicomDeviceSection(DeviceSection):
    """A DICOM intake: a Storage SCP (`listen://HOST:PORT`) or a watched drop folder (`folder:///ABS/PATH`).

    With `deidentify`, objects are de-identified (PS3.15 Basic Profile) before they are stored, with the
    device's `patient` binding as the pseudonymous patient id; `deidentify_key` (a secret file) keys the
    consistent UID replacement.  `tls_cert`/`tls_key` make the SCP speak DICOM over TLS.
    """

    transport: Literal["dicom"]
    secret_fields: ClassVar[tuple[str, ...]] = ("deidentify_key", "tls_cert", "tls_key")
    profile: Literal["storage_scp", "drop_folder"]
    address: Annotated[str, Field(pattern=r"^(listen://[A-Za-z0-9_.-]+:[0-9]{1,5}|folder:///[^\s]*)$")]
    ae_title: Annotated[str, Field(pattern=r"^[ -\[\]-~]{1,16}$")] = "IOMT_GW"
    # Calling AE titles allowed to associate.  Required for a storage_scp unless allow_any_calling_ae = true:
    # an SCP that anyone on the network may store to must be a deliberate choice.
    allowed_calling_aes: Annotated[tuple[str, ...], Field(strict=False)] = ()
    allow_any_calling_ae: bool = False
    # The SCP's idle/size discipline: an association idle this long is released (network timeout), at most this
    # many associations at once and per calling address.
    idle_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    max_associations: Annotated[int, Field(ge=1, le=32)] = 4
    max_associations_per_source: Annotated[int, Field(ge=1, le=32)] = 2
    deidentify: bool = False
    deidentify_key: SecretRef | None = None
    tls_cert: SecretRef | None = None
    tls_key: SecretRef | None = None
    chunk_bytes: Annotated[int, Field(ge=4096, le=100_000)] = 64 * 1024

    @model_validator(mode="after")
    def _consistent(self) -> DicomDeviceSection:
        if (self.profile == "drop_folder") != self.address.startswith("folder://"):
            raise ValueError("a storage_scp listens (listen://HOST:PORT); a drop_folder watches (folder:///PATH)")
        if self.profile == "storage_scp" and not self.allowed_calling_aes and not self.allow_any_calling_ae:
            raise ValueError("a storage_scp needs allowed_calling_aes (or allow_any_calling_ae = true, deliberately)")
        if self.deidentify and self.deidentify_key is None:
            raise ValueError("deidentify needs deidentify_key (a secret file keying the UID replacement)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self

    def default_silent_after_s(self) -> float:
        return 24 * 3600.0  # imaging arrives when a study is done: a day

    def waits_for_sender(self) -> bool:
        return True

    def message_size_problem(self, max_message_bytes: int) -> str | None:
        if self.chunk_bytes + 8192 > max_message_bytes:
            return f"device {self.id}: chunk_bytes must leave 8192 bytes of room under mqtt.max_message_bytes"
        return None


def build(device: DicomDeviceSection, context: BuildContext) -> Driver:
    from drivers.dicom.deidentify import Deidentifier  # noqa: PLC0415 - pydicom only when DICOM is configured
    from drivers.dicom.intake import DicomIntakeDriver  # noqa: PLC0415

    deidentifier = None
    if device.deidentify and device.deidentify_key is not None:
        deidentifier = Deidentifier(context.secret_path(device.deidentify_key).read_bytes())
    return DicomIntakeDriver(
        device.id,
        device.address,
        ae_title=device.ae_title,
        allowed_calling_aes=device.allowed_calling_aes,
        deidentifier=deidentifier,
        pseudonym=device.patient,
        chunk_bytes=device.chunk_bytes,
        ssl_context=server_tls(context.secret_path, device.tls_cert, device.tls_key, None),
        # Sealed, with per-object keys that die with the process; wiped at start.
        spool_dir=(context.state_dir or Path(tempfile.gettempdir())) / "dicom-spool",
        idle_timeout_s=device.idle_timeout_s,
        max_associations=device.max_associations,
        max_associations_per_source=device.max_associations_per_source,
    )


TRANSPORT = Transport("dicom", DicomDeviceSection, build)
