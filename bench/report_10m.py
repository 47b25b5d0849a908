"""`lifecycle report` over 10,000,000 sends, on SQLite and on PostgreSQL.

Generates a store set-wise in SQL (a recursive CTE on SQLite, generate_series on PostgreSQL; no
Python loops over rows) at the schema before revision 0003, then upgrades it through the migrations
(0003 fills each send's outcomes from its deliveries and builds the report's indexes, 0004 fills the
send and entry tallies), then times `build_report`, whose counting all happens in the database,
with a breakdown by part. The `build_report` before the tallies (engine/reporting.py at commit
PREVIOUS, read from git: a pass over every send for the campaign figures, the customers' rules
decided one customer at a time) runs on the same store in the same run, so that the speed-up is a
ratio measured on the same machine at the same moment. Prints markdown tables and the machine.

    .venv/bin/python bench/report_10m.py                      # both databases, 10M sends
    .venv/bin/python bench/report_10m.py --sends 1000000 --only sqlite

The store: a customer for every 10 sends, created over two years, a visit for each and a purchase for
every third (the goal event); entries spread over the last year across 10 campaigns (half with a 10%
holdout and a purchase goal), two sends per entry (mostly sent, some skipped, expired, failed or held
out), and provider events for 40% of the sent sends (delivered, plus opens, clicks, bounces, spam
reports and unsubscribes). PostgreSQL gets a database of its own, dropped at the end; it is vacuumed
and analysed after the load, as autovacuum would, so that index-only scans can skip the table.
SQLite gathers no statistics by itself, so its store is left without them, as one nobody analysed.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import ModuleType

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine

from engine.campaigns.language import Campaign
from engine.campaigns.measures import Measures
from engine.config.settings import Config
from engine.insights.customers import red_list
from engine.insights.report import (
    Scope,
    activity,
    build_report,
    campaign_figures,
    customer_counts,
    month_starts,
    report_connection,
)
from engine.store.dialect import make_engine
from engine.store.schema import upgrade

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
CAMPAIGNS = 10
POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
POSTGRES_DB = "lifecycle_bench_report"
BEFORE_OUTCOMES = "0002"  # the revision the store is loaded at; 0003 then runs on the loaded store
PREVIOUS = "677a3ad"  # the last commit with the build_report before the tallies
REPO = Path(__file__).resolve().parent.parent

# Per database: a numbers source 1..n, and an instant `seconds` before NOW in the store's format.
DIALECTS = {
    "sqlite": {
        "numbers": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :n) SELECT i FROM n",
        "ago": "(strftime('%Y-%m-%d %H:%M:%S', '2026-06-15 12:00:00', '-' || ({}) || ' seconds') || '.000000')",
        "empty": "'{}'",
        "total": "('{{\"total\": ' || ({}) || '}}')",
        "true": "1",
        "false": "0",
        "analyze": None,  # SQLite gathers no statistics by itself: the store is left as one nobody analysed
    },
    "postgresql": {
        "numbers": "SELECT i FROM generate_series(1::bigint, :n) AS n(i)",
        "ago": "(timestamptz '2026-06-15 12:00:00+00' - make_interval(secs => ({})))",
        "empty": "'{}'::jsonb",
        "total": "('{{\"total\": ' || ({}) || '}}')::jsonb",
        "true": "true",
        "false": "false",
        "analyze": "VACUUM ANALYZE",
    },
}

# A send's status: held out with its entry, else mostly sent, some skipped, expired, failed or waiting.
STATUS = """(CASE WHEN e.held_out THEN 'held_out' WHEN s.i % 100 < 84 THEN 'sent' WHEN s.i % 100 < 92 THEN 'skipped'
             WHEN s.i % 100 < 98 THEN 'expired' WHEN s.i % 100 < 99 THEN 'failed' ELSE 'scheduled' END)"""
# Each statement fills one table from the numbers 1..n; `h(x)` is a cheap stable pseudo-random 0..999.
STATEMENTS = [
    (
        "customer",
        "customers",
        """
        INSERT INTO customer (id, external_id, email, first_name, created_at, attributes)
        SELECT i, 'c' || i, 'c' || i || '@example.com', 'C' || i, {ago[(i * 7919) % 63072000]}, {empty}
        FROM ({numbers}) AS s""",
    ),
    (
        "event",
        "customers",
        """
        INSERT INTO event (customer_id, name, at, properties)
        SELECT i, 'visit', {ago[(i * 104729) % 31536000]}, {empty} FROM ({numbers}) AS s""",
    ),
    (
        "event",
        "customers",
        """
        INSERT INTO event (customer_id, name, at, properties)
        SELECT i, 'purchase', {ago[(i * 15485863) % 31536000]}, {total[(i * 31) % 500]}
        FROM ({numbers}) AS s WHERE i % 3 = 0""",
    ),
    (
        "entry",
        "entries",
        """
        INSERT INTO entry (id, campaign, customer_id, entry_key, entered_at, held_out, scheduled, status)
        SELECT i, 'campaign' || (i % {campaigns}), 1 + (i * 48271) % :customers, 'k' || i,
               {ago[(i * 16807) % 31536000]},
               CASE WHEN i % {campaigns} < 5 AND i % 100 < 10 THEN {true} ELSE {false} END,
               {true}, 'completed'
        FROM ({numbers}) AS s""",
    ),
    (
        "send",
        "sends",
        """
        INSERT INTO send (id, entry_id, campaign, customer_id, step, marketing, priority, variant, due_at,
                          next_attempt_at, status, reason, attempts, sent_at)
        SELECT s.i, e.id, e.campaign, e.customer_id, 1 + s.i % 2, {true}, 0,
               CASE WHEN s.i % 2 = 0 AND e.id % {campaigns} = 0 THEN CASE WHEN s.i % 4 = 0 THEN 'a' ELSE 'b' END END,
               e.entered_at, e.entered_at, {status},
               CASE {status} WHEN 'skipped' THEN CASE WHEN s.i % 3 = 0 THEN 'suppressed' ELSE 'audience' END
                             WHEN 'failed' THEN 'provider said no' END,
               1, CASE WHEN {status} = 'sent' THEN e.entered_at END
        FROM ({numbers}) AS s JOIN entry e ON e.id = (s.i + 1) / 2""",
    ),
    (
        "delivery",
        "sends",
        """
        INSERT INTO delivery (send_id, kind, at)
        SELECT id, CASE WHEN id % 10 < 4 THEN 'delivered' WHEN id % 10 < 6 THEN 'open' WHEN id % 10 < 7 THEN 'click'
                        WHEN id % 100 < 72 THEN 'bounce' WHEN id % 100 < 73 THEN 'spamreport' ELSE 'unsubscribe' END,
               sent_at
        FROM send WHERE status = 'sent' AND id % 10 < 4 OR (status = 'sent' AND id % 10 < 7 AND id % 5 = 0)
                     OR (status = 'sent' AND id % 100 BETWEEN 70 AND 74)""",
    ),
]


def fill(engine: Engine, dialect: str, sizes: dict[str, int]) -> tuple[dict[str, int], float]:
    """Run the statements above at the schema before 0003, then upgrade; returns the rows in each table
    and the seconds the upgrade took."""
    words = DIALECTS[dialect]
    upgrade(engine, BEFORE_OUTCOMES)
    with engine.begin() as connection:
        for _table, size, sql in STATEMENTS:
            connection.execute(text(_render(sql, words)), {"n": sizes[size], "customers": sizes["customers"]})
    start = time.perf_counter()
    upgrade(engine)
    migrated = time.perf_counter() - start
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if words["analyze"]:
            connection.execute(text(words["analyze"]))
        rows = {
            t: connection.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("customer", "event", "entry", "send", "delivery")
        }
    return rows, migrated


def _render(sql: str, words: dict[str, str]) -> str:
    """Fill the dialect's words into a statement: `{ago[x]}` is NOW minus x seconds, `{total[x]}` the
    properties of a purchase of x, `{empty}` an empty JSON object."""

    class Word:
        """`{ago[x]}` or `{total[x]}`: the dialect's pattern around the expression x."""

        def __init__(self, pattern: str):
            self.pattern = pattern

        def __getitem__(self, expression: str) -> str:
            return self.pattern.format(expression)

    return sql.format(
        ago=Word(words["ago"]),
        total=Word(words["total"]),
        empty=words["empty"],
        numbers=words["numbers"],
        campaigns=CAMPAIGNS,
        true=words["true"],
        false=words["false"],
        status=STATUS,
    )


