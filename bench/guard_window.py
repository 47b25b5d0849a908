"""The deliverability guard's cost at each tick, over a store of 1,000,000 sent emails, on SQLite.

The guard reads, for each campaign, its latest `guard.window` sends that went out (engine/delivery/guard.py).
With the index of migration 0005 (`ix_send_campaign_sent`: campaign, status, sent_at) that is a walk of
`window` index entries from the newest; without it (the straightforward way) the database sorts all the
campaign's sent emails at every tick. Both run in the same run on the same store: the index is dropped
for the second. Prints a markdown table and the machine.

    .venv/bin/python bench/guard_window.py
    .venv/bin/python bench/guard_window.py --sends 200000

The store: one email sent a second over the last weeks. Half are 5 campaigns that run all along (welcome,
thanks: interleaved), half are 5 broadcasts that ran one after the other, each in a period of its own. 1 in
20 skipped, 1 in 500 complained about, 1 in 500 bounced (its address suppressed as a bounce).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from engine.config.settings import Guard
from engine.delivery.guard import measure, verdict
from engine.store.dialect import make_engine
from engine.store.schema import upgrade

CAMPAIGNS = [f"campaign{n}" for n in range(10)]
FILL = """
INSERT INTO send (entry_id, campaign, customer_id, step, marketing, priority, due_at, next_attempt_at,
                  status, attempts, to_email, sent_at, outcomes)
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :sends)
SELECT 1, 'campaign' || CASE WHEN i % 2 = 0 THEN (i / 2) % 5 ELSE 5 + i * 5 / (:sends + 1) END, 1, i, 1, 0,
       '2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000',
       CASE WHEN i % 20 = 0 THEN 'skipped' ELSE 'sent' END, 1, 'a' || (i % 100000) || '@example.com',
       strftime('%Y-%m-%d %H:%M:%S', '2026-01-01', '+' || i || ' seconds') || '.000000',
       CASE (i / 10) % 500 WHEN 1 THEN 16 WHEN 2 THEN 8 ELSE 1 END
FROM n
"""
SUPPRESS = """
INSERT OR IGNORE INTO suppression (email, reason, created_at)
SELECT to_email, 'bounce', '2026-01-01 00:00:00.000000' FROM send WHERE outcomes = 8
"""


def fill(path: Path, sends: int) -> None:
    upgrade(make_engine(f"sqlite:///{path}"))
    raw = create_engine(f"sqlite:///{path}")  # no foreign keys: one customer and entry stand for all
    with raw.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO customer (id, external_id, email, created_at, attributes) VALUES (1, 'c', 'c@x.org', "
                "'2026-01-01 00:00:00.000000', '{}')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO entry (id, campaign, customer_id, entry_key, entered_at, held_out, scheduled, status) "
                "VALUES (1, 'campaign0', 1, 'k', '2026-01-01 00:00:00.000000', 0, 1, 'active')"
            )
        )
        connection.execute(text(FILL), {"sends": sends})
        connection.execute(text(SUPPRESS))
        connection.execute(text("DELETE FROM send_tally_change"))
    raw.dispose()


def guard_pass(engine: Engine, guard: Guard) -> float:
    """One tick's guard over every campaign, best of 3, in seconds."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        with engine.connect() as connection:
            for name in CAMPAIGNS:
                verdict(measure(connection, name, guard.window), guard)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=1_000_000)
    parser.add_argument("--window", type=int, default=Guard().window)
    args = parser.parse_args()
    guard = Guard(window=args.window)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "store.db"
        started = time.perf_counter()
        fill(path, args.sends)
        print(f"filled {args.sends:,} sends in {time.perf_counter() - started:.1f} s")
        engine = make_engine(f"sqlite:///{path}")
        indexed = guard_pass(engine, guard)
        with engine.begin() as connection:
            connection.execute(text("DROP INDEX ix_send_campaign_sent"))
        naive = guard_pass(engine, guard)
        engine.dispose()
    print(f"\n{args.sends:,} sends, {len(CAMPAIGNS)} campaigns, window {guard.window}; best of 3\n")
    print("| the guard at each tick | ms | speed-up |")
    print("|---|---:|---:|")
    print(f"| without `ix_send_campaign_sent` (sort each campaign's sends) | {naive * 1000:.1f} | 1.0x |")
    print(f"| with it (walk the latest `window` entries) | {indexed * 1000:.1f} | {naive / indexed:.0f}x |")
    print(f"\n{platform.python_version()}, {platform.machine()}, {datetime.now(UTC):%Y-%m-%d}")


if __name__ == "__main__":
    main()
