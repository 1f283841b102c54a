"""Simulated BLE health peripherals, reachable through the same GattLink interface as real devices.

Each peripheral encodes its characteristics with the Bluetooth SIG formats (the encoders of the drivers.ble codec
modules), so the production driver decodes real bytes.  A `SimBleWorld` holds the peripherals by name; the driver's
address `sim:NAME` selects one.  Fault injection: `drop_links()` (link lost), `online = False` (out of range),
`silent = True` (connected but quiet), and `garbage_every` (malformed notifications).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from drivers.ble import bas, cgms, device_info, hrs, idd_history, idd_status, ids, plxs, pmd, racp
from drivers.ble.link import NotifyCallback
from drivers.ble.profiles import PMD_START_ECG, POLAR_EPOCH_OFFSET_NS
from drivers.ble.transport import ScannerBackend
from drivers.transport import DeviceSection
from gateway.core.errors import ConfigError, InvalidFrame, TransportError
from hil.physiology import Episode, SyntheticEcg, Trajectory

Notifier = Callable[[Callable[[bytes], None]], Coroutine[Any, Any, None]]


class PeripheralLink(Protocol):
    """What a peripheral sends through: an in-process link, or a GATT server on a radio (hil.ble_radio)."""

    def deliver(self, uuid: str, data: bytes) -> None: ...

    def lose(self) -> None: ...


class SimPeripheral:
    """Base: readable characteristics, notification loops, and the fault switches."""

    profile = ""
    requires_encryption = False  # service characteristics need an encrypted (paired) link

    def __init__(self, name: str) -> None:
        self.name = name
        self.online = True
        self.silent = False
        self.garbage_every = 0
        self.readable: dict[str, Callable[[], bytes]] = {}
        self.notifiers: dict[str, Notifier] = {}
        self.writes: list[tuple[str, bytes]] = []
        self.writable: set[str] = set()  # characteristics written to (besides the control points below)
        self.indicatable: set[str] = set()  # characteristics that indicate on demand (control points)
        self.notifiable: set[str] = set()  # characteristics that notify on demand (e.g. records in a report)
        self.links: set[PeripheralLink] = set()
        self.connections = 0
        self.notifications_sent = 0
        self.battery_pct = 96.0
        self.clock_offset_s: float | None = None  # device clock minus true time, when it keeps time (CTS)
        self._t0 = time.monotonic()
        self.readable[bas.BATTERY_LEVEL] = lambda: bas.encode_battery_level(round(self.battery_pct))
        # Device Information: identity the gateway reads on connect (no patient data in it).
        self.readable[device_info.MANUFACTURER_NAME] = lambda: b"IoMT Gateway HIL"
        model, serial = f"SIM-{self.profile}".encode(), f"SN-{self.name}".encode()
        self.readable[device_info.MODEL_NUMBER] = lambda: model
        self.readable[device_info.SERIAL_NUMBER] = lambda: serial
        self.readable[device_info.FIRMWARE_REVISION] = lambda: b"1.4.2"

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._t0

    def characteristics(self) -> set[str]:
        return set(self.readable) | set(self.notifiers) | self.indicatable | self.notifiable

    def indicate(self, uuid: str, data: bytes) -> None:
        """Send an indication (or, on a notifying characteristic, a notification) on `uuid` to every connected
        subscriber (e.g. a control point's answer, a record of a report)."""
        for link in list(self.links):
            link.deliver(uuid, data)

    def on_write(self, uuid: str, data: bytes) -> None:
        self.writes.append((uuid, data))
        if uuid == device_info.CURRENT_TIME:
            try:
                stamp = device_info.decode_current_time(data).date_time
                self.clock_offset_s = datetime(*stamp, tzinfo=UTC).timestamp() - time.time()
            except (InvalidFrame, ValueError):
                pass  # a clock write the device cannot use leaves its clock alone

    def keeps_time(self, drift_s: float) -> None:
        """Give the device a Current Time Service clock that is `drift_s` off, for the gateway to set."""
        self.clock_offset_s = drift_s
        self.readable[device_info.CURRENT_TIME] = lambda: device_info.encode_current_time_from_ns(
            time.time_ns() + round((self.clock_offset_s or 0.0) * 1e9), 0
        )
        self.writable.add(device_info.CURRENT_TIME)

    def shaped(self, data: bytes, counter: int) -> bytes | None:
        """The notification as the faults make it: None when silent, garbage every `garbage_every`-th."""
        if self.silent:
            return None
        if self.garbage_every and counter % self.garbage_every == 0:
            return bytes(np.random.default_rng(counter).integers(0, 256, 3, dtype=np.uint8))
        return data

    def on_connect(self) -> None:
        """Hook for per-connection state (e.g. E2E counters restart with each connection)."""

    def drop_links(self) -> None:
        for link in list(self.links):
            link.lose()

    async def _every(self, period_s: float, make: Callable[[], bytes], send: Callable[[bytes], None]) -> None:
        next_at = time.monotonic()
        while True:
            send(make())
            next_at += period_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))


