"""`lifecycle report` over 10,000,000 sends, on SQLite and on PostgreSQL.

Generates a store set-wise in SQL (a recursive CTE on SQLite, generate_series on PostgreSQL; no
Python loops over rows), then times `build_report`, whose counting all happens in the database, and
prints a markdown table with the machine it ran on.

    .venv/bin/python bench/report_10m.py                      # both databases, 10M sends
    .venv/bin/python bench/report_10m.py --sends 1000000 --only sqlite

The store: `--customers` customers created over two years, a visit for each and a purchase for every
third (the goal event); entries spread over the last year across 10 campaigns (half with a 10% holdout
and a purchase goal), two sends per entry (mostly sent, some skipped, expired, failed or held out),
and provider events for 40% of the sent sends (delivered, plus opens, clicks, bounces, spam reports
and unsubscribes). PostgreSQL gets a database of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from engine.campaigns import Campaign
from engine.config import Config
from engine.reporting import build_report
from engine.schema import upgrade
from engine.store import make_engine

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
CAMPAIGNS = 10
POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
POSTGRES_DB = "lifecycle_bench_report"

# Per database: a numbers source 1..n, and an instant `seconds` before NOW in the store's format.
DIALECTS = {
    "sqlite": {
        "numbers": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :n) SELECT i FROM n",
        "ago": "(strftime('%Y-%m-%d %H:%M:%S', '2026-06-15 12:00:00', '-' || ({}) || ' seconds') || '.000000')",
        "empty": "'{}'", "total": "('{{\"total\": ' || ({}) || '}}')", "true": "1", "false": "0",
    },
    "postgresql": {
        "numbers": "SELECT i FROM generate_series(1::bigint, :n) AS n(i)",
        "ago": "(timestamptz '2026-06-15 12:00:00+00' - make_interval(secs => ({})))",
        "empty": "'{}'::jsonb", "total": "('{{\"total\": ' || ({}) || '}}')::jsonb", "true": "true", "false": "false",
    },
}

# Indexes the report reads from instead of the tables (not in the migrations yet; see the README).
REPORT_INDEXES = [
    "CREATE INDEX ix_send_report ON send (campaign, step, variant, status, reason)",
    "CREATE INDEX ix_delivery_send_kind ON delivery (send_id, kind)",
]
# A send's status: held out with its entry, else mostly sent, some skipped, expired, failed or waiting.
STATUS = """(CASE WHEN e.held_out THEN 'held_out' WHEN s.i % 100 < 84 THEN 'sent' WHEN s.i % 100 < 92 THEN 'skipped'
             WHEN s.i % 100 < 98 THEN 'expired' WHEN s.i % 100 < 99 THEN 'failed' ELSE 'scheduled' END)"""
# Each statement fills one table from the numbers 1..n; `h(x)` is a cheap stable pseudo-random 0..999.
STATEMENTS = [
    ("customer", "customers", """
        INSERT INTO customer (id, external_id, email, first_name, created_at, attributes)
        SELECT i, 'c' || i, 'c' || i || '@example.com', 'C' || i, {ago[(i * 7919) % 63072000]}, {empty}
        FROM ({numbers}) AS s"""),
    ("event", "customers", """
        INSERT INTO event (customer_id, name, at, properties)
        SELECT i, 'visit', {ago[(i * 104729) % 31536000]}, {empty} FROM ({numbers}) AS s"""),
    ("event", "customers", """
        INSERT INTO event (customer_id, name, at, properties)
        SELECT i, 'purchase', {ago[(i * 15485863) % 31536000]}, {total[(i * 31) % 500]}
        FROM ({numbers}) AS s WHERE i % 3 = 0"""),
    ("entry", "entries", """
        INSERT INTO entry (id, campaign, customer_id, entry_key, entered_at, held_out, scheduled, status)
        SELECT i, 'campaign' || (i % {campaigns}), 1 + (i * 48271) % :customers, 'k' || i,
               {ago[(i * 16807) % 31536000]}, CASE WHEN i % {campaigns} < 5 AND i % 100 < 10 THEN {true} ELSE {false} END,
               {true}, 'completed'
        FROM ({numbers}) AS s"""),
    ("send", "sends", """
        INSERT INTO send (id, entry_id, campaign, customer_id, step, marketing, priority, variant, due_at,
                          next_attempt_at, status, reason, attempts, sent_at)
        SELECT s.i, e.id, e.campaign, e.customer_id, 1 + s.i % 2, {true}, 0,
               CASE WHEN s.i % 2 = 0 AND e.id % {campaigns} = 0 THEN CASE WHEN s.i % 4 = 0 THEN 'a' ELSE 'b' END END,
               e.entered_at, e.entered_at, {status},
               CASE {status} WHEN 'skipped' THEN CASE WHEN s.i % 3 = 0 THEN 'suppressed' ELSE 'audience' END
                             WHEN 'failed' THEN 'provider said no' END,
               1, CASE WHEN {status} = 'sent' THEN e.entered_at END
        FROM ({numbers}) AS s JOIN entry e ON e.id = (s.i + 1) / 2"""),
    ("delivery", "sends", """
        INSERT INTO delivery (send_id, kind, at)
        SELECT id, CASE WHEN id % 10 < 4 THEN 'delivered' WHEN id % 10 < 6 THEN 'open' WHEN id % 10 < 7 THEN 'click'
                        WHEN id % 100 < 72 THEN 'bounce' WHEN id % 100 < 73 THEN 'spamreport' ELSE 'unsubscribe' END,
               sent_at
        FROM send WHERE status = 'sent' AND id % 10 < 4 OR (status = 'sent' AND id % 10 < 7 AND id % 5 = 0)
                     OR (status = 'sent' AND id % 100 BETWEEN 70 AND 74)"""),
]


def fill(engine: Engine, dialect: str, sizes: dict[str, int]) -> dict[str, int]:
    """Run the statements above; returns the rows in each table."""
    words = DIALECTS[dialect]
    upgrade(engine)
    with engine.begin() as connection:
        for table, size, sql in STATEMENTS:
            connection.execute(text(_render(sql, words)), {"n": sizes[size], "customers": sizes["customers"]})
        for index in REPORT_INDEXES:
            connection.execute(text(index))
        connection.execute(text("ANALYZE"))
        return {t: connection.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                for t in ("customer", "event", "entry", "send", "delivery")}


def _render(sql: str, words: dict[str, str]) -> str:
    """Fill the dialect's words into a statement: `{ago[x]}` is NOW minus x seconds, `{total[x]}` the
    properties of a purchase of x, `{empty}` an empty JSON object."""

    class Word:
        """`{ago[x]}` or `{total[x]}`: the dialect's pattern around the expression x."""

        def __init__(self, pattern: str):
            self.pattern = pattern

        def __getitem__(self, expression: str) -> str:
            return self.pattern.format(expression)

    return sql.format(ago=Word(words["ago"]), total=Word(words["total"]), empty=words["empty"], numbers=words["numbers"],
                      campaigns=CAMPAIGNS, true=words["true"], false=words["false"], status=STATUS)


