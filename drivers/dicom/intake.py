"""DICOM intake: a Storage SCP (pynetdicom) and a watched drop folder, into the encrypted buffer's images lane.

Both intakes end in the same step: validate (drivers.dicom.validate), de-identify when configured
(drivers.dicom.deidentify, PS3.15 Basic Profile with the device's pseudonymous patient id), cut into chunks
that fit the sync API's messages, and hand them to the pipeline, which seals them in the buffer on the images
lane (the lowest priority: vitals and alarms always go first).  12-lead ECG waveform objects are also decoded
into WaveformChunks for the edge analysis.

Nothing is acknowledged before it is durable: the SCP answers C-STORE success, and the drop folder deletes a
file, only after every chunk is committed to the (encrypted) buffer.

Memory stays flat whatever the object's size: the SCP receives each object into the encrypted spool
(`drivers.dicom.spool`; pynetdicom's chunked receive, with the spool standing in for its plaintext temporary
file), and an object over `IN_MEMORY_BYTES` (a spooled one, or a drop folder's file) is validated through the
spool or file piece by piece (`validate_source`), de-identified header-only with its Pixel Data copied across,
and cut into chunks read one at a time; the pipeline holds at most a few MB of image chunks at once.  A
plaintext object never touches the disk: the spool is sealed, and the drop folder's files are the device's own.

A rejected object (not DICOM, truncated, unsupported SOP class or transfer syntax, pixel data that disagrees
with its header, too large) gets the DIMSE status the standard gives for it and a log line with the reason
(never patient data), and a small record of why: stored encrypted on the images lane as
`application/octet-stream` with the reason, digest and size in its metadata.  Only an object that fits one
chunk (and only without de-identification) keeps its bytes there, so a refused object costs one row at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import io
import logging
import math
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from drivers.base import EventSink, link_status, no_op
from drivers.dicom.deidentify import Deidentifier, burned_in_text_suspected
from drivers.dicom.ecg import ecg_events
from drivers.dicom.spool import (
    ByteFile,
    Spool,
    SpooledObject,
    receive_into,
    received,
    sha256_of,
    stop_receiving,
)
from drivers.dicom.validate import (
    MAX_OBJECT_BYTES,
    Accepted,
    ByteSource,
    DicomRejected,
    Reason,
    quiet_pydicom,
    validate,
    validate_source,
)
from gateway.core.errors import StorageError, TransportError
from gateway.core.logs import get_logger
from gateway.core.memory import release_free_memory
from gateway.core.model import ConnectionState, Event, ObjectChunk, now_ns, stable_id
from gateway.core.stats import DriverStats

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
MAX_CONCURRENT_INTAKES = 2  # objects being validated and stored at once
IN_MEMORY_BYTES = 8 * 1024 * 1024  # objects up to this size are handled in memory; larger ones piece by piece
COPY_BLOCK = 1024 * 1024
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
        spool_dir: Path | None = None,
        idle_timeout_s: float = 60.0,
        max_associations: int = 4,
        max_associations_per_source: int = 2,
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
        self.on_healthy: Callable[[], None] = no_op  # a listener has no link to be healthy on
        self.stored = 0  # objects accepted and durable
        self.rejected: dict[str, int] = {}  # reason -> count
        self.port: int | None = None  # the SCP's bound port, once listening
        self.spool_dir = spool_dir
        self.idle_timeout_s = idle_timeout_s
        self.max_associations = max_associations
        self.max_associations_per_source = max_associations_per_source
        self.associations_refused = 0
        self._spool: Spool | None = None
        self._intakes = asyncio.Semaphore(MAX_CONCURRENT_INTAKES)

    @property
    def command_target(self) -> None:
        """A DICOM intake takes no commands."""
        return None

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

    async def take(self, raw: bytes | ByteSource, sink: DurableSink, source: str) -> tuple[int, bool]:
        """The DIMSE status, and whether what was kept of the object (itself, or its quarantine) is durable.

        `raw` is the object's bytes, or a source to read them from (spooled, or a file): up to IN_MEMORY_BYTES it
        is read whole, beyond it handled piece by piece.
        """
        async with self._intakes:  # a bounded number of objects in progress at once
            if isinstance(raw, bytes):
                return await self._take(raw, sink, source)
            if len(raw) <= IN_MEMORY_BYTES:
                return await self._take(await asyncio.to_thread(raw.__getitem__, slice(0, len(raw))), sink, source)
            return await self._take_large(raw, sink, source)

    async def refuse_too_large(self, size: int, sink: DurableSink, source: str) -> tuple[int, bool]:
        """An object over MAX_OBJECT_BYTES (received, not kept): 0xA700 and a record of why, by size only."""
        self.stats.notifications += 1
        self.stats.invalid_frames += 1
        self.rejected[Reason.TOO_LARGE] = self.rejected.get(Reason.TOO_LARGE, 0) + 1
        log.warning("DICOM object rejected", device_id=self.device_id, source=source, reason="too-large", bytes=size)
        meta = {"quarantine": "too-large", "status": f"0x{STATUS_OUT_OF_RESOURCES:04X}", "source": source}
        meta["original_bytes"] = str(size)
        return STATUS_OUT_OF_RESOURCES, await self._store(b"", sink, QUARANTINE_CONTENT_TYPE, meta, ())

    async def _take_large(self, src: ByteSource, sink: DurableSink, source: str) -> tuple[int, bool]:
        """The large-object path: validation and de-identification through `src`, chunks read one at a time."""
        self.stats.notifications += 1
        digest = src.sha256 if isinstance(src, SpooledObject) else None
        try:
            accepted = await asyncio.to_thread(validate_source, src)
        except DicomRejected as err:
            return await self._refuse(err, src, digest, sink, source)
        output, created = src, None
        if self.deidentifier is not None:
            try:
                output = created = await asyncio.to_thread(self._deidentify_large, src, accepted)
            except Exception as err:  # noqa: BLE001 - parsed, but not re-encodable: refuse, never crash
                log.warning("DICOM de-identification failed", device_id=self.device_id, error=type(err).__name__)
                meta = {"quarantine": "de-identification failed", "source": source, "original_bytes": str(len(src))}
                return STATUS_CANNOT_UNDERSTAND, await self._store(b"", sink, QUARANTINE_CONTENT_TYPE, meta, ())
            digest = created.sha256
        try:
            if not await self._store(output, sink, DICOM_CONTENT_TYPE, self._meta(accepted, source), (), digest):
                return STATUS_OUT_OF_RESOURCES, False
        finally:
            if created is not None and self._spool is not None:
                self._spool.discard(created.path)
        self.stored += 1
        log.info("DICOM object stored", device_id=self.device_id, source=source, bytes=len(output))
        await asyncio.to_thread(release_free_memory)  # the object's chunks passed through: give the pages back
        return STATUS_SUCCESS, True

    def _deidentify_large(self, src: ByteSource, accepted: Accepted) -> SpooledObject:
        """The de-identified object in a new spooled file: the header de-identified and re-encoded, the Pixel Data
        element copied across as it is (its bytes are not parsed; burned-in text is flagged, not cleaned)."""
        if self.deidentifier is None or accepted.pixel_data_span is None:
            raise TypeError("a large object's de-identification needs the deidentifier and its Pixel Data span")
        spool = self._spool_for_output()
        header = io.BytesIO()
        with quiet_pydicom():
            cleaned = self.deidentifier.deidentify(accepted.dataset, self.pseudonym)
            cleaned.save_as(header, enforce_file_format=True)
        writer = spool.writer()
        try:
            writer.write(header.getvalue())
            start, stop = accepted.pixel_data_span
            for at in range(start, stop, COPY_BLOCK):
                writer.write(src[at : min(stop, at + COPY_BLOCK)])
            return writer.finish()
        except BaseException:
            spool.discard(writer.name)
            raise

    def _spool_for_output(self) -> Spool:
        if self._spool is None:
            if self.spool_dir is None:
                raise TransportError("a large object needs the DICOM spool (no spool folder configured)")
            self._spool = Spool(self.spool_dir, MAX_OBJECT_BYTES)
        return self._spool

    async def _take(self, raw: bytes, sink: DurableSink, source: str) -> tuple[int, bool]:
        self.stats.notifications += 1
        try:
            accepted = validate(raw)
        except DicomRejected as err:
            return await self._refuse(err, raw, None, sink, source)
        data = raw
        if self.deidentifier is not None:
            try:
                data = self.deidentifier.deidentify_bytes(raw, self.pseudonym)
            except Exception as err:  # noqa: BLE001 - a data set we can parse but not re-encode: refuse, never crash
                log.warning("DICOM de-identification failed", device_id=self.device_id, error=type(err).__name__)
                meta = {"quarantine": "de-identification failed", "source": source, "original_bytes": str(len(raw))}
                meta["original_sha256"] = sha256(raw)
                return STATUS_CANNOT_UNDERSTAND, await self._store(b"", sink, QUARANTINE_CONTENT_TYPE, meta, ())
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
        if not await self._store(data, sink, DICOM_CONTENT_TYPE, self._meta(accepted, source), extra):
            return STATUS_OUT_OF_RESOURCES, False
        self.stored += 1
        log.info("DICOM object stored", device_id=self.device_id, source=source, bytes=len(data))
        return STATUS_SUCCESS, True

    def _meta(self, accepted: Accepted, source: str) -> dict[str, str]:
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
        return meta

    async def _refuse(
        self, err: DicomRejected, raw: bytes | ByteSource, digest: str | None, sink: DurableSink, source: str
    ) -> tuple[int, bool]:
        """A rejected object: its status, a log line, and a record of why (its bytes only if it fits one chunk
        and is not to be de-identified: they would carry the patient's identity to the cloud)."""
        self.stats.invalid_frames += 1
        self.rejected[err.reason] = self.rejected.get(err.reason, 0) + 1
        log.warning("DICOM object rejected", **err.log_fields(device_id=self.device_id, source=source))
        meta = {"quarantine": err.reason, "status": f"0x{err.status:04X}", "source": source}
        small = len(raw) <= self.chunk_bytes
        if digest is None and small:
            digest = hashlib.sha256(raw if isinstance(raw, bytes) else raw[0 : len(raw)]).hexdigest()
        meta["original_bytes"] = str(len(raw))
        if digest is not None:
            meta["original_sha256"] = digest
        keep = raw if self.deidentifier is None and small and isinstance(raw, bytes) else b""
        return err.status, await self._store(keep, sink, QUARANTINE_CONTENT_TYPE, meta, ())

    async def _store(
        self,
        data: ByteSource,
        sink: DurableSink,
        content_type: str,
        meta: dict[str, str],
        extra: tuple[Event, ...],
        digest: str | None = None,
    ) -> bool:
        """Emit the object's chunks, read one at a time (and extra events); True once every chunk is committed.

        The pipeline makes `emit` wait while it holds its budget of image bytes, so however large the object,
        only a few MB of it are in memory at once.
        """
        size = len(data)
        if digest is None:
            digest = await asyncio.to_thread(sha256_of, data) if not isinstance(data, bytes) else sha256(data)
        object_id = digest[:32]  # content-addressed: the same object sent twice is one object at the receiver
        count = max(1, math.ceil(size / self.chunk_bytes))
        t_gw = now_ns()
        waiters: list[asyncio.Future[None]] = []
        try:
            for index in range(count):
                piece = slice(index * self.chunk_bytes, (index + 1) * self.chunk_bytes)
                body = data[piece] if isinstance(data, bytes) else await asyncio.to_thread(data.__getitem__, piece)
                chunk = ObjectChunk(
                    stable_id(self.device_id, object_id, index),
                    self.device_id,
                    object_id,
                    index,
                    count,
                    size,
                    digest,
                    content_type,
                    body,
                    t_gw,
                    meta,
                )
                waiters.append(sink.when_durable(chunk.id))
                await sink.emit(chunk)
            for event in extra:
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
        spool = self._spool_for_output()
        receive_into(spool)  # every object arrives in the encrypted spool, never whole in memory
        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(str(context.abstract_syntax), ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(str(Verification))
        if self.allowed_calling_aes:
            ae.require_calling_aet = list(self.allowed_calling_aes)
        ae.maximum_pdu_size = 256 * 1024  # a finite PDU: the peer cannot make one read of any size
        # The listener's idle/size discipline: an idle association is released, few at once, fewer per address.
        ae.network_timeout = self.idle_timeout_s
        ae.acse_timeout = min(30.0, self.idle_timeout_s)
        ae.dimse_timeout = self.idle_timeout_s
        ae.maximum_associations = self.max_associations

        def on_requested(event: Any) -> None:
            address = event.assoc.requestor.address
            same = [a for a in ae.active_associations if a.requestor.address == address]
            if len(same) > self.max_associations_per_source:
                self.associations_refused += 1
                log.warning("DICOM association refused: too many from one address", device_id=self.device_id)
                event.assoc.abort()

        def on_store(event: Any) -> int:
            calling = event.assoc.requestor.ae_title
            path = event.dataset_path
            try:
                holder, spooled = received(path)
            except KeyError:
                log.error("DICOM object not in the spool", device_id=self.device_id)
                return STATUS_OUT_OF_RESOURCES
            source = f"scp:{calling}"
            if spooled.too_large:
                work = self.refuse_too_large(spooled.size, sink, source)
            else:
                work = self.take(spooled, sink, source)
            future = asyncio.run_coroutine_threadsafe(work, loop)
            try:
                # Storing takes as long as committing its chunks: allow for the object's size (1 MB/s at worst).
                return int(future.result(timeout=DURABLE_TIMEOUT_S + 10 + spooled.size / 1e6)[0])
            except Exception as err:  # noqa: BLE001 - the association thread must answer, whatever happened
                log.error("DICOM store failed", device_id=self.device_id, error=type(err).__name__)
                future.cancel()
                return STATUS_OUT_OF_RESOURCES
            finally:
                holder.discard(path)

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
            (evt.EVT_REQUESTED, on_requested),
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
            stop_receiving(spool)

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
            source = await asyncio.to_thread(ByteFile, path)  # read piece by piece when large
        except OSError as err:
            log.warning("drop folder file unreadable", device_id=self.device_id, error=type(err).__name__)
            return
        try:
            status, durable = await self.take(source, sink, "folder")
        except OSError as err:
            log.warning("drop folder file unreadable", device_id=self.device_id, error=type(err).__name__)
            return
        if not durable:
            return  # the file stays, and is tried again once the buffer can take it
        if status == STATUS_SUCCESS:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        else:
            # Rejected: kept aside for a technician (with de-identification on, the quarantine holds only its digest).
            await asyncio.to_thread(_set_aside, path)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