def campaigns() -> list[Campaign]:
    """Ten campaigns; the first five with a purchase goal and a 10% holdout."""
    steps = [{"template": "plain", "subject": "One"}, {"template": "plain", "subject": "Two", "delay": "2d"}]
    return [
        Campaign.model_validate(
            {
                "name": f"campaign{i}",
                "topic": "news",
                "trigger": {"event": "signed_up"},
                "steps": steps,
                **({"goal": {"event": "purchase", "within": "7d"}, "holdout": "10%"} if i < 5 else {}),
            }
        )
        for i in range(CAMPAIGNS)
    ]


def config_for(url: str) -> Config:
    return Config.model_validate({"from": {"email": "bench@example.com"}, "database": url})


def seconds(work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def report_runs(build: Callable, engine: Engine, url: str, runs: int) -> list[float]:
    config = config_for(url)
    return [seconds(lambda: build(engine, config, campaigns(), NOW)) for _ in range(runs)]


def breakdown(engine: Engine, url: str) -> dict[str, float]:
    """The parts of `build_report`, each timed on its own."""
    config, scope = config_for(url), Scope(NOW)
    measures, months = Measures(config, NOW), month_starts(NOW, config.timezone)
    parts: dict[str, Callable[[Connection], object]] = {
        "campaign figures": lambda c: campaign_figures(c, scope, {x.name: x for x in campaigns()}, lambda n: None),
        "activity": lambda c: activity(c, scope, months, config.timezone),
        "retention, stages, risk": lambda c: customer_counts(c, measures, months),
        "red list": lambda c: red_list(c, config, NOW, config.report.red_list),
    }
    with report_connection(engine) as connection:
        return {name: seconds(partial(part, connection)) for name, part in parts.items()}


def previous_build_report() -> Callable | None:
    """`build_report` as it was at commit PREVIOUS, or None when git cannot show it or it no longer
    imports: its relative imports (`.store`, `.campaigns`, `.durations`, ...) name the flat engine/
    of its day, which has since moved into subpackages, so on a checkout after the move it is None."""
    shown = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{PREVIOUS}:engine/reporting.py"], capture_output=True, text=True
    )
    if shown.returncode != 0:
        return None
    module = ModuleType("engine.previous_reporting")
    module.__package__ = "engine"  # its relative imports look in the current engine
    sys.modules[module.__name__] = module
    try:
        exec(compile(shown.stdout, f"{PREVIOUS}:engine/reporting.py", "exec"), module.__dict__)
    except ImportError:
        del sys.modules[module.__name__]
        return None
    return module.build_report


