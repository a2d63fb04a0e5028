"""A subscriber in its own process that writes the id of every event it receives to a ledger file.

    python -m tests.harness.ledger_sink PORT LEDGER [--delay SECONDS] [--stall]

Each POST's raw ``ce-id`` header is appended to LEDGER (one line, flushed) the moment the request
has been read, before it is answered: what is in the ledger has arrived. ``--delay`` answers each
request that many seconds later (a slow subscriber); ``--stall`` answers nothing until the process
gets SIGUSR1 (a stalled subscriber that comes back). It
reads nothing but that one header, so it shares no code with the client that encodes the events.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import TextIO

from aiohttp import web


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("ledger")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--stall", action="store_true")
    args = parser.parse_args()
    with open(args.ledger, "a", buffering=1) as ledger:  # line-buffered: each id is on disk at once
        asyncio.run(_serve(args.port, ledger, args.delay, args.stall))


async def _serve(port: int, ledger: TextIO, delay: float, stall: bool) -> None:
    unstalled = asyncio.Event()
    if not stall:
        unstalled.set()

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        ledger.write(request.headers.get("ce-id", "(none)") + "\n")
        await unstalled.wait()
        if delay:
            await asyncio.sleep(delay)  # the subscriber's own work
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/{path:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"ledger sink listening on {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, unstalled.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    main()
