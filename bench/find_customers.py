"""`find_customers` (the studio's search box, `lifecycle customer`'s suggestions) on a store of
1,000,000 customers, against the straightforward search: one query that looks for the text inside the
id, the email and the name of every customer (`LIKE '%text%'`), which reads the whole table whenever
fewer than `limit` customers match.

The store is filled set-wise in SQL (a recursive CTE; no Python loop over rows) on SQLite, the
embedded default. Each search runs once to warm the caches, then 5 times; the table gives the median
in milliseconds.

    .venv/bin/python bench/find_customers.py
    .venv/bin/python bench/find_customers.py --customers 200000
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

from engine.customers.search import find_customers
from engine.store.dialect import make_engine
from engine.store.schema import upgrade

FILL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
INSERT INTO customer (external_id, email, first_name, last_name, created_at, attributes)
SELECT printf('c%07d', i), printf('person%d@example.com', i),
       CASE i % 4 WHEN 0 THEN 'Ann' WHEN 1 THEN 'Bob' WHEN 2 THEN 'Cleo' ELSE 'Dev' END,
       printf('Family%d', i % 50000), '2026-01-01 00:00:00.000000', '{}'
FROM n
"""
NAIVE = """
SELECT external_id, email, first_name, last_name FROM customer
WHERE lower(external_id) LIKE :like OR email LIKE :like
   OR lower(coalesce(first_name, '') || ' ' || coalesce(last_name, '')) LIKE :like
LIMIT 20
"""


def timed(run: Callable[[], list[object]], repeat: int = 5) -> tuple[float, int]:
    """The median time of `run` in milliseconds (after one run that warms the caches), and how many it found."""
    times, result = [], run()
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), len(result)


def naive(engine: Engine, query: str) -> list[object]:
    with engine.connect() as connection:
        return [r[0] for r in connection.execute(text(NAIVE), {"like": f"%{query.lower()}%"})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{Path(folder) / 'bench.db'}")
        upgrade(engine)
        started = time.perf_counter()
        with engine.begin() as connection:
            connection.execute(text(FILL), {"count": args.customers})
        print(f"filled {args.customers:,} customers in {time.perf_counter() - started:.1f} s")
        last = f"c{args.customers:07d}"
        searches = [
            ("an exact id", last),
            ("an id's start", last[:-2]),
            ("an email's start", "person12345"),
            ("a name (many match)", "cleo family4"),
            ("a name that matches nobody", "zed"),
        ]
        print(f"\n{args.customers:,} customers, SQLite, {platform.processor() or platform.machine()}, median of 5\n")
        print("| search | find_customers (ms) | found | naive LIKE scan (ms) | found | speed-up |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, query in searches:
            fast, found = timed(lambda q=query: list(find_customers(engine, q)))
            slow, scanned = timed(lambda q=query: naive(engine, q))
            print(f"| {label} (`{query}`) | {fast:.2f} | {found} | {slow:.2f} | {scanned} | {slow / fast:.1f}x |")
        engine.dispose()


if __name__ == "__main__":
    main()
