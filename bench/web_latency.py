"""Web service benchmark: `lifecycle serve` as a real process on loopback, a throwaway SQLite store.

- preference page (GET /preferences/{token}) and one-click unsubscribe (POST /unsubscribe/{token},
  each a real write) at 100 concurrent clients: p50 / p99 latency and requests per second;
- ingest (POST /api/events) in batches of 1,000 events: events stored per second.

Run: `.venv/bin/python bench/web_latency.py [--customers N] [--requests N] [--batches N]`.
The client runs on the same machine as the server and shares its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine import schema  # noqa: E402
from engine.config import load_config  # noqa: E402
from engine.importing import Importer  # noqa: E402
from engine.links import Links  # noqa: E402

CLIENTS = 100
API_KEY = "bench-key"
TOPICS = {"news": {"title": {"en": "News", "ar": "الأخبار"}}, "offers": {"title": "Offers"},
          "tips": {"title": "Tips"}, "surveys": {"title": "Surveys"}}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_project(root: Path, port: int, customers: int) -> Links:
    """config.yaml and a store with `customers` customers; returns the links the engine signs."""
    (root / "config.yaml").write_text(yaml.safe_dump({
        "database": "sqlite:///store.db", "from": {"email": "hello@shop.example"}, "locales": ["en", "ar"],
        "public_url": f"http://127.0.0.1:{port}", "topics": TOPICS}, allow_unicode=True))
    config = load_config(root / "config.yaml")
    records = [{"id": f"c{n}", "email": f"c{n}@example.com", "locale": "ar" if n % 3 == 0 else "en"}
               for n in range(customers)]
    Importer(schema.open_store(config.database_url), config).customers(enumerate(records, 1), "bench")
    return Links(config)


def start_server(root: Path, port: int, workers: int = 1) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", str(port), "--workers", str(workers),
                               "--config", str(root / "config.yaml")], cwd=REPO, env=os.environ.copy())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("lifecycle serve did not come up")


async def load(session: aiohttp.ClientSession, requests: list[tuple[str, str, bytes | None]]) -> tuple[list[float], float]:
    """Runs the requests through CLIENTS concurrent clients; returns each latency and the wall time."""
    queue = iter(requests)
    latencies: list[float] = []

    async def client() -> None:
        for method, url, body in queue:
            started = time.perf_counter()
            async with session.request(method, url, data=body, headers=FORM if body else None) as response:
                await response.read()
                if response.status != 200:
                    raise SystemExit(f"{method} {url}: {response.status}")
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return latencies, time.perf_counter() - started


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=1000)[int(p * 10) - 1] * 1000


async def ingest(session: aiohttp.ClientSession, base: str, customers: int, batches: int) -> float:
    """Events per second, batches of 1,000 posted by 4 clients at once."""
    bodies = [[{"id": f"b{b}-{n}", "customer": f"c{n % customers}", "event": "page_view",
                "at": "2026-11-01T10:00:00Z", "properties": {"path": "/products/42"}} for n in range(1000)]
              for b in range(batches)]
    queue = iter(bodies)

    async def client() -> None:
        for body in queue:
            async with session.post(f"{base}/api/events", json=body,
                                    headers={"Authorization": f"Bearer {API_KEY}"}) as response:
                result = await response.json()
                if response.status != 200 or result["stored"] != 1000:
                    raise SystemExit(f"ingest: {response.status} {result}")

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(4)))
    return batches * 1000 / (time.perf_counter() - started)


async def measure(base: str, links: Links, customers: int, count: int, batches: int) -> list[tuple[str, str]]:
    preference = [("GET", f"{base}/preferences/{links.token('preferences', 1 + n % customers)}", None)
                  for n in range(count)]
    topics = list(TOPICS)
    one_click = [("POST", f"{base}/unsubscribe/{links.token('unsubscribe', 1 + n % customers, topics[n // customers % 4])}",
                  b"List-Unsubscribe=One-Click") for n in range(count)]
    rows = []
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(connector=connector) as session:
        await load(session, preference[:500])  # warm up: connections, template cache
        for name, requests in (("preference page (GET)", preference), ("one-click unsubscribe (POST)", one_click)):
            latencies, wall = await load(session, requests)
            rows.append((name, f"{percentile(latencies, 50):.1f} ms", f"{percentile(latencies, 99):.1f} ms",
                         f"{len(latencies) / wall:,.0f} req/s"))
        rate = await ingest(session, base, customers, batches)
        rows.append(("ingest POST /api/events (batches of 1,000)", "", "", f"{rate:,.0f} events/s"))
    return rows


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=8000, help="requests per page kind")
    parser.add_argument("--batches", type=int, default=50, help="ingest batches of 1,000 events")
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    args = parser.parse_args()
    os.environ.setdefault("LIFECYCLE_SECRET", "bench-secret")
    os.environ["LIFECYCLE_API_KEYS"] = API_KEY
    with tempfile.TemporaryDirectory() as folder:
        root, port = Path(folder), free_port()
        links = make_project(root, port, args.customers)
        server = start_server(root, port, args.workers)
        try:
            rows = asyncio.run(measure(f"http://127.0.0.1:{port}", links, args.customers, args.requests, args.batches))
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"machine: {machine()}; {CLIENTS} concurrent clients on loopback, SQLite store\n")
    print("| what | p50 | p99 | throughput |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
