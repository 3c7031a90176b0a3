"""Latency and throughput of `facegan serve` under a bounded load on 127.0.0.1, and its rate limit.

    python benchmarks/serve_load.py --run runs/00001-dcgan                 # 200 requests, 8 clients
    python benchmarks/serve_load.py --requests 16 --clients 2 --tiny       # a smoke run in seconds (the tests')

The server is uvicorn in a thread of this process, bound to 127.0.0.1 on a free port; clients are
httpx connections in threads, each asking /api/face.png for its own seeds. The first phase runs
with the rate limit out of the way and must answer every request with a PNG; the second serves
the same model with a limit of 5 a second (bursts of 10) and must answer a quick burst of 30 with
some 429s. Without --run it trains a tiny run first (--tiny: 32 px, width 8, one epoch).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import uvicorn

from facegan.serve import Model, create_app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A uvicorn server of an app on 127.0.0.1, in a thread, while the `with` lasts."""

    def __init__(self, app) -> None:
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))

    def __enter__(self) -> str:
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start in 30 s")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def load(url: str, requests: int, clients: int) -> tuple[list[float], list[int], float]:
    """Latencies (s) and status codes of `requests` GETs from `clients` concurrent clients, and the wall time."""
    def client(index: int) -> list[tuple[float, int]]:
        results = []
        with httpx.Client(base_url=url, timeout=60) as http:
            for seed in range(index, requests, clients):
                started = time.perf_counter()
                response = http.get("/api/face.png", params={"seed": seed, "truncation": 0.8})
                ok = response.status_code == 200 and response.content[:8] == b"\x89PNG\r\n\x1a\n"
                results.append((time.perf_counter() - started, response.status_code if ok else -1))
        return results

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = [item for part in pool.map(client, range(clients)) for item in part]
    return [t for t, _ in done], [code for _, code in done], time.perf_counter() - started


def tiny_run(root: Path) -> Path:
    from facegan.config import from_preset
    from facegan.data.prepare import prepare
    from facegan.train.loop import train

    data = prepare("synthetic", root / "data", count=64, size=32, progress=False)
    return train(from_preset("dcgan", data=str(data), runs_dir=str(root / "runs"), epochs=1, batch_size=16, g_width=8,
                             d_width=8, device="cpu"), progress=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run, checkpoint or export to serve (default: train a tiny run)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tiny", action="store_true", help="train the tiny run even if --run is given")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        run = tiny_run(Path(work)) if args.tiny or args.run is None else args.run
        model = Model(run)  # loaded once, shared by both servers
        with Server(create_app(model, rate=1e9, burst=10**9)) as url:
            load(url, args.clients, args.clients)  # warm-up: first calls allocate
            latencies, codes, wall = load(url, args.requests, args.clients)
        with Server(create_app(model, rate=5, burst=10)) as url, httpx.Client(base_url=url, timeout=60) as http:
            burst = [http.get("/api/info").status_code for _ in range(30)]
    failed = sum(code != 200 for code in codes)
    limited = burst.count(429)
    p50, p99 = statistics.median(latencies), statistics.quantiles(latencies, n=100, method="inclusive")[98]
    print(f"facegan serve on 127.0.0.1, CPU, {model.resolution} px, latent {model.latent_dim} ({run})")
    print(f"{'requests':>8}  {'clients':>7}  {'p50 ms':>7}  {'p99 ms':>7}  {'req/s':>7}  {'failed':>6}  {'429 of 30 burst':>15}")
    print("-" * 70)
    print(f"{len(codes):>8}  {args.clients:>7}  {p50 * 1000:>7.1f}  {p99 * 1000:>7.1f}  {len(codes) / wall:>7.1f}  "
          f"{failed:>6}  {limited:>15}")
    problems = ([f"{failed} requests failed"] if failed else []) + ([] if limited else ["the rate limit never answered 429"])
    if problems:
        print("FAILED: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
