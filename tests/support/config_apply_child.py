"""Power-cut test child: runs the gateway's runner and SIGKILLs itself at one step of a remote-config apply.

Run as `python -m tests.support.config_apply_child CONFIG STEP`; prints STARTED once the gateway is online.  The
kill is a real SIGKILL of this process at the named step (`gateway.runner.STEPS`): nothing gets to clean up.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from cloud_sync.uplink import SyncState
from gateway.commands.ceilings import SafetyCeilings
from gateway.config import load_config
from gateway.core.logs import configure_logging
from gateway.runner import GatewayRunner, recover_pending


def main() -> None:
    config_path, step = Path(sys.argv[1]), sys.argv[2]
    rolled_back = recover_pending(config_path)
    config = load_config(config_path)
    configure_logging("info", "json")

    def on_step(name: str) -> None:
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        runner = GatewayRunner(
            config_path,
            config,
            health_timeout_s=15.0,
            ceilings=SafetyCeilings(),
            rolled_back_at_start=rolled_back,
            on_step=on_step,
        )
        task = asyncio.create_task(runner.run(stop))
        # Online: subscribed to the downlink, so the configuration published next is received.
        while not (runner.gateway and runner.gateway.parts and runner.gateway.parts.uplink.state is SyncState.ONLINE):
            await asyncio.sleep(0.05)
        print("STARTED", flush=True)
        await task

    asyncio.run(run())


if __name__ == "__main__":
    main()
