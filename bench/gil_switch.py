"""Why the flow's entry point sets BWSM_GIL_SWITCH_SECONDS: an asyncio HTTP loop beside a busy thread.

The submission loop shares the process with the dataflow's worker thread. After every system call the loop must win
the GIL back, and a thread that asks for it waits up to the switch interval while the other one computes. This
runs an aiohttp client (20 requests at a time against an aiohttp server in another process) beside a thread that
only computes, alternating the switch interval, and prints the loop's requests/s for each.

Alone: .venv/bin/python -m bench.gil_switch [--seconds 4 --rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import threading
import time

INTERVALS = (0.005, 0.001)


def serve(port: int) -> None:
    from aiohttp import web

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"the server on port {port} did not start within {deadline_s:.0f} s")


def requests_per_second(port: int, seconds: float) -> float:
    """The asyncio client's rate while another thread keeps the CPU busy."""
    import aiohttp

    stop = threading.Event()

    def burn() -> None:
        x = 0
        while not stop.is_set():
            for i in range(1000):
                x += i * i

    async def client() -> float:
        async with aiohttp.ClientSession() as session:
            async def one() -> None:
                async with session.get(f"http://127.0.0.1:{port}/") as response:
                    await response.read()

            n, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                await asyncio.gather(*(one() for _ in range(20)))
                n += 20
            return n / (time.perf_counter() - started)

    busy = threading.Thread(target=burn, daemon=True)
    busy.start()
    try:
        return asyncio.run(client())
    finally:
        stop.set()
        busy.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.gil_switch", "--serve", str(port)])
    try:
        wait_for_port(port)
        before = sys.getswitchinterval()
        for _ in range(args.rounds):
            for interval in INTERVALS:
                sys.setswitchinterval(interval)
                rate = requests_per_second(port, args.seconds)
                print(f"switch interval {interval * 1000:g} ms: {rate:,.0f} requests/s beside a busy thread",
                      flush=True)
        sys.setswitchinterval(before)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
