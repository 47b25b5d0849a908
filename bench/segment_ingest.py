"""Ingest benchmark: events a second through Segment's batch API (`POST /v1/batch`), against the
straightforward way of sending the same events one call at a time (`POST /v1/track`), and through
Segment's official Python client library as a business would run it.

`lifecycle serve` runs as real processes on loopback; the bodies are built before the clock starts,
and 4 client threads post them at once, each over one kept-alive connection (as the clients do).
Every event is counted in the store afterwards, so a rate is only printed for events that were
really stored. Beside the rate, the CPU time spent per event (from /proc, Linux) by the server's
processes and, on PostgreSQL, by the database's own processes serving them, which share the same
cores: on a machine busy with other work the rate falls, while the CPU per event stays, and 2 cores
divided by it is the rate the machine could reach with nothing else to run.

Run: `.venv/bin/python bench/segment_ingest.py [--store sqlite|postgresql] [--events 200000] [--workers 2]`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from web_latency import API_KEY, free_port, machine, make_project, postgres_database, start_server

CLIENTS = 4
BATCH = 500  # Segment's clients send at most 500 KB a batch; 500 calls of this size fit
HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


def call(label: str, n: int, customers: int) -> dict:
    return {
        "type": "track",
        "userId": f"c{n % customers}",
        "event": "Product Viewed",
        "messageId": f"{label}-{n}",
        "timestamp": "2026-11-01T10:00:00.000Z",
        "properties": {"product_id": f"p{n % 97}", "price": 19.9},
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
    }


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) used so far by process `pid` and every process below it."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(stat[11]) + int(stat[12])  # utime, stime
    children = " ".join(path.read_text() for path in Path(f"/proc/{pid}/task").glob("*/children")).split()
    return ticks / os.sysconf("SC_CLK_TCK") + sum(cpu_seconds(int(child)) for child in children)


def database_cpu(url: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL process serving the bench's database (none on SQLite)."""
    if not url.startswith("postgresql"):
        return {}
    engine = create_engine(url)
    with engine.connect() as connection:
        pids = connection.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        ).scalars()
        found = {pid: cpu_seconds(pid) for pid in pids if Path(f"/proc/{pid}").exists()}
    engine.dispose()
    return found


def measured(server: int, database: str, send: Callable[[], float]) -> tuple[float, float, float]:
    """(seconds, server CPU seconds, database CPU seconds) of one way of sending; a database process
    that starts during it counts from nothing."""
    before, database_before = cpu_seconds(server), database_cpu(database)
    seconds = send()
    server_cpu, database_after = cpu_seconds(server) - before, database_cpu(database)
    return seconds, server_cpu, sum(cpu - database_before.get(pid, 0.0) for pid, cpu in database_after.items())


def post_all(base: str, path: str, bodies: list[bytes]) -> float:
    """Seconds to post every body from CLIENTS threads, each over one kept-alive connection; each
    answer must store all it carried."""
    host, port = base.removeprefix("http://").split(":")
    local = threading.local()

    def post(body: bytes) -> None:
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection(host, int(port), timeout=120)
        local.connection.request("POST", path, body=body, headers=HEADERS)
        response = local.connection.getresponse()
        answer = json.loads(response.read())
        if response.status != 200 or answer["rejected"]:
            raise SystemExit(f"{path}: {response.status} {answer.get('rejected', answer)}")

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(post, bodies))
    return time.perf_counter() - started


def batches(label: str, events: int, customers: int) -> list[bytes]:
    return [
        json.dumps({"batch": [call(label, n, customers) for n in range(start, min(start + BATCH, events))]}).encode()
        for start in range(0, events, BATCH)
    ]


def one_by_one(label: str, events: int, customers: int) -> list[bytes]:
    return [json.dumps(call(label, n, customers)).encode() for n in range(events)]


def with_the_client(base: str, events: int, customers: int) -> float:
    """Seconds for Segment's own client (its queue and upload thread, batches of 100) to deliver."""
    from segment.analytics import Client

    client = Client(API_KEY, host=base, upload_size=100, max_queue_size=events + 1, thread=2, max_retries=0)
    started = time.perf_counter()
    for n in range(events):
        message = call("lib", n, customers)
        client.track(message["userId"], message["event"], message["properties"], message_id=message["messageId"])
    client.flush()
    client.join()
    return time.perf_counter() - started


def stored(url: str, label: str) -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM event WHERE uid LIKE :p"), {"p": f"{label}-%"})
        result = count.scalar_one()
    engine.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--customers", type=int, default=10000)
    parser.add_argument("--events", type=int, default=200_000, help="events through /v1/batch")
    parser.add_argument("--single", type=int, default=10_000, help="events through /v1/track, one a call")
    parser.add_argument("--library", type=int, default=50_000, help="events through the official client")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    args = parser.parse_args()
    os.environ.setdefault("LIFECYCLE_SECRET", "bench-secret")
    os.environ["LIFECYCLE_API_KEYS"] = API_KEY
    with tempfile.TemporaryDirectory() as folder:
        root, port = Path(folder), free_port()
        database = "sqlite:///store.db" if args.store == "sqlite" else postgres_database()
        _, url = make_project(root, port, args.customers, database)
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            url = f"sqlite:///{root / url.removeprefix('sqlite:///')}"
        bulk, single = batches("batch", args.events, args.customers), one_by_one("track", args.single, args.customers)
        server = start_server(root, port, args.workers)
        base = f"http://127.0.0.1:{port}"
        try:
            post_all(base, "/v1/batch", batches("warm", 2 * BATCH, args.customers))
            rows = [
                (
                    "POST /v1/batch, 500 calls a batch",
                    args.events,
                    *measured(server.pid, url, lambda: post_all(base, "/v1/batch", bulk)),
                    "batch",
                ),
                (
                    "POST /v1/track, one call a request",
                    args.single,
                    *measured(server.pid, url, lambda: post_all(base, "/v1/track", single)),
                    "track",
                ),
                (
                    "official client (batches of 100)",
                    args.library,
                    *measured(server.pid, url, lambda: with_the_client(base, args.library, args.customers)),
                    "lib",
                ),
            ]
        finally:
            server.terminate()
            server.wait(timeout=10)
        counted = {label: stored(url, label) for *_, label in rows}
    print(f"machine: {machine()}; {args.store} store, {args.workers} server processes, {CLIENTS} client threads\n")
    print(
        "| how | events | stored | seconds | events/s | server CPU per event | database CPU per event "
        "| 2 cores / CPU per event |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    in_server = "in the server's" if args.store == "sqlite" else ""
    for name, events, seconds, cpu, database, label in rows:
        per_event, database_per_event = cpu / counted[label], database / counted[label]
        print(
            f"| {name} | {events:,} | {counted[label]:,} | {seconds:.1f} | {counted[label] / seconds:,.0f} "
            f"| {per_event * 1e6:.0f} µs | {in_server or f'{database_per_event * 1e6:.0f} µs'} "
            f"| {2 / (per_event + database_per_event):,.0f}/s |"
        )
    print(f"\nload average: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")
    fastest, naive = (counted[rows[i][-1]] / rows[i][2] for i in (0, 1))
    print(f"\nbatch / one call a request: {fastest / naive:.1f}x")


if __name__ == "__main__":
    main()
