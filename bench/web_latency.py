"""Web service benchmark: `lifecycle serve` as real processes on loopback, driven by wrk.

- `GET /healthz` first: the floor, what the server, the framework, the middleware and a store
  round trip cost with no page;
- the preference page (GET /preferences/{token}, a different customer each request) and one-click
  unsubscribe (POST /unsubscribe/{token}, a different customer and topic each request, so each one
  is a real write; the consent rows stored are counted afterwards) at 100 concurrent connections:
  p50 / p99 latency and requests per second;
- ingest (POST /api/events) in batches of 1,000 events from 4 clients: events stored per second.

Run: `.venv/bin/python bench/web_latency.py [--store sqlite|postgresql] [--workers 2] [--seconds 10]`.
wrk (Debian's package; `make bench` installs it) runs on the same machine and shares its cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.config.settings import load_config  # noqa: E402
from engine.customers.importing import Importer  # noqa: E402
from engine.mail.links import Links  # noqa: E402
from engine.store import schema  # noqa: E402

CONNECTIONS = 100
WRK_THREADS = 2
API_KEY = "bench-key"
TOPICS = {
    "news": {"title": {"en": "News", "ar": "الأخبار"}},
    "offers": {"title": "Offers"},
    "tips": {"title": "Tips"},
    "surveys": {"title": "Surveys"},
}
POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
POSTGRES_DB = "lifecycle_bench_web"
WRK_SCRIPT = Path(__file__).with_name("wrk_paths.lua")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def postgres_database() -> str:
    """A fresh database of the bench's own on the local PostgreSQL."""
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {POSTGRES_DB} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {POSTGRES_DB}"))
    admin.dispose()
    return POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{POSTGRES_DB}"


def make_project(root: Path, port: int, customers: int, database: str) -> tuple[Links, str]:
    """config.yaml and a store with `customers` customers (every third in Arabic); returns the
    links the engine signs and the store's URL."""
    (root / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "database": database,
                "from": {"email": "hello@shop.example"},
                "locales": ["en", "ar"],
                "public_url": f"http://127.0.0.1:{port}",
                "topics": TOPICS,
            },
            allow_unicode=True,
        )
    )
    config = load_config(root / "config.yaml")
    records = [
        {"id": f"c{n}", "email": f"c{n}@example.com", "locale": "ar" if n % 3 == 0 else "en"} for n in range(customers)
    ]
    Importer(schema.open_store(config.database_url), config).customers(enumerate(records, 1), "bench")
    return Links(config), config.database_url


def write_paths(root: Path, links: Links, customers: int) -> dict[str, Path]:
    """The URLs wrk requests: a preference link per customer, an unsubscribe link per customer and topic."""
    files = {"preferences": root / "preferences.txt", "unsubscribe": root / "unsubscribe.txt"}
    files["preferences"].write_text(
        "".join(f"/preferences/{links.token('preferences', n)}\n" for n in range(1, customers + 1))
    )
    files["unsubscribe"].write_text(
        "".join(
            f"/unsubscribe/{links.token('unsubscribe', n, topic)}\n"
            for topic in TOPICS
            for n in range(1, customers + 1)
        )
    )
    (root / "healthz.txt").write_text("/healthz\n")
    files["healthz"] = root / "healthz.txt"
    return files


def start_server(root: Path, port: int, workers: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--config",
            str(root / "config.yaml"),
        ],
        cwd=REPO,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("lifecycle serve did not come up")


def wrk(base: str, paths: Path, method: str, seconds: float) -> dict:
    """One wrk run at CONNECTIONS connections; its summary (see bench/wrk_paths.lua)."""
    result = subprocess.run(
        ["wrk", f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", str(WRK_SCRIPT), base],
        env={**os.environ, "PATHS": str(paths), "METHOD": method, "THREADS": str(WRK_THREADS)},
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    if summary["non_2xx"] or summary["errors"]:
        raise SystemExit(f"{method} {paths.name}: {summary}")
    return summary


def ingest(base: str, customers: int, batches: int) -> float:
    """Events stored per second: batches of 1,000 events posted by 4 clients at once."""
    from concurrent.futures import ThreadPoolExecutor

    def post(batch: int) -> None:
        body = json.dumps(
            [
                {
                    "id": f"b{batch}-{n}",
                    "customer": f"c{n % customers}",
                    "event": "page_view",
                    "at": "2026-11-01T10:00:00Z",
                    "properties": {"path": "/products/42"},
                }
                for n in range(1000)
            ]
        ).encode()
        request = urllib.request.Request(
            f"{base}/api/events",
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            if json.load(response)["stored"] != 1000:
                raise SystemExit(f"ingest batch {batch}: not all stored")

    started = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(post, range(batches)))
    return batches * 1000 / (time.perf_counter() - started)


def consents(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM consent WHERE source = 'one_click'")).scalar_one()
    engine.dispose()
    return count


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def row(name: str, summary: dict) -> tuple[str, ...]:
    return (
        name,
        f"{summary['p50']:.1f} ms",
        f"{summary['p99']:.1f} ms",
        f"{summary['requests'] / summary['seconds']:,.0f} req/s",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--customers", type=int, default=20000)
    parser.add_argument("--seconds", type=int, default=10, help="seconds of load per measurement")
    parser.add_argument("--batches", type=int, default=50, help="ingest batches of 1,000 events")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `make bench` installs Debian's package")
    os.environ.setdefault("LIFECYCLE_SECRET", "bench-secret")
    os.environ["LIFECYCLE_API_KEYS"] = API_KEY
    with tempfile.TemporaryDirectory() as folder:
        root, port = Path(folder), free_port()
        database = "sqlite:///store.db" if args.store == "sqlite" else postgres_database()
        links, url = make_project(root, port, args.customers, database)
        paths = write_paths(root, links, args.customers)
        server = start_server(root, port, args.workers)
        base = f"http://127.0.0.1:{port}"
        try:
            wrk(base, paths["preferences"], "GET", 3)  # warm up: connections, caches
            rows = [
                row("floor: GET /healthz", wrk(base, paths["healthz"], "GET", args.seconds)),
                row("preference page (GET)", wrk(base, paths["preferences"], "GET", args.seconds)),
            ]
            unsubscribes = wrk(base, paths["unsubscribe"], "POST", args.seconds)
            rows.append(row("one-click unsubscribe (POST)", unsubscribes))
            rate = ingest(base, args.customers, args.batches)
        finally:
            server.terminate()
            server.wait(timeout=10)
        stored = consents(url)
    print(
        f"machine: {machine()}; {args.store} store, {args.workers} server processes, "
        f"{CONNECTIONS} connections from wrk on the same machine, {args.seconds:g} s each\n"
    )
    print("| what | p50 | p99 | throughput |\n|---|---|---|---|")
    for cells in rows:
        print("| " + " | ".join(cells) + " |")
    print(f"| ingest POST /api/events (batches of 1,000) | | | {rate:,.0f} events/s |")
    print(
        f"\none-click POSTs answered: {unsubscribes['requests']:,}; consent rows stored: {stored:,} "
        "(one per POST answered, and those still in flight when wrk stopped)"
    )


if __name__ == "__main__":
    main()