class SimEcgPatch(SimPeripheral):
    """A chest strap like the Polar H10: Heart Rate Service plus PMD ECG at 130 Hz after a start command."""

    profile = "ecg_patch"
    FRAME_SAMPLES = 73

    def __init__(self, name: str, heart_rate_bpm: float = 72.0, seed: int = 11) -> None:
        super().__init__(name)
        self.ecg = SyntheticEcg(pmd.PMD_ECG_SAMPLE_RATE_HZ, heart_rate_bpm, seed)
        self.streaming = False
        self._sample_index = 0
        self._epoch_ns = time.time_ns() - POLAR_EPOCH_OFFSET_NS
        self.notifiers[hrs.HEART_RATE_MEASUREMENT] = self._heart_rate
        self.notifiers[pmd.PMD_DATA] = self._pmd
        self.readable[pmd.PMD_CONTROL_POINT] = lambda: b"\x0f\x01"
        self.writable.add(pmd.PMD_CONTROL_POINT)

    def on_write(self, uuid: str, data: bytes) -> None:
        super().on_write(uuid, data)
        if uuid == pmd.PMD_CONTROL_POINT and data == PMD_START_ECG:
            self.streaming = True

    async def _heart_rate(self, send: Callable[[bytes], None]) -> None:
        def make() -> bytes:
            rr = 60_000.0 / self.ecg.heart_rate_bpm
            return hrs.encode_heart_rate_measurement(
                hrs.HeartRateMeasurement(round(self.ecg.heart_rate_bpm), True, None, (round(rr, 1),))
            )

        await self._every(1.0, make, send)

    async def _pmd(self, send: Callable[[bytes], None]) -> None:
        period = self.FRAME_SAMPLES / pmd.PMD_ECG_SAMPLE_RATE_HZ
        next_at = time.monotonic()
        while True:
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            samples = self.ecg.next(self.FRAME_SAMPLES)
            self._sample_index += self.FRAME_SAMPLES
            if self.streaming:
                last_ns = self._epoch_ns + round((self._sample_index - 1) * 1e9 / pmd.PMD_ECG_SAMPLE_RATE_HZ)
                send(pmd.encode_pmd_ecg_frame(last_ns, samples))


class SimPulseOximeter(SimPeripheral):
    """A Pulse Oximeter Service device sending continuous measurements once a second."""

    profile = "pulse_oximeter"

    def __init__(self, name: str, desaturations: tuple[Episode, ...] = (), seed: int = 12) -> None:
        super().__init__(name)
        self.spo2 = Trajectory(97.0, 0.15, desaturations, seed, lo=50, hi=100)
        self.pulse = Trajectory(74.0, 0.6, (), seed + 1, lo=30, hi=220)
        self.notifiers[plxs.PLX_CONTINUOUS_MEASUREMENT] = self._continuous

    async def _continuous(self, send: Callable[[bytes], None]) -> None:
        def make() -> bytes:
            t = self.elapsed_s
            return plxs.encode_plx_continuous(
                plxs.PlxContinuousMeasurement(round(self.spo2.at(t), 1), round(self.pulse.at(t), 1), 3.4, None, None)
            )

        await self._every(1.0, make, send)


