"""modelport's own CPU cost per request, without sockets, the kernel or a load generator.

N simulated keep-alive connections go through the real ``HttpProtocol`` and the real app
(the same settings ``modelport serve MODEL`` uses, one worker): each writes a POST as soon
as its previous answer arrives, as ``wrk`` does. What is left out is exactly the part
that is not ours: socket reads/writes, epoll and the client. So this measures the Python
work per request, repeatably, in seconds rather than a full benchmark run.

    .venv/bin/python benchmarks/micro.py [--model m1|m2] [--connections 64]
        [--seconds 5] [--repeats 3] [--profile FILE]

Prints µs of CPU per request (median of the repeats) and the mean batch size; the
simulated clients' own bookkeeping (~1 µs) is included, so the figure leans slightly high.
Pin it
(``taskset -c 0``) for steadier figures. ``--profile`` writes a cProfile of one more run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import models

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


class Client:
    """One keep-alive connection that sends its next request once the answer is in."""

    def __init__(self, bench: Bench, port: int) -> None:
        self.bench = bench
        from modelport.testing import FakeTransport

        self.protocol = bench.protocol()
        self.transport = FakeTransport(self.answered, peer_port=port)
        self.protocol.connection_made(self.transport)

    def send(self) -> None:
        self.protocol.data_received(self.bench.request)

    def answered(self, data: bytes) -> None:
        if not data.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {data[:300]!r}")
        self.bench.done += 1
        if self.bench.running:
            self.bench.loop.call_soon(self.send)  # the next request arrives a turn later


class Bench:
    def __init__(self, app: Any, loop: asyncio.AbstractEventLoop, path: str, body: bytes) -> None:
        import uvicorn
        from uvicorn.server import ServerState

        from modelport.api.protocol import HttpProtocol

        self.loop = loop
        self.config = uvicorn.Config(app, log_config=None, lifespan="off", proxy_headers=False)
        self.config.load()
        self.state = ServerState()
        self.HttpProtocol = HttpProtocol
        self.request = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.done = 0
        self.running = False

    def protocol(self) -> Any:
        return self.HttpProtocol(self.config, self.state, {}, _loop=self.loop)

    async def measure(self, clients: list[Client], seconds: float) -> float:
        """CPU µs per request over about ``seconds`` of closed-loop load."""
        self.done = 0
        self.running = True
        for client in clients:
            client.send()
        await asyncio.sleep(seconds * 0.2)  # warm-up
        start_done, start_cpu = self.done, time.process_time()
        await asyncio.sleep(seconds)
        cpu, done = time.process_time() - start_cpu, self.done - start_done
        self.running = False
        await asyncio.sleep(0.2)  # let the requests in flight finish
        if not done:
            raise RuntimeError("no request completed in the measured window")
        return cpu / done * 1e6


async def main(args: argparse.Namespace) -> None:
    from modelport.api import gc_policy
    from modelport.api.app import create_app
    from modelport.bootstrap import build
    from modelport.settings import load_settings

    work = Path(tempfile.mkdtemp(prefix="modelport-micro-"))
    files = models.build([args.model], work)[args.model]
    settings = load_settings(
        {"models": [str(files.model)], "data_dir": str(work / "data"), "server": {"workers": 1}}
    )
    services = build(settings)
    app = create_app(services)
    for start in services.startup:
        await start()
    await services.registry.load_all()
    gc_policy.raise_thresholds()
    gc_policy.freeze()
    path = f"/v1/models/{files.stem}/predict"
    bench = Bench(app, asyncio.get_running_loop(), path, files.native_body.read_bytes())
    clients = [Client(bench, 40000 + i) for i in range(args.connections)]
    stats_before = _batch_stats(services, files.stem)
    results = [await bench.measure(clients, args.seconds) for _ in range(args.repeats)]
    stats_after = _batch_stats(services, files.stem)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        await bench.measure(clients, args.seconds)
        profiler.disable()
        profiler.dump_stats(args.profile)
    batches = stats_after[0] - stats_before[0]
    rows = stats_after[1] - stats_before[1]
    print(
        f"| model | connections | µs CPU/request (median of {args.repeats}) | runs | mean batch |"
    )
    print("|---|---:|---:|---|---:|")
    runs = ", ".join(f"{r:.1f}" for r in results)
    mean = rows / batches if batches else 0.0
    print(
        f"| {args.model} | {args.connections} | {statistics.median(results):.1f} "
        f"| {runs} | {mean:.1f} |"
    )
    for stop in reversed(services.shutdown):
        await stop()
    await services.registry.close()


def _batch_stats(services: Any, name: str) -> tuple[int, int]:
    """(batches, rows) so far for the model's served version."""
    served = services.service.target(name, None)
    stats = served.batcher.stats
    return stats.batches, stats.rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["m1", "m2"], default="m1")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", help="write a cProfile of one more run to this file")
    return parser.parse_args(argv)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(parse_args()))
