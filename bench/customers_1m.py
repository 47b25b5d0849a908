"""`lifecycle customers` and the report's customer part over 1,000,000 customers, on SQLite and
PostgreSQL.

Fills a store set-wise with the customers and events of bench/report_10m.py (a visit each, a
purchase for every third, created over two years), then times:

- the customer list as one statement (engine/insights/customers.py): the first page of 50, the
  count for paging, the red list of the report, and every row streamed (as `--format csv` does);
- the naive way, customer by customer: stage, risk and value asked of the database one customer
  at a time (the audience conditions' correlated subqueries), then sorted in Python; timed on
  the first 2,000 customers and scaled to the store, since the whole store would take hours;
- the report's retention, stages and risk (point in time, counted at each month boundary) next
  to the previous definition's (one interval per customer, last activity as of now), read from
  git at PREVIOUS, on the same store in the same run.

    .venv/bin/python bench/customers_1m.py                       # both databases, 1M customers
    .venv/bin/python bench/customers_1m.py --customers 100000 --only sqlite
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from report_10m import DIALECTS, NOW, POSTGRES_ADMIN, STATEMENTS, _render, config_for, machine, seconds
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Engine
from sqlmodel import col

from engine.campaigns.language import RISKS, STAGES
from engine.campaigns.measures import Measures
from engine.config.settings import Config
from engine.insights.customers import Filters, count_customers, customer_rows, each_customer, red_list
from engine.insights.report import customer_counts, month_starts, report_connection
from engine.store.dialect import json_number, make_engine
from engine.store.schema import upgrade
from engine.store.tables import Customer, Event

PREVIOUS = "21d78e8"  # the last commit with retention as one interval per customer
REPO = Path(__file__).resolve().parent.parent
POSTGRES_DB = "lifecycle_bench_customers"
NAIVE_SAMPLE = 2000


def fill(engine: Engine, dialect: str, customers: int) -> int:
    """The customers and events of bench/report_10m.py, at the current schema; returns the events."""
    upgrade(engine)
    words = DIALECTS[dialect]
    with engine.begin() as connection:
        for table, _size, sql in STATEMENTS:
            if table in ("customer", "event"):
                connection.execute(text(_render(sql, words)), {"n": customers, "customers": customers})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if words["analyze"]:
            connection.execute(text(words["analyze"]))
        return int(connection.execute(text("SELECT count(*) FROM event")).scalar_one())


def naive_per_customer(engine: Engine, config: Config, sample: int) -> float:
    """Seconds a customer for the list asked customer by customer, as a loop over the store would."""
    measures = Measures(config, NOW)
    checks = [measures.stage(s) for s in STAGES] + [measures.risk(r) for r in RISKS]
    value = select(json_number(col(Event.properties), config.value.property)).where(
        col(Event.name) == config.value.event, col(Event.at) <= NOW
    )
    start = time.perf_counter()
    with engine.connect() as connection:
        ids = connection.execute(select(col(Customer.id)).order_by(col(Customer.id)).limit(sample)).scalars().all()
        rows = []
        for customer_id in ids:
            decided = connection.execute(
                select(col(Customer.external_id), *checks).where(col(Customer.id) == customer_id)
            ).one()
            values = connection.execute(value.where(col(Event.customer_id) == customer_id)).scalars().all()
            rows.append((decided[-1], sum(v or 0 for v in values), decided[0]))
        rows.sort(key=lambda r: (not r[0], -r[1], r[2]))
    return (time.perf_counter() - start) / len(ids)


def previous_customer_counts() -> Callable | None:
    """`customer_counts` of engine/insights/report.py at PREVIOUS, or None when git cannot show it."""
    shown = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{PREVIOUS}:engine/insights/report.py"], capture_output=True, text=True
    )
    if shown.returncode != 0:
        return None
    module = ModuleType("engine.insights.previous_report")
    sys.modules[module.__name__] = module
    try:
        exec(compile(shown.stdout, f"{PREVIOUS}:engine/insights/report.py", "exec"), module.__dict__)
    except ImportError:
        return None
    return module.customer_counts


def measure(name: str, engine: Engine, url: str, dialect: str, customers: int) -> dict:
    start = time.perf_counter()
    events = fill(engine, dialect, customers)
    config = config_for(url)
    months = month_starts(NOW, config.timezone)
    timed = {
        "first page of 50": lambda: customer_rows(engine, config, NOW, limit=50),
        "count": lambda: count_customers(engine, config, NOW),
        "red, first page of 50": lambda: customer_rows(engine, config, NOW, risk="red", limit=50),
        "every row streamed": lambda: sum(1 for _ in each_customer(engine, config, NOW, Filters())),
    }
    result = {"database": name, "customers": customers, "events": events, "fill": time.perf_counter() - start}
    result["list"] = {label: seconds(work) for label, work in timed.items()}
    result["naive"] = naive_per_customer(engine, config, NAIVE_SAMPLE) * customers
    with report_connection(engine) as connection:
        measures = Measures(config, NOW)
        result["report"] = {
            "retention, stages, risk": seconds(lambda: customer_counts(connection, measures, months)),
            "red list": seconds(lambda: red_list(connection, config, NOW, config.report.red_list)),
        }
        previous = previous_customer_counts()
        if previous is not None:
            result["previous"] = seconds(lambda: previous(connection, measures, months))
    return result


def on_sqlite(customers: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        engine = make_engine(url)
        try:
            return measure("SQLite", engine, url, "sqlite", customers)
        finally:
            engine.dispose()


def on_postgres(customers: int) -> dict:
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {POSTGRES_DB}"))
        connection.execute(text(f"CREATE DATABASE {POSTGRES_DB}"))
    url = POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{POSTGRES_DB}"
    engine = make_engine(url)
    try:
        return measure("PostgreSQL", engine, url, "postgresql", customers)
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {POSTGRES_DB}"))
        admin.dispose()


def print_tables(results: list[dict]) -> None:
    print(f"\nmachine: {machine()}\n")
    labels = list(results[0]["list"])
    print(f"| database | customers | events | {' | '.join(f'{x} (s)' for x in labels)} | naive, every row (s) |")
    print("|---|---:|---:|" + "---:|" * (len(labels) + 1))
    for r in results:
        times = " | ".join(f"{r['list'][x]:.2f}" for x in labels)
        print(f"| {r['database']} | {r['customers']:,} | {r['events']:,} | {times} | {r['naive']:.0f} |")
    print("\n| database | retention, stages, risk (s) | previous definition (s) | red list (s) |")
    print("|---|---:|---:|---:|")
    for r in results:
        previous = f"{r['previous']:.2f}" if "previous" in r else "-"
        report = r["report"]
        print(f"| {r['database']} | {report['retention, stages, risk']:.2f} | {previous} | {report['red list']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    results = []
    for bench in (on_sqlite, on_postgres):
        if args.only in (None, bench.__name__.removeprefix("on_").replace("postgres", "postgresql")):
            results.append(bench(args.customers))
    print_tables(results)


if __name__ == "__main__":
    main()