def campaigns() -> list[Campaign]:
    """Ten campaigns; the first five with a purchase goal and a 10% holdout."""
    steps = [{"template": "plain", "subject": "One"}, {"template": "plain", "subject": "Two", "delay": "2d"}]
    return [Campaign.model_validate({"name": f"campaign{i}", "topic": "news", "trigger": {"event": "signed_up"},
                                     "steps": steps,
                                     **({"goal": {"event": "purchase", "within": "7d"}, "holdout": "10%"} if i < 5 else {})})
            for i in range(CAMPAIGNS)]


def timed_report(engine: Engine, url: str, runs: int = 2) -> list[float]:
    config = Config.model_validate({"from": {"email": "bench@example.com"}, "database": url})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        build_report(engine, config, campaigns(), NOW)
        times.append(time.perf_counter() - start)
    return times


def bench_sqlite(sizes: dict[str, int], folder: Path) -> tuple[dict, list[float], float]:
    url = f"sqlite:///{folder / 'bench.db'}"
    engine = make_engine(url)
    start = time.perf_counter()
    rows = fill(engine, "sqlite", sizes)
    return rows, timed_report(engine, url), time.perf_counter() - start


def bench_postgres(sizes: dict[str, int]) -> tuple[dict, list[float], float]:
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {POSTGRES_DB}"))
        connection.execute(text(f"CREATE DATABASE {POSTGRES_DB}"))
    url = POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{POSTGRES_DB}"
    engine = make_engine(url)
    try:
        start = time.perf_counter()
        rows = fill(engine, "postgresql", sizes)
        return rows, timed_report(engine, url), time.perf_counter() - start
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {POSTGRES_DB}"))
        admin.dispose()


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    sizes = {"sends": args.sends, "entries": args.sends // 2, "customers": args.customers}
    results = []
    with tempfile.TemporaryDirectory() as folder:
        if args.only in (None, "sqlite"):
            results.append(("SQLite", *bench_sqlite(sizes, Path(folder))))
        if args.only in (None, "postgresql"):
            results.append(("PostgreSQL", *bench_postgres(sizes)))
    print(f"\nmachine: {machine()}\n")
    print("| database | customers | events | entries | sends | deliveries | report, first run | report, second run |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rows, times, _ in results:
        print(f"| {name} | {rows['customer']:,} | {rows['event']:,} | {rows['entry']:,} | {rows['send']:,} | "
              f"{rows['delivery']:,} | {times[0]:.1f} s | {times[1]:.1f} s |")


if __name__ == "__main__":
    main()