class SimCgm(SimPeripheral):
    """A CGM Service sensor with a Record Access Control Point over the records it stores.

    Its clock can run faster than real time (`time_scale`) for demos and tests.  It measures whether or not a
    gateway is connected, and keeps every record, so a gateway that was away fetches what it missed via RACP.
    Faults: `reading` replaces the measured glucose (float("-inf") is the sensor's LO, "+inf" its HI), and
    `sensor_status` sets the Sensor Status Annunciation bits of the next records (malfunction, session
    stopped when the sensor expires, ...).
    """

    profile = "cgm"

    def __init__(
        self,
        name: str,
        lows: tuple[Episode, ...] = (),
        interval_min: int = 1,
        time_scale: float = 60.0,
        seed: int = 13,
        *,
        e2e_crc: bool = True,
    ) -> None:
        super().__init__(name)
        self.e2e_crc = e2e_crc
        self.interval_min = interval_min
        self.time_scale = time_scale
        self.session_start_ns = (time.time_ns() // 60_000_000_000) * 60_000_000_000
        self.glucose = Trajectory(118.0, 1.5, lows, seed, lo=40, hi=400)
        self.records: list[cgms.CgmMeasurement] = []
        self.reading: float | None = None
        self.sensor_status: int | None = None
        self.racp_requests: list[racp.RacpRequest] = []
        self.readable[cgms.CGM_SESSION_START_TIME] = lambda: cgms.encode_cgm_session_start_time(
            self.session_start_ns, e2e_crc=e2e_crc
        )
        # Interstitial fluid (type 0x9), subcutaneous tissue (location 0x5); trend, quality and E2E-CRC features.
        features = (1 << 15) | (1 << 16) | (cgms.CGM_FEATURE_E2E_CRC if e2e_crc else 0)
        cgm_feature = cgms.encode_cgm_feature(cgms.CgmFeature(features, 0x9, 0x5))
        self.readable[cgms.CGM_FEATURE] = lambda: cgm_feature
        self.notifiers[cgms.CGM_MEASUREMENT] = self._measure
        self.indicatable.add(racp.RECORD_ACCESS_CONTROL_POINT)
        self.keeps_time(drift_s=-437.0)

    async def _measure(self, send: Callable[[bytes], None]) -> None:
        period = self.interval_min * 60.0 / self.time_scale
        while True:
            offset = len(self.records) * self.interval_min
            previous = self.records[-1].glucose_mg_dl if self.records else None
            value = float(round(self.glucose.at(self.elapsed_s))) if self.reading is None else self.reading
            finite = previous is not None and math.isfinite(previous) and math.isfinite(value)
            trend = round((value - previous) / self.interval_min, 1) if finite and previous is not None else None
            record = cgms.CgmMeasurement(value, offset, self.sensor_status, trend, None)
            self.records.append(record)
            send(cgms.encode_cgm_measurement(record, e2e_crc=self.e2e_crc))
            await asyncio.sleep(period)

    def on_write(self, uuid: str, data: bytes) -> None:
        super().on_write(uuid, data)
        if uuid != racp.RECORD_ACCESS_CONTROL_POINT:
            return
        try:
            request = racp.decode_racp_request(data)
        except InvalidFrame as err:
            fields = err.log_fields()
            self._racp_answer(int(fields.get("request_opcode", 0)), int(fields.get("response_code", 0x02)))
            return
        self.racp_requests.append(request)
        selected = self._select(request)
        if request.opcode == racp.RacpOpcode.ABORT_OPERATION:
            self._racp_answer(request.opcode, racp.RacpResponseCode.SUCCESS)
        elif request.opcode == racp.RacpOpcode.REPORT_NUMBER_OF_STORED_RECORDS:
            count = racp.RacpResponse(
                racp.RacpOpcode.NUMBER_OF_STORED_RECORDS_RESPONSE,
                racp.RacpOperator.NULL,
                number_of_records=len(selected),
            )
            self.indicate(racp.RECORD_ACCESS_CONTROL_POINT, racp.encode_racp_response(count))
        elif request.opcode == racp.RacpOpcode.REPORT_STORED_RECORDS:
            # Records go out as CGM Measurement notifications, then the RACP indication closes the procedure.
            for record in selected:
                self.notifications_sent += 1
                self.indicate(cgms.CGM_MEASUREMENT, cgms.encode_cgm_measurement(record, e2e_crc=self.e2e_crc))
            code = racp.RacpResponseCode.SUCCESS if selected else racp.RacpResponseCode.NO_RECORDS_FOUND
            self._racp_answer(request.opcode, code)
        else:
            self._racp_answer(request.opcode, racp.RacpResponseCode.OP_CODE_NOT_SUPPORTED)

    def _select(self, request: racp.RacpRequest) -> list[cgms.CgmMeasurement]:
        records, operator, operand = self.records, request.operator, request.operand
        if operator == racp.RacpOperator.ALL_RECORDS:
            return list(records)
        if operator == racp.RacpOperator.FIRST_RECORD:
            return records[:1]
        if operator == racp.RacpOperator.LAST_RECORD:
            return records[-1:]
        if operator == racp.RacpOperator.GREATER_THAN_OR_EQUAL:
            return [r for r in records if r.time_offset_min >= operand[0]]
        if operator == racp.RacpOperator.LESS_THAN_OR_EQUAL:
            return [r for r in records if r.time_offset_min <= operand[0]]
        if operator == racp.RacpOperator.WITHIN_RANGE:
            return [r for r in records if operand[0] <= r.time_offset_min <= operand[1]]
        return []

    def _racp_answer(self, request_opcode: int, code: int) -> None:
        response = racp.RacpResponse(
            racp.RacpOpcode.RESPONSE_CODE, racp.RacpOperator.NULL, request_opcode=request_opcode, response_code=code
        )
        self.indicate(racp.RECORD_ACCESS_CONTROL_POINT, racp.encode_racp_response(response))


class SimInsulinPump(SimPeripheral):
    """An Insulin Delivery Service pump with E2E protection on every IDS characteristic (`e2e=False`: a pump
    whose IDD Features say it has none, so no IDS frame carries the E2E trailer).

    Status every two seconds; Status Changed and Annunciation Status indicated when they change
    (`annunciate(type)` raises the pump's own alarm, `confirm_annunciation()` is the user pressing OK); the
    Status Reader CP answers Reset Status, Get Delivered Insulin and Get Insulin On Board; the Command CP
    takes Set Bolus, Cancel Bolus and TBR commands.
    Commands arrive with E2E-Counter and E2E-CRC and are answered with indications that carry them too.
    `command_fault` injects the failures a real link has: "drop-after-write" (the pump delivers, then the
    link drops before it answers), "no-answer" (it delivers and never answers) and "drop-before-acting" (the
    write arrives but the pump never acts on it, and the link drops); and "refuse": the pump answers that it
    will not act (Procedure Not Applicable), delivering nothing.
    The pump keeps a history (`history`, IDD History Data): a Reference Time event at power-on and whenever its
    clock is set, Bolus Programmed and Bolus Delivered (parts 1 and 2) for every bolus; the IDD Record Access
    Control Point reports it (records as History Data notifications, then the RACP indication).
    """

    profile = "insulin_pump"
    requires_encryption = True  # IDS: LE security mode 1 level 2 or higher, with bonding

    def __init__(
        self,
        name: str,
        reservoir_iu: float = 180.0,
        basal_iu_h: float = 0.8,
        *,
        e2e: bool = True,
        history: bool = True,
        first_sequence_number: int = 7000,
    ) -> None:
        super().__init__(name)
        self.e2e = e2e  # IDD Features' E2E-Protection Supported: without it no IDS frame carries the E2E trailer
        self.reservoir_iu = reservoir_iu
        self.basal_iu_h = basal_iu_h
        self.notifiers[idd_status.IDD_STATUS] = self._status
        self.notifiers[bas.BATTERY_LEVEL] = self._battery
        self.indicatable.add(ids.IDD_COMMAND_CONTROL_POINT)
        self.indicatable |= {
            ids.IDD_STATUS_CHANGED,
            ids.IDD_ANNUNCIATION_STATUS,
            ids.IDD_STATUS_READER_CONTROL_POINT,
        }
        if history:  # `history=False`: a pump that does not expose its history (settled only by hand)
            self.indicatable.add(idd_history.IDD_RECORD_ACCESS_CONTROL_POINT)
            self.notifiable.add(idd_history.IDD_HISTORY_DATA)
        features = ids.IddFeatures(
            e2e_protection=e2e,
            insulin_concentration_iu_per_ml=100.0,
            basal_rate=True,
            tbr_absolute=True,
            fast_bolus=True,
            insulin_on_board=True,
        )
        encoded_features = ids.encode_idd_features(features)
        self.readable[ids.IDD_FEATURES] = lambda: encoded_features
        self.readable[ids.IDD_STATUS_CHANGED] = lambda: ids.encode_status_changed(
            self.status_changed, counter=0 if e2e else None
        )
        self.readable[ids.IDD_ANNUNCIATION_STATUS] = lambda: ids.encode_annunciation_status(
            self.annunciation, counter=0 if e2e else None
        )
        self.status_changed = ids.StatusChangedFlag(0)
        self.annunciation: ids.Annunciation | None = None
        self.status_resets: list[ids.StatusChangedFlag] = []
        self.basal_delivered_iu = 0.0
        self._next_annunciation = 1
        self._out_counters: dict[str, ids.E2ECounter] = {}
        self.keeps_time(drift_s=95.0)
        self.commands_received: list[ids.IddCommand] = []
        self.deliveries: list[tuple[int, float]] = []  # (bolus id, IU) actually delivered
        self.temp_basals: list[tuple[float, int]] = []
        self.command_fault: str | None = None
        self._next_bolus_id = 1
        self._counter = ids.E2ECounter()
        self._tracker = ids.E2ECounterTracker()
        self.history: list[idd_history.HistoryRecord] = []
        self.history_requests: list[idd_history.RacpRequest] = []
        self._next_sequence = first_sequence_number
        self._reference_at = time.monotonic()
        self._record_reference_time(idd_history.RecordingReason.UNDETERMINED)  # power-on

    def on_connect(self) -> None:
        self._counter, self._tracker = ids.E2ECounter(), ids.E2ECounterTracker()
        self._out_counters = {}

    def _e2e(self, uuid: str) -> int | None:
        """The next E2E-Counter of a characteristic the pump sends on (one counter each, per connection); None
        for a pump without E2E protection."""
        if not self.e2e:
            return None
        return self._out_counters.setdefault(uuid, ids.E2ECounter()).next()

    def _changed(self, flags: ids.StatusChangedFlag) -> None:
        self.status_changed |= flags
        self.indicate(ids.IDD_STATUS_CHANGED, ids.encode_status_changed(self.status_changed, counter=self._e2e("sc")))

    def annunciate(self, annunciation_type: ids.AnnunciationType) -> None:
        """The pump raises an annunciation (its own alarm), pending until confirmed at the pump."""
        self.annunciation = ids.Annunciation(
            self._next_annunciation, annunciation_type, ids.AnnunciationStatusValue.PENDING
        )
        self._next_annunciation += 1
        self._send_annunciation()

    def confirm_annunciation(self) -> None:
        if self.annunciation is not None:
            self.annunciation = dataclasses.replace(self.annunciation, status=ids.AnnunciationStatusValue.CONFIRMED)
            self._send_annunciation()

    def _send_annunciation(self) -> None:
        frame = ids.encode_annunciation_status(self.annunciation, counter=self._e2e("an"))
        self.indicate(ids.IDD_ANNUNCIATION_STATUS, frame)
        self._changed(ids.StatusChangedFlag.ANNUNCIATION_STATUS_CHANGED)

    def _status_reader(self, data: bytes) -> None:
        answer: ids.StatusReaderResponse
        try:
            request, _counter = ids.decode_status_reader_request(data, e2e=self.e2e)
        except InvalidFrame as err:
            fields = err.log_fields()
            answer = ids.StatusReaderResponseCode(
                int(fields.get("request_opcode", 0)),
                int(fields.get("response_code", ids.StatusReaderResponseCodeValue.INVALID_OPERAND)),
            )
        else:
            ok = ids.StatusReaderResponseCodeValue.SUCCESS
            if isinstance(request, ids.ResetStatus):
                self.status_resets.append(request.flags)
                self.status_changed &= ~request.flags
                answer = ids.StatusReaderResponseCode(ids.StatusReaderOpCode.RESET_STATUS, ok)
            elif isinstance(request, ids.GetDeliveredInsulin):
                bolus = round(sum(iu for _, iu in self.deliveries), 2)
                answer = ids.DeliveredInsulinResponse(bolus, round(self.basal_delivered_iu, 2))
            elif isinstance(request, ids.GetInsulinOnBoard):
                answer = ids.InsulinOnBoardResponse(round(sum(iu for _, iu in self.deliveries) * 0.5, 1), 180)
            else:
                answer = ids.StatusReaderResponseCode(
                    ids.StatusReaderOpCode.RESPONSE_CODE, ids.StatusReaderResponseCodeValue.OP_CODE_NOT_SUPPORTED
                )
        frame = ids.encode_status_reader_response(answer, counter=self._e2e("sr"))
        asyncio.get_running_loop().call_soon(self.indicate, ids.IDD_STATUS_READER_CONTROL_POINT, frame)

    def on_write(self, uuid: str, data: bytes) -> None:
        super().on_write(uuid, data)
        if uuid == device_info.CURRENT_TIME:
            self._record_reference_time(idd_history.RecordingReason.SET_DATE_TIME)
            return
        if uuid == ids.IDD_STATUS_READER_CONTROL_POINT:
            self._status_reader(data)
            return
        if uuid == idd_history.IDD_RECORD_ACCESS_CONTROL_POINT:
            self._history_access(data)
            return
        if uuid != ids.IDD_COMMAND_CONTROL_POINT:
            return
        if self.command_fault == "drop-before-acting":
            asyncio.get_running_loop().call_soon(self.drop_links)
            return
        try:
            command, counter = ids.decode_command(data, e2e=self.e2e)
            if counter is not None:
                self._tracker.check(counter)
        except InvalidFrame:
            self._answer(
                ids.ResponseCode(
                    int.from_bytes(data[:2], "little") if len(data) >= 2 else 0, ids.ResponseCodeValue.INVALID_OPERAND
                )
            )
            return
        self.commands_received.append(command)
        if self.command_fault == "refuse":  # the pump will not act (e.g. its reservoir is empty): it says so
            opcode = int.from_bytes(data[:2], "little")
            self._answer(ids.ResponseCode(opcode, ids.ResponseCodeValue.PROCEDURE_NOT_APPLICABLE))
            return
        answer: ids.IddResponse
        if isinstance(command, ids.SetBolus):
            bolus_id = self._next_bolus_id
            self._next_bolus_id += 1
            self._record_bolus(bolus_id, command)
            self.deliveries.append((bolus_id, command.fast_amount_iu))
            self.reservoir_iu -= command.fast_amount_iu
            answer = ids.SetBolusResponse(bolus_id)
            asyncio.get_running_loop().call_soon(
                self._changed,
                ids.StatusChangedFlag.ACTIVE_BOLUS_STATUS_CHANGED
                | ids.StatusChangedFlag.RESERVOIR_STATUS_CHANGED
                | ids.StatusChangedFlag.HISTORY_EVENT_RECORDED,
            )
        elif isinstance(command, ids.CancelBolus):
            answer = ids.CancelBolusResponse(command.bolus_id)
        elif isinstance(command, ids.SetTbrAdjustment):
            self.temp_basals.append((command.adjustment, command.duration_min))
            answer = ids.ResponseCode(ids.CommandOpCode.SET_TBR_ADJUSTMENT, ids.ResponseCodeValue.SUCCESS)
        else:
            answer = ids.ResponseCode(ids.CommandOpCode.CANCEL_TBR_ADJUSTMENT, ids.ResponseCodeValue.SUCCESS)
        if self.command_fault == "drop-after-write":
            asyncio.get_running_loop().call_soon(self.drop_links)
        elif self.command_fault != "no-answer":
            self._answer(answer)

    # -- history (IDD History Data, reported through the IDD Record Access Control Point) ----------------------
    def _record(self, event_type: idd_history.HistoryEventType, data: idd_history.HistoryEventData) -> None:
        offset = min(0xFFFF, int(time.monotonic() - self._reference_at))
        self.history.append(idd_history.HistoryRecord(event_type, self._next_sequence, offset, data))
        self._next_sequence += 1

    def _record_reference_time(self, reason: idd_history.RecordingReason) -> None:
        self._reference_at = time.monotonic()
        now = datetime.now(UTC).timestamp() + (self.clock_offset_s or 0.0)
        stamp = datetime.fromtimestamp(int(now), UTC)
        date_time = (stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second)
        self._record(idd_history.HistoryEventType.REFERENCE_TIME, idd_history.ReferenceTime(reason, date_time, 0, 0))

    def _record_bolus(self, bolus_id: int, command: ids.SetBolus) -> None:
        """Bolus Programmed when accepted, then (this pump delivers at once) Bolus Delivered, both parts each."""
        event = idd_history.HistoryEventType
        amounts = idd_history.BolusAmounts(
            bolus_id, command.bolus_type, command.fast_amount_iu, command.extended_amount_iu, command.duration_min
        )
        programmed = idd_history.BolusProgrammedDetails(
            command.delay_min,
            command.template_number,
            command.activation_type,
            command.reason_correction,
            command.reason_meal,
        )
        delivered = idd_history.BolusDeliveredDetails(
            0, command.activation_type, idd_history.BolusEndReason.PROGRAMMED_DURATION_OVER
        )
        self._record(event.BOLUS_PROGRAMMED_PART_1_OF_2, amounts)
        self._record(event.BOLUS_PROGRAMMED_PART_2_OF_2, programmed)
        self._record(event.BOLUS_DELIVERED_PART_1_OF_2, amounts)
        self._record(event.BOLUS_DELIVERED_PART_2_OF_2, delivered)

    def _history_access(self, data: bytes) -> None:
        codes = idd_history.RacpResponseCodeValue
        try:
            request, _counter = idd_history.decode_racp_request(data, e2e=self.e2e)
        except InvalidFrame as err:
            fields = err.log_fields()
            refused = idd_history.RacpResponseCode(
                int(fields.get("request_opcode", 0)), int(fields.get("response_code", codes.INVALID_OPERAND))
            )
            self._history_reply([], refused)
            return
        self.history_requests.append(request)
        opcode = idd_history.RacpOpcode
        selected = self._select_history(request)
        answer: idd_history.RacpResponse
        if request.opcode == opcode.REPORT_STORED_RECORDS:
            answer = idd_history.RacpResponseCode(request.opcode, codes.SUCCESS if selected else codes.NO_RECORDS_FOUND)
        elif request.opcode == opcode.REPORT_NUMBER_OF_STORED_RECORDS:
            answer = idd_history.RacpRecordCount(len(selected))
        elif request.opcode == opcode.ABORT_OPERATION:
            answer = idd_history.RacpResponseCode(request.opcode, codes.SUCCESS)
        else:  # a pump's therapy history is not the client's to delete
            answer = idd_history.RacpResponseCode(request.opcode, codes.OP_CODE_NOT_SUPPORTED)
        self._history_reply(selected if request.opcode == opcode.REPORT_STORED_RECORDS else [], answer)

    def _select_history(self, request: idd_history.RacpRequest) -> list[idd_history.HistoryRecord]:
        operator, filters = idd_history.RacpOperator, idd_history.RacpFilterType
        records = self.history
        if request.filter_type == filters.SEQUENCE_NUMBER_REFERENCE_TIME_EVENTS:
            records = [r for r in records if r.event_type == idd_history.HistoryEventType.REFERENCE_TIME]
        elif request.filter_type == filters.SEQUENCE_NUMBER_NON_REFERENCE_TIME_EVENTS:
            records = [r for r in records if r.event_type != idd_history.HistoryEventType.REFERENCE_TIME]
        values = request.sequence_numbers
        if request.operator == operator.ALL_RECORDS:
            return list(records)
        if request.operator == operator.FIRST_RECORD:
            return records[:1]
        if request.operator == operator.LAST_RECORD:
            return records[-1:]
        if request.operator == operator.GREATER_THAN_OR_EQUAL:
            return [r for r in records if r.sequence_number >= values[0]]
        if request.operator == operator.LESS_THAN_OR_EQUAL:
            return [r for r in records if r.sequence_number <= values[0]]
        if request.operator == operator.WITHIN_RANGE:
            return [r for r in records if values[0] <= r.sequence_number <= values[1]]
        return []

    def _history_reply(self, records: list[idd_history.HistoryRecord], answer: idd_history.RacpResponse) -> None:
        """The records as History Data notifications, then the RACP indication that closes the procedure."""
        data, control_point = idd_history.IDD_HISTORY_DATA, idd_history.IDD_RECORD_ACCESS_CONTROL_POINT
        frames = [(data, idd_history.encode_history_record(r, counter=self._e2e("hd"))) for r in records]
        frames.append((control_point, idd_history.encode_racp_response(answer, counter=self._e2e("hr"))))

        def send() -> None:
            for uuid, frame in frames:
                self.indicate(uuid, frame)

        asyncio.get_running_loop().call_soon(send)

    def _answer(self, response: ids.IddResponse) -> None:
        frame = ids.encode_response(response, counter=self._counter.next() if self.e2e else None)
        asyncio.get_running_loop().call_soon(self.indicate, ids.IDD_COMMAND_CONTROL_POINT, frame)

    async def _status(self, send: Callable[[bytes], None]) -> None:
        def make() -> bytes:
            self.reservoir_iu = max(0.0, self.reservoir_iu - self.basal_iu_h * 2.0 / 3600.0)
            self.basal_delivered_iu += self.basal_iu_h * 2.0 / 3600.0
            status = idd_status.IddStatus(
                idd_status.TherapyControlState.RUN,
                idd_status.OperationalState.READY,
                round(self.reservoir_iu, 1),
                True,
                self._e2e(idd_status.IDD_STATUS),
            )
            return idd_status.encode_idd_status(status, e2e=self.e2e)

        await self._every(2.0, make, send)

    async def _battery(self, send: Callable[[bytes], None]) -> None:
        def make() -> bytes:
            self.battery_pct = max(0.0, self.battery_pct - 0.5)
            return bas.encode_battery_level(round(self.battery_pct))

        await self._every(5.0, make, send)


class SimGattLink:
    """An in-process GATT connection to a simulated peripheral; implements drivers.ble.link.GattLink."""

    def __init__(self, peripheral: SimPeripheral) -> None:
        self.peripheral = peripheral
        self.disconnected = asyncio.Event()
        self.rssi_dbm: int | None = -60
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribers: dict[str, NotifyCallback] = {}
        self._connected = False

    def deliver(self, uuid: str, data: bytes) -> None:
        callback = self._subscribers.get(uuid)
        if callback is not None and not self.disconnected.is_set():
            callback(uuid, data)

    async def connect(self, timeout_s: float, *, pair: bool = False) -> None:
        await asyncio.sleep(0.01)  # a real connection takes at least a connection interval
        if not self.peripheral.online:
            await asyncio.sleep(min(timeout_s, 0.2))
            raise TransportError("peripheral not reachable", device_id=self.peripheral.name)
        self._connected = True
        self.peripheral.links.add(self)
        self.peripheral.connections += 1
        self.peripheral.on_connect()

    def _check(self) -> None:
        if not self._connected or self.disconnected.is_set():
            raise TransportError("not connected", device_id=self.peripheral.name)

    async def read(self, uuid: str) -> bytes:
        self._check()
        return self.peripheral.readable[uuid]()

    async def write(self, uuid: str, data: bytes, *, response: bool = True) -> None:
        self._check()
        self.peripheral.on_write(uuid, bytes(data))

    def has_characteristic(self, uuid: str, *, notify: bool = False) -> bool:
        if notify:
            p = self.peripheral
            return uuid in p.notifiers or uuid in p.indicatable or uuid in p.notifiable
        return uuid in self.peripheral.characteristics()

    async def start_notify(self, uuid: str, callback: NotifyCallback) -> None:
        self._check()
        self._subscribers[uuid] = callback
        notifier = self.peripheral.notifiers.get(uuid)
        if notifier is None:
            return  # indicated on demand, or readable only
        counter = 0

        def send(data: bytes) -> None:
            nonlocal counter
            if self.disconnected.is_set():
                return
            counter += 1
            shaped = self.peripheral.shaped(data, counter)
            if shaped is not None:
                self.peripheral.notifications_sent += 1
                callback(uuid, shaped)

        self._tasks.append(asyncio.create_task(notifier(send), name=f"sim-{self.peripheral.name}-{uuid[4:8]}"))

    def lose(self) -> None:
        self.disconnected.set()
        for task in self._tasks:
            task.cancel()

    async def disconnect(self) -> None:
        self.lose()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._connected = False
        self.peripheral.links.discard(self)


class SimBleWorld:
    """The simulated radio environment: peripherals by name, and the link factory the driver uses."""

    def __init__(self) -> None:
        self.peripherals: dict[str, SimPeripheral] = {}

    @classmethod
    def for_devices(cls, devices: Iterable[DeviceSection]) -> SimBleWorld:
        """One default simulated peripheral per configured device with a `sim:` address."""
        world = cls()
        for peripheral in default_peripherals(devices, "sim:"):
            world.add(peripheral)
        return world

    def add(self, peripheral: SimPeripheral) -> SimPeripheral:
        self.peripherals[peripheral.name] = peripheral
        return peripheral

    def link(self, address: str) -> SimGattLink:
        name = address.removeprefix("sim:")
        try:
            return SimGattLink(self.peripherals[name])
        except KeyError:
            raise TransportError("no simulated peripheral at address", device_id=name) from None


def default_peripherals(devices: Iterable[DeviceSection], scheme: str) -> Iterator[SimPeripheral]:
    """The default simulated peripheral of each configured device whose address uses `scheme` ("sim:", "virtual:")."""
    for device in devices:
        if device.address.startswith(scheme):
            yield default_peripheral(device.address.removeprefix(scheme), device.profile)


def default_peripheral(name: str, profile: str) -> SimPeripheral:
    """The demo's simulated device for a profile, with clinical episodes early enough to be seen."""
    if profile == "ecg_patch":
        return SimEcgPatch(name)
    if profile == "pulse_oximeter":
        return SimPulseOximeter(name, desaturations=(Episode(start_s=6.0, duration_s=8.0, level=85.0),))
    if profile == "cgm":
        return SimCgm(name, lows=(Episode(start_s=8.0, duration_s=8.0, level=58.0, ramp_s=3.0),))
    if profile == "insulin_pump":
        return SimInsulinPump(name)
    raise ValueError(profile)


class SimBackend:
    """`sim:NAME` addresses: simulated peripherals linked in-process, with no radio.  Registered as the `sim` BLE
    backend (pyproject.toml's `iomt_gateway.ble_backends` entry points)."""

    def link_factory(self, devices: Sequence[DeviceSection]) -> Callable[[str], SimGattLink]:
        return SimBleWorld.for_devices(devices).link

    def scanner(self) -> contextlib.AbstractAsyncContextManager[ScannerBackend]:
        raise ConfigError("sim: peripherals are linked in-process and cannot be heard; scan the virtual radio")


BACKEND = SimBackend()
