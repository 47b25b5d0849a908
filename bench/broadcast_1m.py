"""A newsletter to a million subscribers: one `lifecycle tick` that evaluates a `schedule` campaign
of one step (the shipped product_news MJML email) for every customer and dispatches every message
to the `null` sender, which renders and builds each message and delivers none.

    .venv/bin/python bench/broadcast_1m.py                                   # 1,000,000, both stores
    .venv/bin/python bench/broadcast_1m.py --customers 100000 --only sqlite --workers 1 2

Each run is a fresh store (customers generated set-wise in SQL, as in bench/tick_1m.py) and a real
`lifecycle tick` process, once per `--workers` value (`scheduler.workers`: 1 is everything in the
tick's process, the straightforward way; more forks couriers that compose and send). Peak memory is
the most the tick and its couriers held together, sampled from /proc every 0.5 s: their own
(anonymous) pages, not the store's file SQLite maps into them; CPU is the user and system time of
the tick and its couriers; PostgreSQL's CPU is that of its processes serving the bench's database,
which share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from sqlalchemy import create_engine, text
from tick_1m import NOW, POSTGRES_ADMIN, fill, machine

REPO = Path(__file__).resolve().parent.parent
POSTGRES_DB = "lifecycle_bench_broadcast"
BROADCAST = """\
description: The weekly newsletter, to every subscriber of product news
type: marketing
topic: product_news
trigger:
  schedule: "0 12 * * MON"
steps:
  - template: product_news
    subject:
      en: "What's new at {{ brand.name }} this week"
      ar: "الجديد في {{ brand.name }} هذا الأسبوع"
reentry: always
"""


def project(folder: Path, database: str, workers: int) -> Path:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config.update(
        database=database,
        sender={"backend": "null"},
        scheduler={"interval": "1s", "batch_size": 500, "workers": workers},
    )
    config.pop("limits", None)  # measure the engine, not the cap
    config.pop("quiet_hours", None)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    shutil.copytree(REPO / "templates", folder / "templates", dirs_exist_ok=True)
    (folder / "campaigns").mkdir(exist_ok=True)
    (folder / "campaigns" / "newsletter.yaml").write_text(BROADCAST)
    return folder / "config.yaml"


def tree(pid: int) -> list[int]:
    """A process and its children, from /proc."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                todo.extend(int(child) for child in children)
        except OSError:
            continue
    return found


def private_mb(pids: list[int]) -> float:
    """The processes' own memory (anonymous resident pages), not the store's file that SQLite maps
    into them (the operating system's page cache, given back under pressure). A page a courier
    still shares with the tick's process counts in both, so this errs high."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def database_cpu() -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL process serving the bench's database (its backends and
    autovacuum workers, whose titles name it), from /proc: none when the store is SQLite. The
    server's shared writers are left out: other work on the machine sets them going too."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f" {POSTGRES_DB} " in (entry / "cmdline").read_text():
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                found[int(entry.name)] = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:  # gone in the meantime
            continue
    return found


def tick(config: Path) -> dict[str, float]:
    """One `lifecycle tick` process: its report, wall and CPU seconds, peak memory, and the CPU
    seconds PostgreSQL spent meanwhile (a backend that ends between two samples loses at most the
    last half second)."""
    command = [sys.executable, "-m", "engine", "tick", "--config", str(config), "--now", NOW.isoformat(), "--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0.0]
    database_before = database_cpu()
    database_seen = dict(database_before)

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], private_mb(tree(process.pid)))
            database_seen.update(database_cpu())
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    seconds = time.perf_counter() - started
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(err[-3000:])
    report = json.loads(out)
    counts = report["campaigns"]["newsletter"]
    print(counts, file=sys.stderr)
    return {
        "wall": seconds,
        "evaluate": report["seconds"]["evaluate"],
        "dispatch": report["seconds"]["dispatch"],
        "entered": counts.get("entered", 0),
        "sent": counts.get("sent", 0),
        "not sent": sum(n for key, n in counts.items() if key.startswith(("skipped", "deferred", "failed"))),
        "peak": peak[0],
        "database cpu": sum(cpu - database_before.get(pid, 0.0) for pid, cpu in database_seen.items()),
    }


def children_cpu() -> float:
    """CPU seconds of this script's finished children, their own children (the couriers) included."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(store: str, customers: int, workers: int, folder: Path) -> dict[str, float]:
    postgres = store == "postgresql"
    if postgres:
        admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {POSTGRES_DB}"))
            connection.execute(text(f"CREATE DATABASE {POSTGRES_DB}"))
        admin.dispose()
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{POSTGRES_DB}"
    else:
        url = f"sqlite:///{folder}/store.db"
    config = project(folder, url, workers)
    fill(url, customers, postgres, events=False)
    before = children_cpu()
    result = tick(config)
    result["cpu"] = children_cpu() - before
    assert result["entered"] == customers and result["sent"] + result["not sent"] == customers, result
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument("--workers", type=int, nargs="+", default=[len(os.sched_getaffinity(0))])
    args = parser.parse_args()
    os.environ.setdefault("LIFECYCLE_SECRET", "bench-secret")
    os.environ.setdefault("LIFECYCLE_INSECURE_PUBLIC_URL", "1")
    stores = [args.only] if args.only else ["sqlite", "postgresql"]
    rows = []
    for store in stores:
        for workers in args.workers:
            with tempfile.TemporaryDirectory() as folder:
                result = run(store, args.customers, workers, Path(folder))
            rows.append((store, workers, result))
            print(f"{store} workers={workers}: {result}", file=sys.stderr)
    print(f"{args.customers:,} customers, one `schedule` campaign, null sender; {machine()}, load {os.getloadavg()}\n")
    print(
        "| store | workers | evaluate (s) | dispatch (s) | whole tick (s) | sent | skipped | sent/s | CPU (s) | "
        "PostgreSQL CPU (s) | peak memory (MB) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for store, workers, r in rows:
        print(
            f"| {store} | {workers} | {r['evaluate']:.1f} | {r['dispatch']:.1f} | {r['wall']:.1f} | {r['sent']:,} | "
            f"{r['not sent']:,} | {r['sent'] / r['wall']:,.0f} | {r['cpu']:.1f} | "
            f"{r['database cpu']:.1f} | {r['peak']:.0f} |"
        )


if __name__ == "__main__":
    main()
