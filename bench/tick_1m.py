"""One `lifecycle tick` over 1,000,000 customers and 10,000,000 events with the shipped example
campaigns, on SQLite and on PostgreSQL; then dispatch to the `null` sender with 1, 2 and 4
daemons on PostgreSQL.

    .venv/bin/python bench/tick_1m.py                              # the full run (takes a while)
    .venv/bin/python bench/tick_1m.py --customers 100000 --only sqlite

The store is generated set-wise in SQL (a recursive CTE on SQLite, generate_series on PostgreSQL):
customers over 500 days in English and Arabic with points that expire, ten events each (signup,
confirmation, purchases, logins) spread so that every stage, risk colour and trigger kind has
members. The tick runs as a real `lifecycle tick` process; its wall time and peak memory (the
child's maximum resident set) are measured from outside.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml
from sqlalchemy import create_engine, text

from engine.store.dialect import make_engine
from engine.store.schema import upgrade

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday: no broadcast fires at noon
POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
POSTGRES_DB = "lifecycle_bench_tick"

SQLITE_CUSTOMERS = """
WITH RECURSIVE seq(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM seq WHERE x < :n)
INSERT INTO customer (id, external_id, email, first_name, locale, timezone, created_at, confirmed_at, attributes)
SELECT x, 'c' || x, 'c' || x || '@example.com', 'Name' || (x % 997),
       CASE WHEN x % 3 = 0 THEN 'ar' ELSE 'en' END,
       CASE WHEN x % 3 = 0 THEN 'Asia/Riyadh' ELSE 'Europe/London' END,
       strftime('%Y-%m-%d %H:%M:%f', :now, '-' || (x % 500) || ' days', '-' || (x % 1440) || ' minutes') || '000',
       CASE WHEN x % 7 = 0 THEN NULL
            ELSE strftime('%Y-%m-%d %H:%M:%f', :now, '-' || (x % 500) || ' days',
                          '-' || (x % 1440 - 30) || ' minutes') || '000' END,
       json_object('points', x % 1000, 'points_expire_at', date(:now, '+' || (x % 90) || ' days'),
                   'plan', CASE x % 3 WHEN 0 THEN 'free' WHEN 1 THEN 'pro' ELSE 'business' END)
FROM seq
"""

# Ten events per customer: k = 0 signup, 1 confirmed, 2-4 purchases, 5-9 logins, each `days_ago`
# before now, never before the customer was created.
SQLITE_EVENTS = """
WITH RECURSIVE seq(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM seq WHERE x < :n * 10 - 1)
INSERT INTO event (customer_id, name, at, properties)
SELECT x / 10 + 1,
       CASE WHEN x % 10 = 0 THEN 'signed_up' WHEN x % 10 = 1 THEN 'confirmed'
            WHEN x % 10 <= 4 THEN 'purchase' ELSE 'login' END,
       strftime('%Y-%m-%d %H:%M:%f', :now,
                '-' || (CASE WHEN x % 10 <= 1 THEN (x / 10 + 1) % 500
                             ELSE ((x / 10 + 1) % 500) * (10 - x % 10) / 10 END) || ' days',
                '-' || (x % 1440) || ' minutes') || '000',
       CASE WHEN x % 10 BETWEEN 2 AND 4 THEN json_object('total', (x % 200) + 5) ELSE '{}' END
FROM seq
"""

POSTGRES_CUSTOMERS = """
INSERT INTO customer (id, external_id, email, first_name, locale, timezone, created_at, confirmed_at, attributes)
SELECT x, 'c' || x, 'c' || x || '@example.com', 'Name' || (x % 997),
       CASE WHEN x % 3 = 0 THEN 'ar' ELSE 'en' END,
       CASE WHEN x % 3 = 0 THEN 'Asia/Riyadh' ELSE 'Europe/London' END,
       CAST(:now AS timestamptz) - (x % 500) * interval '1 day' - (x % 1440) * interval '1 minute',
       CASE WHEN x % 7 = 0 THEN NULL
            ELSE CAST(:now AS timestamptz) - (x % 500) * interval '1 day' - (x % 1440 - 30) * interval '1 minute' END,
       jsonb_build_object('points', x % 1000,
                          'points_expire_at',
                          to_char(CAST(:now AS timestamptz) + (x % 90) * interval '1 day', 'YYYY-MM-DD'),
                          'plan', CASE x % 3 WHEN 0 THEN 'free' WHEN 1 THEN 'pro' ELSE 'business' END)