def measure(
    name: str, engine: Engine, url: str, dialect: str, sizes: dict[str, int], previous: Callable | None
) -> dict:
    """Fill the store, then time the report (twice and by part), and the previous report once."""
    start = time.perf_counter()
    rows, migrated = fill(engine, dialect, sizes)
    result = {
        "database": name,
        "rows": rows,
        "fill": time.perf_counter() - start,
        "migration": migrated,
        "runs": report_runs(build_report, engine, url, 2),
        "parts": breakdown(engine, url),
    }
    if previous is not None:
        result["previous"] = report_runs(previous, engine, url, 1)[0]
    return result


def on_sqlite(sizes: dict[str, int], previous: Callable | None) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        engine = make_engine(url)
        try:
            return measure("SQLite", engine, url, "sqlite", sizes, previous)
        finally:
            engine.dispose()


def on_postgres(sizes: dict[str, int], previous: Callable | None) -> dict:
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {POSTGRES_DB}"))
        connection.execute(text(f"CREATE DATABASE {POSTGRES_DB}"))
    url = POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{POSTGRES_DB}"
    engine = make_engine(url)
    try:
        return measure("PostgreSQL", engine, url, "postgresql", sizes, previous)
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {POSTGRES_DB}"))
        admin.dispose()


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}, {platform.system()}"


def sizes_for(sends: int) -> dict[str, int]:
    return {"sends": sends, "entries": sends // 2, "customers": sends // 10}


def print_tables(results: list[dict]) -> None:
    print(f"\nmachine: {machine()}\n")
    print(
        "| database | customers | events | entries | sends | deliveries | load (s) | migrations 0003-0004 (s) "
        "| report, first run (s) | report, second run (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        rows = r["rows"]
        print(
            f"| {r['database']} | {rows['customer']:,} | {rows['event']:,} | {rows['entry']:,} | {rows['send']:,} | "
            f"{rows['delivery']:,} | {r['fill']:.0f} | {r['migration']:.0f} | {r['runs'][0]:.2f} | "
            f"{r['runs'][1]:.2f} |"
        )
    parts = list(results[0]["parts"])
    print(f"\n| database | sends | {' | '.join(f'{p} (s)' for p in parts)} |")
    print("|---|---:|" + "---:|" * len(parts))
    for r in results:
        times = " | ".join(f"{r['parts'][p]:.2f}" for p in parts)
        print(f"| {r['database']} | {r['rows']['send']:,} | {times} |")
    compared = [r for r in results if "previous" in r]
    if compared:
        print("\n| database | sends | previous build_report (s) | build_report (s) | speed-up |")
        print("|---|---:|---:|---:|---:|")
        for r in compared:
            now = min(r["runs"])
            print(
                f"| {r['database']} | {r['rows']['send']:,} | {r['previous']:.2f} | {now:.2f} | "
                f"{r['previous'] / now:.1f}x |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=10_000_000)
    parser.add_argument("--no-previous", action="store_true", help="skip the build_report before the tallies")
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    previous = None if args.no_previous else previous_build_report()
    if previous is None and not args.no_previous:
        print(
            f"the build_report of commit {PREVIOUS} cannot be shown by git or no longer imports:"
            " no comparison with the previous build_report",
            file=sys.stderr,
        )
    results = []
    for bench in (on_sqlite, on_postgres):
        if args.only in (None, bench.__name__.removeprefix("on_").replace("postgres", "postgresql")):
            results.append(bench(sizes_for(args.sends), previous))
    print_tables(results)


if __name__ == "__main__":
    main()
