"""A simulated point-of-care modality: a pynetdicom Storage SCU that sends studies (and broken ones).

`send` opens one association, proposes a presentation context per object (its SOP class, in its own transfer
syntax), sends each object with C-STORE and returns each status (None for every object when the association
itself is rejected, e.g. a calling AE title the gateway does not allow).  `echo` is a technician's C-ECHO.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path

from pydicom import Dataset, dcmread
from pynetdicom import AE

logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def _load(item: Path | bytes | Dataset) -> Dataset:
    if isinstance(item, Dataset):
        return item
    if isinstance(item, bytes):
        return dcmread(BytesIO(item), force=True)
    return dcmread(item, force=True)


def send(
    host: str,
    port: int,
    objects: Sequence[Path | bytes | Dataset],
    *,
    calling_ae: str = "POC_US_CART",
    called_ae: str = "IOMT_GW",
    ssl_context: ssl.SSLContext | None = None,
) -> list[int | None]:
    """C-STORE each object over one association; the status of each (None: not sent)."""
    datasets = [_load(o) for o in objects]
    ae = AE(ae_title=calling_ae)
    contexts = {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}
    for sop_class, syntax in sorted(contexts):
        ae.add_requested_context(sop_class, syntax)
    tls = (ssl_context, host) if ssl_context is not None else None
    assoc = ae.associate(host, port, ae_title=called_ae, tls_args=tls)
    if not assoc.is_established:
        _close_failed(assoc)
        return [None] * len(datasets)
    statuses: list[int | None] = []
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            statuses.append(int(status.Status) if "Status" in status else None)
    finally:
        assoc.release()
    return statuses


async def send_async(
    host: str, port: int, objects: Sequence[Path | bytes | Dataset], **kwargs: object
) -> list[int | None]:
    return await asyncio.to_thread(send, host, port, objects, **kwargs)  # type: ignore[arg-type]


def echo(host: str, port: int, *, calling_ae: str = "TECHNICIAN", called_ae: str = "IOMT_GW") -> int | None:
    """A C-ECHO (Verification): the status, or None when no association was made."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_echo()
        return int(status.Status) if "Status" in status else None
    finally:
        assoc.release()


def _close_failed(assoc: object) -> None:
    """pynetdicom leaves the socket of a failed TLS handshake open: close it (the modality would, on retry)."""
    dul = getattr(assoc, "dul", None)
    transport = getattr(dul, "socket", None)
    sock = getattr(transport, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()