FROM generate_series(1, :n) AS x
"""

POSTGRES_EVENTS = """
INSERT INTO event (customer_id, name, at, properties)
SELECT x / 10 + 1,
       CASE WHEN x % 10 = 0 THEN 'signed_up' WHEN x % 10 = 1 THEN 'confirmed'
            WHEN x % 10 <= 4 THEN 'purchase' ELSE 'login' END,
       CAST(:now AS timestamptz)
         - (CASE WHEN x % 10 <= 1 THEN (x / 10 + 1) % 500
                 ELSE ((x / 10 + 1) % 500) * (10 - x % 10) / 10 END) * interval '1 day'
         - (x % 1440) * interval '1 minute',
       CASE WHEN x % 10 BETWEEN 2 AND 4 THEN jsonb_build_object('total', (x % 200) + 5) ELSE '{}'::jsonb END
FROM generate_series(0, :n * 10 - 1) AS x
"""


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}, {platform.system()}"


def project(folder: Path, database: str, sender: str = "null") -> Path:
    """The shipped config, campaigns and templates, pointed at the bench store."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config.update(
        database=database,
        sender={"backend": sender},
        scheduler={"interval": "1s", "batch_size": 500, "max_attempts": 5},
    )
    config.pop("limits", None)  # measure the engine, not the cap
    config.pop("quiet_hours", None)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    for name in ("campaigns", "templates"):
        shutil.copytree(REPO / name, folder / name, dirs_exist_ok=True)
    return folder / "config.yaml"


def fill(url: str, customers: int, postgres: bool, events: bool = True) -> float:
    """The generated store: `customers`, and unless `events` is False ten events each."""
    engine = make_engine(url)
    upgrade(engine)
    started = time.perf_counter()
    with engine.begin() as connection:
        params = {"n": customers, "now": NOW.isoformat() if postgres else NOW.strftime("%Y-%m-%d %H:%M:%S")}
        connection.execute(text(POSTGRES_CUSTOMERS if postgres else SQLITE_CUSTOMERS), params)
        if events:
            connection.execute(text(POSTGRES_EVENTS if postgres else SQLITE_EVENTS), params)
        if postgres:
            connection.execute(text("SELECT setval('customer_id_seq', :n)"), {"n": customers})
    with engine.begin() as connection:
        connection.execute(text("ANALYZE"))
    engine.dispose()
    return time.perf_counter() - started


