"""The studio on a store of 1,000,000 customers and 10,000,000 events (SQLite, built as
bench/tick_1m.py builds it) with the shipped campaigns: how long the campaign list takes to answer
with every campaign's audience size and 30-day figures, and how long a preview takes to render
after its template file changes.

    .venv/bin/python bench/studio_1m.py                      # 1,000,000 customers
    .venv/bin/python bench/studio_1m.py --customers 100000
    .venv/bin/python bench/studio_1m.py --store DIR          # build the store in DIR once, then reuse it
    .venv/bin/python bench/studio_1m.py --postgres --customers 200000

Each figure is set against the way before it in the same run: audience sizes against one COUNT per
campaign, the estimate from a sample against the exact count, the 30-day figures against reading
every goal event of the store's history, and the campaign list's first answer against a list
that shows "counting…" until the exact counts are in (engine/web/studio/overview.py `Counts`).
The first answers come from studios just started in this process: asked at once (the first, in a
process that has compiled nothing yet), and 2 s after the start, as a person opening the page would
ask (by then the start has begun counting; this process's caches are warm from the first). Wall
time and the process's CPU time are both given, with the load average of the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, create_engine, func, select, text
from sqlmodel import col
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tick_1m import POSTGRES_ADMIN, fill, machine, project

from engine.campaigns.conditions import ConditionCompiler
from engine.campaigns.language import load_campaigns
from engine.clock import utcnow
from engine.config.settings import load_config
from engine.insights import report
from engine.store.schema import open_store
from engine.store.tables import Customer, Event
from engine.web.studio import local_app
from engine.web.studio.overview import SAMPLE, Counts, audience_estimates, audience_sizes, recent_figures

RUNS = 5
POSTGRES_DB = "lifecycle_bench_studio"
Row = tuple[str, float, float]  # what, wall ms, CPU ms


def timed(what: str, work: Callable[[], Any], runs: int = RUNS) -> Row:
    """The median wall and CPU time of `runs` calls, in milliseconds."""
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return what, 1000 * statistics.median(walls), 1000 * statistics.median(cpus)


@contextmanager
def every_goal_event() -> Iterator[None]:
    """The 30-day figures as they were read before: every goal event since `since`, found by reading
    the whole index on (customer, name, time) rather than probing the customers who entered since."""

    def before(name: str, now: datetime, since: datetime | None, campaigns: set[str]) -> Any:
        happened = and_(col(Event.name) == name, col(Event.at) <= now)
        if since is not None:
            happened = and_(happened, col(Event.at) > since)
        return (
            select(col(Event.customer_id), col(Event.at))
            .where(happened)
            .order_by(col(Event.customer_id))
            .with_hint(Event, "INDEXED BY ix_event_customer_name_at", "sqlite")
            .cte("goals")
            .prefix_with("MATERIALIZED")
        )

    now_reading = report._goal_events
    report._goal_events = before
    try:
        yield
    finally:
        report._goal_events = now_reading


def first_answers(config_file: Path, estimates: bool, after: float = 0.0) -> list[Row]:
    """A studio just started, asked for its campaign list `after` seconds later (as a person opens
    it): its first answer, and the time until every audience is exact."""
    app = local_app(load_config(config_file))
    if not estimates:
        app.state.studio.counts = Counts(sample=0)
    label = "with estimates (now)" if estimates else "'counting…' until exact (before)"
    when = f"{after:.0f} s after the start" if after else "at the start"
    rows = []
    with TestClient(app) as client:
        time.sleep(after)
        wall, cpu = time.perf_counter(), time.process_time()
        page = client.get("/studio/").text
        shown = page.count('data-figure="audience"')
        sized = shown - page.count(">counting…<")
        rows.append((f"campaign list, first answer {when}, {label}: {sized} of {shown} sizes", *_since(wall, cpu)))
        while "data-counting" in client.get("/studio/").text:
            time.sleep(0.2)
        rows.append((f"  then until every audience is exact, {label}", *_since(wall, cpu)))
        if estimates and not after:
            rows.append(timed("campaign list, counted and files unchanged", lambda: client.get("/studio/")))
    return rows


def _since(wall: float, cpu: float) -> tuple[float, float]:
    return 1000 * (time.perf_counter() - wall), 1000 * (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--store", type=Path, help="a folder to build the store in, or that holds it already")
    parser.add_argument(
        "--postgres", action="store_true", help=f"on PostgreSQL (database {POSTGRES_DB}, dropped after)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="studio-bench-") as folder:
        root = args.store or Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        with store(root, args.postgres) as url:
            built = "kept"
            if args.postgres or not (root / "bench.db").exists():
                project(root, url)
                print(f"building {args.customers:,} customers and {10 * args.customers:,} events ...", flush=True)
                built = f"built in {fill(url, args.customers, postgres=args.postgres):.0f} s"
            rows = measure(root)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    kind = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"\n{machine()}; {kind} store {built}; load average at the end {load}; median of {RUNS} runs where timed so\n"
    )
    print(f"| {'what':<88} | {'wall ms':>9} | {'CPU ms':>9} |")
    print(f"|{'-' * 90}|{'-' * 11}|{'-' * 11}|")
    for what, wall, cpu in rows:
        print(f"| {what:<88} | {wall:>9.1f} | {cpu:>9.1f} |")


@contextmanager
def store(root: Path, postgres: bool) -> Iterator[str]:
    """The store's URL: a file in `root`, or a PostgreSQL database of the bench's own."""
    if not postgres:
        yield f"sqlite:///{root}/bench.db"
        return
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {POSTGRES_DB} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {POSTGRES_DB}"))
    try:
        yield POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{POSTGRES_DB}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {POSTGRES_DB} WITH (FORCE)"))
        admin.dispose()


def measure(root: Path) -> list[Row]:
    config_file = root / "config.yaml"
    config = load_config(config_file)
    campaigns = load_campaigns(config)
    engine = open_store(config.database_url)
    now = utcnow()
    compiler = ConditionCompiler(config, now)

    def one_count_each() -> None:
        with engine.connect() as connection:
            for c in campaigns:
                connection.execute(select(func.count()).select_from(Customer).where(compiler.all_of(c.audience)))

    rows: list[Row] = []
    # the first answers first, before anything else has warmed the store's pages or the templates
    rows += first_answers(config_file, estimates=True)
    rows += first_answers(config_file, estimates=False)
    rows += first_answers(config_file, estimates=True, after=2.0)
    rows.append(timed("audience sizes: one COUNT per campaign (naive)", one_count_each, 1))
    rows.append(
        timed(
            "audience sizes: one pass for every campaign, exact",
            lambda: audience_sizes(config, engine, campaigns, now),
            1,
        )
    )
    rows.append(
        timed(
            f"audience sizes: estimated from {SAMPLE:,} customers drawn at random",
            lambda: audience_estimates(config, engine, campaigns, now),
        )
    )
    with every_goal_event():
        rows.append(
            timed("30-day figures, every goal event read (before)", lambda: recent_figures(engine, campaigns, now), 1)
        )
    rows.append(
        timed("30-day figures, customers who entered probed (now)", lambda: recent_figures(engine, campaigns, now))
    )
    rows += previews(root, config_file)
    return rows


def previews(root: Path, config_file: Path) -> list[Row]:
    preview = "/studio/preview/email?campaign=welcome&locale=en"
    template = root / "templates" / "emails" / "welcome.mjml"
    written = template.read_text()
    with TestClient(local_app(load_config(config_file))) as client:
        client.get(preview)

        def after_a_change() -> None:
            template.write_text(template.read_text() + "\n")
            assert client.get(preview).status_code == 200

        try:
            return [
                timed("preview, template unchanged", lambda: client.get(preview)),
                timed("preview, right after its template changed", after_a_change),
            ]
        finally:
            template.write_text(written)


if __name__ == "__main__":
    main()
