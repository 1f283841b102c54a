"""DICOM intake: a Storage SCP (pynetdicom) and a watched drop folder, into the encrypted buffer's images lane.

Both intakes end in the same step: validate (drivers.dicom.validate), de-identify when configured
(drivers.dicom.deidentify, PS3.15 Basic Profile with the device's pseudonymous patient id), cut into chunks
that fit the sync API's messages, and hand them to the pipeline, which seals them in the buffer on the images
lane (the lowest priority: vitals and alarms always go first).  12-lead ECG waveform objects are also decoded
into WaveformChunks for the edge analysis.

Nothing is acknowledged before it is durable: the SCP answers C-STORE success, and the drop folder deletes a
file, only after every chunk is committed to the (encrypted) buffer.  A plaintext object never touches the
disk: the SCP keeps received data sets in memory, and the drop folder's files are the device's own.

A rejected object (not DICOM, truncated, unsupported SOP class or transfer syntax, pixel data that disagrees
with its header) gets the DIMSE status the standard gives for it and a log line with the reason (never patient
data), and is quarantined: stored encrypted on the images lane as `application/octet-stream` with the reason
in its metadata, so nothing is silently dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
import ssl
from pathlib import Path
from typing import Any, Protocol

from drivers.base import DriverStats, EventSink, link_status
from drivers.dicom.deidentify import Deidentifier, burned_in_text_suspected
from drivers.dicom.ecg import ecg_events
from drivers.dicom.validate import MAX_OBJECT_BYTES, DicomRejected, validate
from gateway.errors import StorageError, TransportError
from gateway.logs import get_logger
from gateway.model import ConnectionState, Event, ObjectChunk, now_ns, stable_id

log = get_logger(__name__)
logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its debug output would print data set contents

DICOM_CONTENT_TYPE = "application/dicom"
QUARANTINE_CONTENT_TYPE = "application/octet-stream"
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700  # PS3.4 Annex B.2.3: Refused: Out of Resources
STATUS_CANNOT_UNDERSTAND = 0xC000  # PS3.4 Annex B.2.3: Error: Cannot understand
DURABLE_TIMEOUT_S = 60.0
FOLDER_POLL_S = 0.5
QUIET_POLLS = 4  # a file must stay unchanged this many polls (2 s) before it is taken: slow copies finish first
MAX_CONCURRENT_INTAKES = 2  # objects held in memory at once (each up to MAX_OBJECT_BYTES)
PARTIAL_SUFFIXES = (".part", ".tmp", ".partial", ".filepart")


class DurableSink(EventSink, Protocol):
    """The pipeline: an EventSink that can say when an emitted event is committed."""

    def when_durable(self, event_id: str) -> asyncio.Future[None]: ...


class DicomIntakeDriver:
    """One DICOM intake: a Storage SCP (`listen://HOST:PORT`) or a drop folder (`folder:///path`)."""

    def __init__(
        self,
        device_id: str,
        address: str,
        *,
        ae_title: str = "IOMT_GW",
        allowed_calling_aes: tuple[str, ...] = (),
        deidentifier: Deidentifier | None = None,
        pseudonym: str | None = None,
        chunk_bytes: int = 64 * 1024,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.device_id = device_id
        self.address = address
        self.ae_title = ae_title
        self.allowed_calling_aes = allowed_calling_aes
        self.deidentifier = deidentifier
        self.pseudonym = pseudonym or "UNBOUND"
        self.chunk_bytes = chunk_bytes
        self.ssl_context = ssl_context
        self.stats = DriverStats()
        self.stored = 0  # objects accepted and durable
        self.rejected: dict[str, int] = {}  # reason -> count
        self.port: int | None = None  # the SCP's bound port, once listening
        self._intakes = asyncio.Semaphore(MAX_CONCURRENT_INTAKES)

    async def run(self, sink: EventSink) -> None:
        durable = sink if hasattr(sink, "when_durable") else None
        if durable is None:
            raise TransportError("DICOM intake needs the pipeline as its sink (durability)")
        sink.emit_nowait(link_status(self.device_id, ConnectionState.CONNECTING))
        reason = "link_lost"
        try:
            if self.address.startswith("folder://"):
                await self._watch(Path(self.address.removeprefix("folder://")), durable)  # type: ignore[arg-type]
            else:
                await self._serve(durable)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            reason = "stopped"
            raise
        finally:
            sink.emit_nowait(link_status(self.device_id, ConnectionState.DISCONNECTED, detail={"reason": reason}))

    # -- the common path ----------------------------------------------------------------------------------------
    async def intake(self, raw: bytes, sink: DurableSink, source: str) -> int:
        """Validate, de-identify, store durably; the DIMSE status for the sender."""
        status, _durable = await self.take(raw, sink, source)
        return status

    async def take(self, raw: bytes, sink: DurableSink, source: str) -> tuple[int, bool]:
        """The DIMSE status, and whether what was kept of the object (itself, or its quarantine) is durable."""
        async with self._intakes:  # a bounded number of objects in memory at once
            return await self._take(raw, sink, source)

    async def _take(self, raw: bytes, sink: DurableSink, source: str) -> tuple[int, bool]:
        self.stats.notifications += 1
        try:
            accepted = validate(raw)
        except DicomRejected as err:
            self.stats.invalid_frames += 1
            self.rejected[err.reason] = self.rejected.get(err.reason, 0) + 1
            log.warning("DICOM object rejected", **err.log_fields(device_id=self.device_id, source=source))
            meta = {"quarantine": err.reason, "status": f"0x{err.status:04X}", "source": source}
            return err.status, await self._quarantine(raw, sink, meta)
        data = raw
        if self.deidentifier is not None:
            try:
                data = self.deidentifier.deidentify_bytes(raw, self.pseudonym)
            except Exception as err:  # noqa: BLE001 - a data set we can parse but not re-encode: refuse, never crash
                log.warning("DICOM de-identification failed", device_id=self.device_id, error=type(err).__name__)
                meta = {"quarantine": "de-identification failed", "source": source}
                return STATUS_CANNOT_UNDERSTAND, await self._quarantine(raw, sink, meta)
        extra: tuple[Event, ...] = ()
        if accepted.is_waveform:
            try:
                # The receive time places the leads (the object's own times carry no zone); ids come from the
                # SOP instance and lead, so a re-sent object's waveforms are de-duplicated like its chunks.
                extra = tuple(
                    dataclasses.replace(
                        chunk, id=stable_id(self.device_id, accepted.sop_instance_uid, chunk.quantity.code)
                    )
                    for chunk in ecg_events(accepted.dataset, self.device_id, now_ns())
                )
                extra = tuple(
                    dataclasses.replace(chunk, id=stable_id(self.device_id, accepted.sop_instance_uid, index))
                    for index, chunk in enumerate(
                        extra
                    )  # unrecognised leads share a code: the channel tells them apart
                )
            except Exception as err:  # noqa: BLE001 - the object is still stored; its waveform is not analysed
                log.warning("DICOM ECG not decoded", device_id=self.device_id, error=type(err).__name__)
        meta = {
            "sop_class": accepted.sop_class_uid,
            "modality": accepted.modality,
            "transfer_syntax": accepted.transfer_syntax_uid,
            "deidentified": "true" if self.deidentifier is not None else "false",
            "source": source,
        }
        if self.deidentifier is not None and burned_in_text_suspected(accepted.dataset):
            # PS3.15's Clean Pixel Data option is not applied: text burned into the image may identify.
            meta["burned_in_text_suspected"] = "true"
        if not await self._store(data, sink, DICOM_CONTENT_TYPE, meta, extra):
            return STATUS_OUT_OF_RESOURCES, False
        self.stored += 1
        log.info("DICOM object stored", device_id=self.device_id, source=source, bytes=len(data))
        return STATUS_SUCCESS, True

    async def _quarantine(self, raw: bytes, sink: DurableSink, meta: dict[str, str]) -> bool:
        """Keep a rejected object, encrypted.  With de-identification on, only its digest and size go (the bytes
        would carry the patient's identity to the cloud); an object too large to hold is recorded the same way."""
        meta = {**meta, "original_sha256": hashlib.sha256(raw).hexdigest(), "original_bytes": str(len(raw))}
        keep = raw if self.deidentifier is None and len(raw) <= MAX_OBJECT_BYTES else b""
        return await self._store(keep, sink, QUARANTINE_CONTENT_TYPE, meta, ())

    async def _store(
        self, data: bytes, sink: DurableSink, content_type: str, meta: dict[str, str], extra: tuple[Event, ...]
    ) -> bool:
        """Emit the object's chunks (and extra events); True once every chunk is committed."""
        digest = hashlib.sha256(data).hexdigest()
        object_id = digest[:32]  # content-addressed: the same object sent twice is one object at the receiver
        count = max(1, math.ceil(len(data) / self.chunk_bytes))
        t_gw = now_ns()
        view = memoryview(data)
        chunks = [
            ObjectChunk(
                stable_id(self.device_id, object_id, index),
                self.device_id,
                object_id,
                index,
                count,
                len(data),
                digest,
                content_type,
                bytes(view[index * self.chunk_bytes : (index + 1) * self.chunk_bytes]),
                t_gw,
                meta,
            )
            for index in range(count)
        ]
        waiters = [sink.when_durable(chunk.id) for chunk in chunks]
        try:
            for event in (*chunks, *extra):
                await sink.emit(event)
            async with asyncio.timeout(DURABLE_TIMEOUT_S):
                await asyncio.gather(*waiters)
        except (TimeoutError, StorageError) as err:
            log.error("DICOM object not durable", device_id=self.device_id, chunks=count, error=type(err).__name__)
            return False
        finally:
            for waiter in waiters:
                waiter.cancel()  # no-op when done; otherwise the pipeline forgets it
        return True

    # -- Storage SCP ----------------------------------------------------------------------------------------------
    async def _serve(self, sink: DurableSink) -> None:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt  # noqa: PLC0415 - only when an SCP is configured
        from pynetdicom.presentation import AllStoragePresentationContexts  # noqa: PLC0415
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # noqa: PLC0415

        host, _, port = self.address.removeprefix("listen://").rpartition(":")
        loop = asyncio.get_running_loop()
        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(str(context.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(str(Verification))
        if self.allowed_calling_aes:
            ae.require_calling_aet = list(self.allowed_calling_aes)
        ae.maximum_pdu_size = 256 * 1024  # a finite PDU: the peer cannot make one read of any size

        def on_store(event: Any) -> int:
            raw = event.encoded_dataset(include_meta=True)
            calling = event.assoc.requestor.ae_title
            future = asyncio.run_coroutine_threadsafe(self.intake(raw, sink, f"scp:{calling}"), loop)
            try:
                return int(future.result(timeout=DURABLE_TIMEOUT_S + 10))
            except Exception as err:  # noqa: BLE001 - the association thread must answer, whatever happened
                log.error("DICOM store failed", device_id=self.device_id, error=type(err).__name__)
                return STATUS_OUT_OF_RESOURCES

        def on_echo(_event: Any) -> int:
            log.info("DICOM C-ECHO answered", device_id=self.device_id)
            return STATUS_SUCCESS

        def on_rejected(event: Any) -> None:
            log.warning(
                "DICOM association rejected",
                device_id=self.device_id,
                calling_ae=str(event.assoc.requestor.ae_title),
            )

        handlers: list[Any] = [
            (evt.EVT_C_STORE, on_store),
            (evt.EVT_C_ECHO, on_echo),
            (evt.EVT_REJECTED, on_rejected),
        ]
        try:
            server = ae.start_server(
                (host, int(port)), block=False, evt_handlers=handlers, ssl_context=self.ssl_context
            )
        except OSError as err:
            raise TransportError("cannot listen", error=type(err).__name__) from err
        assert server is not None  # noqa: S101 - block=False always returns the server
        self.port = int(server.server_address[1])
        await sink.emit(link_status(self.device_id, ConnectionState.CONNECTED, detail={"ae_title": self.ae_title}))
        log.info("DICOM storage SCP listening", device_id=self.device_id, port=self.port)
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(asyncio.to_thread(server.shutdown))

    # -- drop folder ----------------------------------------------------------------------------------------------
    async def _watch(self, folder: Path, sink: DurableSink) -> None:
        """Pick up files that have stopped changing; delete each only after what was kept of it is durable."""
        if not await asyncio.to_thread(folder.is_dir):
            raise TransportError("drop folder missing")
        await sink.emit(link_status(self.device_id, ConnectionState.CONNECTED))
        quiet: dict[Path, tuple[tuple[int, int], int]] = {}  # signature, polls it has stayed the same
        while True:
            current = await asyncio.to_thread(_scan, folder)
            for path, signature in current.items():
                previous, polls = quiet.get(path, (None, 0))
                polls = polls + 1 if previous == signature else 0
                quiet[path] = (signature, polls)
                if polls >= QUIET_POLLS:  # unchanged for a while: the writer is done (or has given up)
                    await self._take_file(path, signature[0], sink)
                    quiet.pop(path, None)
            quiet = {p: v for p, v in quiet.items() if p in current}
            await asyncio.sleep(FOLDER_POLL_S)

    async def _take_file(self, path: Path, size: int, sink: DurableSink) -> None:
        if size > MAX_OBJECT_BYTES:
            # Never read into memory: set aside, recorded in the quarantine by size only.
            log.warning("drop folder file too large; set aside", device_id=self.device_id, bytes=size)
            meta = {"quarantine": "too-large", "original_bytes": str(size), "source": "folder"}
            if await self._store(b"", sink, QUARANTINE_CONTENT_TYPE, meta, ()):
                await asyncio.to_thread(_set_aside, path)
            return
        try:
            raw = await asyncio.to_thread(path.read_bytes)
        except OSError as err:
            log.warning("drop folder file unreadable", device_id=self.device_id, error=type(err).__name__)
            return
        status, durable = await self.take(raw, sink, "folder")
        if not durable:
            return  # the file stays, and is tried again once the buffer can take it
        if status == STATUS_SUCCESS:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        else:
            # Rejected: kept aside for a technician (with de-identification on, the quarantine holds only its digest).
            await asyncio.to_thread(_set_aside, path)


def _set_aside(path: Path) -> None:
    rejected = path.parent / ".rejected"
    rejected.mkdir(exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.replace(rejected / path.name)


def _scan(folder: Path) -> dict[Path, tuple[int, int]]:
    """Complete-looking files of the folder with (size, mtime); dot files and partial-download names skipped."""
    found: dict[Path, tuple[int, int]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.name.endswith(PARTIAL_SUFFIXES):
            continue
        with contextlib.suppress(FileNotFoundError):
            info = path.stat()
            if path.is_file():
                found[path] = (info.st_size, info.st_mtime_ns)
    return found
