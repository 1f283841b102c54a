"""`iomt-gateway bridge fhir|hl7`: run one bridge worker (start N of them, with the same --group, to scale out).

    iomt-gateway bridge fhir --broker mqtts://broker:8883 --tls-ca ca.pem --tls-cert w.pem --tls-key w.key \\
        --fhir-base https://fhir.example/fhir --client-id fhir-bridge-0
    iomt-gateway bridge hl7 --broker mqtts://... --mllp engine.example:2575 --client-id hl7-bridge-0

Exit codes: 0 stopped by SIGTERM/SIGINT, 2 configuration error (nothing was started), 1 failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import ssl
import sys
from pathlib import Path

from cloud_sync.bridge.fhir import FhirSink
from cloud_sync.bridge.fhir_client import FhirClient
from cloud_sync.bridge.hl7 import Hl7Sink, MllpClient, SenderIdentity
from cloud_sync.bridge.patients import DEFAULT_SYSTEM, PatientDirectory
from cloud_sync.bridge.worker import BridgeWorker, BrokerSettings, Parking, Sink
from gateway.core.errors import ConfigError
from gateway.core.logs import configure_logging, get_logger

log = get_logger("cloud_sync.bridge")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def _default_park_dir() -> Path:
    state = os.environ.get("STATE_DIRECTORY")  # systemd StateDirectory=
    return Path(state) / "parked" if state else Path("iomt-bridge-parked")


def _mllp_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("--mllp must be HOST:PORT")
    return host.strip("[]"), int(port)


def _fhir_sink(args: argparse.Namespace) -> Sink:
    if not args.fhir_base or not args.fhir_base.startswith(("https://", "http://")):
        raise ConfigError("bridge fhir needs --fhir-base https://HOST/PATH")
    verify: ssl.SSLContext | bool = True
    if args.fhir_ca:
        verify = ssl.create_default_context(cafile=str(args.fhir_ca))
    headers = {}
    if args.fhir_token_file:
        try:
            headers["Authorization"] = "Bearer " + args.fhir_token_file.read_text("utf-8").strip()
        except OSError as err:
            raise ConfigError("--fhir-token-file cannot be read", error=type(err).__name__) from None
    if args.patient_map:
        patients = PatientDirectory.from_file(args.patient_map, args.patient_system)
    else:
        patients = PatientDirectory(args.patient_system)
    client = FhirClient(args.fhir_base, timeout_s=args.timeout_s, verify=verify, headers=headers)
    return FhirSink(client, patients)


def _hl7_sink(args: argparse.Namespace) -> Sink:
    if not args.mllp:
        raise ConfigError("bridge hl7 needs --mllp HOST:PORT (the interface engine's MLLP listener)")
    host, port = _mllp_address(args.mllp)
    tls = ssl.create_default_context(cafile=str(args.mllp_ca)) if args.mllp_ca else None
    sender = SenderIdentity(
        application=args.sending_application,
        facility=args.sending_facility,
        receiving_application=args.receiving_application,
        receiving_facility=args.receiving_facility,
    )
    return Hl7Sink(MllpClient(host, port, timeout_s=args.timeout_s, tls=tls), sender)


class BridgeCommand:
    help = "bridge the sync API into hospital systems: FHIR R4 or HL7 v2 PCD-01/PCD-04 (docs/INTEGRATION.md)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "target", choices=["fhir", "hl7"], help="fhir: a FHIR R4 server; hl7: an MLLP interface engine"
        )
        parser.add_argument("--broker", required=True, help="mqtts://HOST[:PORT] (mqtt:// only to a loopback broker)")
        parser.add_argument("--tls-ca", type=Path, help="CA bundle the broker's certificate must chain to")
        parser.add_argument("--tls-cert", type=Path, help="this worker's client certificate (mutual TLS)")
        parser.add_argument("--tls-key", type=Path, help="its private key")
        parser.add_argument("--topic-prefix", default="iomt/v1")
        parser.add_argument("--group", help="shared-subscription group; workers of one group split the stream")
        parser.add_argument("--client-id", help="stable per worker (its session keeps its unacknowledged messages)")
        parser.add_argument("--concurrency", type=int, default=4, help="messages in hand at once (fhir; hl7 is 1)")
        parser.add_argument("--session-expiry-s", type=int, default=3600)
        parser.add_argument("--park-dir", type=Path, help="where parked messages go (default $STATE_DIRECTORY/parked)")
        parser.add_argument("--timeout-s", type=float, default=30.0, help="per request to the target")
        parser.add_argument("--retry-max-s", type=float, default=30.0, help="longest wait between retries")
        parser.add_argument("--log-level", default="info")
        fhir = parser.add_argument_group("fhir")
        fhir.add_argument("--fhir-base", help="the FHIR server's base URL")
        fhir.add_argument("--fhir-ca", type=Path, help="CA bundle for an https FHIR server (default: the system's)")
        fhir.add_argument("--fhir-token-file", type=Path, help="a file holding a bearer token for the FHIR server")
        fhir.add_argument("--patient-map", type=Path, help="JSON object: patient pseudonym -> Patient/<id>")
        fhir.add_argument("--patient-system", default=DEFAULT_SYSTEM, help="identifier system for unmapped pseudonyms")
        hl7 = parser.add_argument_group("hl7")
        hl7.add_argument("--mllp", help="HOST:PORT of the interface engine's MLLP listener")
        hl7.add_argument("--mllp-ca", type=Path, help="MLLP over TLS: CA bundle of the engine's certificate")
        hl7.add_argument("--sending-application", default="IOMT_GATEWAY")
        hl7.add_argument("--sending-facility", default="")
        hl7.add_argument("--receiving-application", default="")
        hl7.add_argument("--receiving-facility", default="")

    def run(self, args: argparse.Namespace) -> int:
        configure_logging(args.log_level)
        target = args.target
        try:
            broker = BrokerSettings.from_url(
                args.broker,
                ca_file=args.tls_ca,
                cert_file=args.tls_cert,
                key_file=args.tls_key,
                topic_prefix=args.topic_prefix,
            )
            sink = _fhir_sink(args) if target == "fhir" else _hl7_sink(args)
        except ConfigError as err:
            print(f"iomt-gateway bridge: config error: {err.message}", file=sys.stderr)  # noqa: T201
            return EXIT_CONFIG
        worker = BridgeWorker(
            broker,
            sink,
            Parking(args.park_dir or _default_park_dir()),
            group=args.group or f"iomt-{target}",
            client_id=args.client_id or f"iomt-bridge-{target}-{socket.gethostname()}",
            concurrency=max(1, args.concurrency) if target == "fhir" else 1,
            session_expiry_s=args.session_expiry_s,
            retry_max_s=args.retry_max_s,
        )

        async def main() -> None:
            task = asyncio.create_task(worker.run(), name=f"bridge-{target}")
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, task.cancel)
            with contextlib.suppress(asyncio.CancelledError):
                await task

        try:
            asyncio.run(main())
        except ConfigError as err:
            print(f"iomt-gateway bridge: config error: {err.message}", file=sys.stderr)  # noqa: T201
            return EXIT_CONFIG
        except Exception as err:
            log.error("bridge crashed", exc_info=err)
            return EXIT_FAILURE
        log.info("bridge stopped", sink=target, count=worker.stats.messages)
        return EXIT_OK


COMMAND = BridgeCommand()
