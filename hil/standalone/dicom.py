"""`hil sim dicom`: a point-of-care modality sending DICOM objects to a Storage SCP (the gateway's DICOM intake).

Generated objects (a resting 12-lead ECG, an ultrasound still; new UIDs every time) or given Part 10 files, sent
over one association per round with C-STORE.  One round by default; `--every S` repeats until stopped.  The run
fails (exit 1) when an object was not stored: the association refused, or a status other than Success.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydicom import Dataset

    from hil.rig import DicomPeer

GENERATED = ("ecg", "image")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--to", required=True, metavar="HOST:PORT", help="the Storage SCP (the gateway's DICOM intake)")
    parser.add_argument("--called-ae", default="IOMT_GW", help="the SCP's AE title (default IOMT_GW)")
    parser.add_argument("--calling-ae", default="POC_US_CART", help="this modality's AE title (default POC_US_CART)")
    what = parser.add_argument_group("objects")
    what.add_argument("--file", type=Path, action="append", metavar="PATH", help="send this Part 10 file (repeatable)")
    what.add_argument(
        "--generate", choices=GENERATED, action="append", help="generated objects per round (default: ecg and image)"
    )
    what.add_argument("--count", type=int, default=1, help="studies per round (default 1)")
    what.add_argument("--every", type=float, metavar="S", help="send a round every S seconds until stopped")
    tls = parser.add_argument_group("TLS")
    tls.add_argument("--tls-ca", type=Path, metavar="FILE", help="DICOM over TLS: the CA that verifies the gateway")
    tls.add_argument("--tls-cert", type=Path, metavar="FILE", help="client certificate, if the SCP asks for one")
    tls.add_argument("--tls-key", type=Path, metavar="FILE", help="its private key")


class DicomSimulator:
    name = "dicom"

    def __init__(
        self, peer: DicomPeer, files: list[Path], generate: list[str], count: int, every_s: float | None
    ) -> None:
        self.peer = peer
        self.files = files
        self.generate = generate
        self.count = count
        self.every_s = every_s
        self.rounds = 0
        self.sent = 0
        self.statuses: collections.Counter[str] = collections.Counter()  # "0x0000" / "not sent" -> objects
        self.by_kind: collections.Counter[str] = collections.Counter()

    def _objects(self) -> list[tuple[str, Path | Dataset]]:
        from hil.dicom_sim import twelve_lead_ecg, ultrasound_image  # noqa: PLC0415

        objects: list[tuple[str, Path | Dataset]] = [("file", path) for path in self.files]
        for study in range(self.count):
            seed = self.rounds * self.count + study
            for kind in self.generate:
                objects.append((kind, twelve_lead_ecg(seed=seed) if kind == "ecg" else ultrasound_image(seed=seed)))
        return objects

    async def run(self, announce: Callable[[str], None]) -> None:
        from hil.rig import send_dicom  # noqa: PLC0415

        what = [*(["file"] * len(self.files)), *(self.generate * self.count)]
        announce(
            f"sending {len(what)} object(s) a round to {self.peer.where} "
            f"(called AE {self.peer.called_ae}, calling AE {self.peer.calling_ae})"
            + (f", a round every {self.every_s:g} s" if self.every_s else "")
        )
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            objects = await asyncio.to_thread(self._objects)
            statuses = await send_dicom(self.peer, [item for _, item in objects])
            self.rounds += 1
            for (kind, _), status in zip(objects, statuses, strict=True):
                self.statuses["not sent" if status is None else f"0x{status:04X}"] += 1
                if status is not None:
                    self.sent += 1
                    self.by_kind[kind] += 1
            if statuses and all(s is None for s in statuses):
                announce(f"round {self.rounds}: no association with {self.peer.where}")
            else:
                stored = sum(1 for s in statuses if s == 0)
                announce(f"round {self.rounds}: {stored} of {len(statuses)} stored")
            if self.every_s is None:
                return
            due += self.every_s
            await asyncio.sleep(max(0.0, due - loop.time()))

    def summary(self) -> dict[str, Any]:
        return {
            "target": self.peer.where,
            "rounds": self.rounds,
            "objects_sent": self.sent,
            "stored": self.statuses.get("0x0000", 0),
            "statuses": dict(sorted(self.statuses.items())),
            "sent_by_kind": dict(sorted(self.by_kind.items())),
        }

    def failure(self) -> str | None:
        failed = sum(n for status, n in self.statuses.items() if status != "0x0000")
        if not failed:
            return None
        if self.statuses.get("not sent", 0) == failed and not self.sent:
            return (
                f"no association with {self.peer.where}: nothing listening, or the SCP refused "
                f"the AE titles (calling {self.peer.calling_ae}, called {self.peer.called_ae})"
            )
        refused = ", ".join(f"{status} x{n}" for status, n in sorted(self.statuses.items()) if status != "0x0000")
        return f"{failed} object(s) not stored ({refused})"


def build(args: argparse.Namespace) -> DicomSimulator:
    from gateway.core.errors import ConfigError  # noqa: PLC0415
    from hil.rig import DicomPeer  # noqa: PLC0415

    files: list[Path] = args.file or []
    for path in files:
        if not path.is_file():
            raise ConfigError(f"--file {path}: no such file")
    generate: list[str] = args.generate or ([] if files else list(GENERATED))
    if args.count < 1 or (args.every is not None and not args.every > 0):
        raise ConfigError("--count must be 1 or more, --every more than 0")
    tls = {"tls_ca": args.tls_ca, "tls_cert": args.tls_cert, "tls_key": args.tls_key}
    peer = DicomPeer.parse(
        args.to,
        called_ae=args.called_ae,
        calling_ae=args.calling_ae,
        **{key: value for key, value in tls.items() if value is not None},
    )
    return DicomSimulator(peer, files, generate, args.count, args.every)