def timed(command: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds and peak resident memory (MB) of a child process, with its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    peak = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024
    return seconds, peak, done.stdout


def tick_once(config: Path, env: dict) -> tuple[float, float, float, int, int]:
    """Wall seconds, evaluation seconds, peak MB, entries created and messages sent of one tick."""
    command = [sys.executable, "-m", "engine", "tick", "--config", str(config), "--now", NOW.isoformat(), "--json"]
    seconds, peak, out = timed(command, env)
    report = json.loads(out)
    counts = report["campaigns"].values()
    return (
        seconds,
        report["seconds"]["evaluate"],
        peak,
        sum(c.get("entered", 0) for c in counts),
        sum(c.get("sent", 0) for c in counts),
    )


def dispatch_rate(url: str, config: Path, env: dict, daemons: int, sends: int, customers: int) -> float:
    """Sends a second to the null sender: `daemons` processes, already running, share `sends`
    due thank-yous that appear at once; timed until the last is recorded."""
    engine = create_engine(url)
    command = [sys.executable, "-m", "engine", "run", "--config", str(config), "--now", NOW.isoformat()]
    workers = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(daemons)
    ]

    def count(sql: str) -> int:
        with engine.connect() as connection:
            return connection.execute(text(sql)).scalar()

    while count("SELECT count(*) FROM worker") < daemons:
        time.sleep(0.1)
    with engine.begin() as connection:
        connection.execute(
            text("DELETE FROM send WHERE entry_id IN (SELECT id FROM entry WHERE entry_key LIKE 'bench:%')")
        )
        connection.execute(text("DELETE FROM entry WHERE entry_key LIKE 'bench:%'"))
        connection.execute(
            text("""
            INSERT INTO entry (campaign, customer_id, entry_key, entered_at, held_out, scheduled, status)
            SELECT 'thanks', g % :customers + 1, 'bench:' || g, CAST(:now AS timestamptz), false, true, 'active'
            FROM generate_series(1, :n) AS g"""),
            {"now": NOW.isoformat(), "n": sends, "customers": customers},
        )
        connection.execute(
            text("""
            INSERT INTO send (entry_id, campaign, customer_id, step, marketing, priority, due_at, next_attempt_at,
                              status, attempts, updated_at)
            SELECT id, 'thanks', customer_id, 1, false, 0, entered_at, entered_at, 'scheduled', 0, entered_at
            FROM entry WHERE entry_key LIKE 'bench:%'""")
        )
    started = time.perf_counter()
    while (
        count("""SELECT count(*) FROM send JOIN entry ON entry.id = send.entry_id WHERE entry.entry_key
                   LIKE 'bench:%' AND send.status IN ('scheduled', 'deferred', 'sending')""")
        > 0
    ):
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    for worker in workers:
        worker.terminate()
        worker.wait()
    engine.dispose()
    return sends / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument("--sends", type=int, default=20_000, help="due sends for the dispatch rate")
    args = parser.parse_args()
    env = {**os.environ, "LIFECYCLE_SECRET": "bench"}
    rows, rates = [], []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        if args.only in (None, "sqlite"):
            url = f"sqlite:///{folder}/bench.db"
            fill_seconds = fill(url, args.customers, postgres=False)
            rows.append(("SQLite", fill_seconds, *tick_once(project(folder, url), env)))
        if args.only in (None, "postgresql"):
            admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.execute(text(f"DROP DATABASE IF EXISTS {POSTGRES_DB}"))
                connection.execute(text(f"CREATE DATABASE {POSTGRES_DB}"))
            url = POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{POSTGRES_DB}"
            try:
                pg_folder = folder / "pg"
                pg_folder.mkdir()
                config = project(pg_folder, url)
                fill_seconds = fill(url, args.customers, postgres=True)
                rows.append(("PostgreSQL", fill_seconds, *tick_once(config, env)))
                rates = [(n, dispatch_rate(url, config, env, n, args.sends, args.customers)) for n in (1, 2, 4)]
            finally:
                create_engine(url).dispose()
                with admin.connect() as connection:
                    connection.execute(text(f"DROP DATABASE IF EXISTS {POSTGRES_DB} WITH (FORCE)"))
    print(f"\nMachine: {machine()}\n")
    print(f"One tick, {args.customers:,} customers, {args.customers * 10:,} events, the shipped campaigns:\n")
    print("| store | fill (s) | evaluation (s) | whole tick (s) | peak memory (MB) | entries created | sent (null) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, fill_s, tick_s, evaluate_s, peak, entered, sent in rows:
        print(f"| {name} | {fill_s:.1f} | {evaluate_s:.1f} | {tick_s:.1f} | {peak:.0f} | {entered:,} | {sent:,} |")
    if rates:
        print(f"\nDispatch to the null sender on PostgreSQL, {args.sends:,} due sends:\n")
        print("| daemons | sends per second | vs 1 daemon |")
        print("|---:|---:|---:|")
        for n, rate in rates:
            print(f"| {n} | {rate:,.0f} | {rate / rates[0][1]:.2f}x |")


if __name__ == "__main__":
    main()
