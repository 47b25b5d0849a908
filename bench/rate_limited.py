"""Three `lifecycle run` daemons (`--daemons`) on one PostgreSQL store send due receipts to the file sender
under `sender.rate.per_second`, and the pace they keep together is compared with the rate set and
with the same three daemons unlimited.

    .venv/bin/python bench/rate_limited.py                       # 14, 50, 100 and 200 a second, 30 s each
    .venv/bin/python bench/rate_limited.py --rates 14 --seconds 10

The time each message reached the "provider" is when the file sender wrote it (the file's
modification time, nanoseconds): the send's `sent_at` is the tick's business time, one value for a
whole tick, so it cannot show a pace. Per run: the messages, the rate over the run (first to last
message), its deviation from the rate set, and the most messages in any one second (a window
starting at each message).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from bisect import bisect_left
from pathlib import Path

import yaml
from sqlalchemy import create_engine, text
from tick_1m import NOW, POSTGRES_ADMIN, machine, project

from engine.store.dialect import make_engine
from engine.store.schema import upgrade

POSTGRES_DB = "lifecycle_bench_rate"
CUSTOMERS = 5000


RECEIPT = """\
description: the bench's due sends, one step that needs no event behind it
type: transactional
trigger: {event: bench_receipt}
steps:
  - template: thanks_loyal
    subject: "Your receipt, {{ customer.first_name }}"
"""


def configure(config: Path, per_second: float | None) -> None:
    settings = yaml.safe_load(config.read_text())
    settings["sender"] = {"backend": "file", "file": {"directory": "outbox"}}
    if per_second is not None:
        settings["sender"]["rate"] = {"per_second": per_second}
    config.write_text(yaml.safe_dump(settings, allow_unicode=True))


def fill(url: str) -> None:
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(
            text("""
            INSERT INTO customer (id, external_id, email, first_name, locale, timezone, created_at, confirmed_at,
                                  attributes)
            SELECT x, 'c' || x, 'c' || x || '@example.com', 'Name' || x, 'en', 'Europe/London',
                   CAST(:now AS timestamptz) - interval '30 days', CAST(:now AS timestamptz) - interval '30 days',
                   '{}'::jsonb
            FROM generate_series(1, :n) AS x"""),
            {"n": CUSTOMERS, "now": NOW.isoformat()},
        )
        connection.execute(text("SELECT setval('customer_id_seq', :n)"), {"n": CUSTOMERS})
    engine.dispose()


def due_receipts(url: str, sends: int) -> None:
    """`sends` receipts due at once, replacing the last run's."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM send"))
        connection.execute(text("DELETE FROM entry"))
        connection.execute(text("DELETE FROM send_rate"))
        connection.execute(
            text("""
            INSERT INTO entry (campaign, customer_id, entry_key, entered_at, held_out, scheduled, status)
            SELECT 'receipt', g % :customers + 1, 'bench:' || g, CAST(:now AS timestamptz), false, true, 'active'
            FROM generate_series(1, :n) AS g"""),
            {"now": NOW.isoformat(), "n": sends, "customers": CUSTOMERS},
        )
        connection.execute(
            text("""
            INSERT INTO send (entry_id, campaign, customer_id, step, marketing, priority, due_at, next_attempt_at,
                              status, attempts, updated_at)
            SELECT id, 'receipt', customer_id, 1, false, 0, entered_at, entered_at, 'scheduled', 0, entered_at
            FROM entry""")
        )
    engine.dispose()


def run(url: str, config: Path, env: dict[str, str], sends: int, daemons: int) -> list[float]:
    """Start the daemons, wait until they all run, make `sends` due, and return the times (s) each
    message was written, once none waits."""
    outbox = config.parent / "outbox"
    for old in outbox.glob("*.eml"):
        old.unlink()
    engine = create_engine(url)

    def count(sql: str) -> int:
        with engine.connect() as connection:
            return int(connection.execute(text(sql)).scalar_one())

    command = [sys.executable, "-m", "engine", "run", "--config", str(config), "--now", NOW.isoformat()]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(daemons)
    ]
    try:
        while count("SELECT count(*) FROM worker") < daemons:
            time.sleep(0.1)
        due_receipts(url, sends)
        while count("SELECT count(*) FROM send WHERE status IN ('scheduled', 'deferred', 'sending')"):
            time.sleep(0.2)
        with engine.connect() as connection:
            other = connection.execute(
                text("SELECT status, reason, count(*) FROM send WHERE status <> 'sent' GROUP BY status, reason")
            ).all()
        if other:
            raise SystemExit(f"sends that did not go: {other}")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()
        engine.dispose()
    return sorted(path.stat().st_mtime_ns / 1e9 for path in outbox.glob("*.eml"))


def busiest_second(times: list[float]) -> int:
    """The most messages in any one second, over windows [t, t + 1) starting at each message."""
    return max(bisect_left(times, start + 1.0) - i for i, start in enumerate(times))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", type=float, nargs="+", default=[14, 50, 100, 200], help="per_second values to run")
    parser.add_argument("--seconds", type=float, default=30, help="how long each limited run should last")
    parser.add_argument("--unlimited-sends", type=int, default=6000)
    parser.add_argument("--daemons", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "LIFECYCLE_SECRET": "bench"}
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {POSTGRES_DB} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {POSTGRES_DB}"))
    url = POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{POSTGRES_DB}"
    results = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            config = project(Path(folder), url, sender="file")
            for shipped in (config.parent / "campaigns").glob("*.yaml"):
                shipped.unlink()  # no evaluation creates sends of its own: only the bench's are due
            (config.parent / "campaigns" / "receipt.yaml").write_text(RECEIPT)
            fill(url)
            configure(config, None)
            unlimited = run(url, config, env, args.unlimited_sends, args.daemons)
            naive = (len(unlimited) - 1) / (unlimited[-1] - unlimited[0])
            for rate in args.rates:
                configure(config, rate)
                times = run(url, config, env, int(rate * args.seconds), args.daemons)
                results.append((rate, times))
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {POSTGRES_DB} WITH (FORCE)"))
    print(f"\nMachine: {machine()}, PostgreSQL on the same machine\n")
    print(f"{args.daemons} `lifecycle run` daemons on one PostgreSQL store, file sender:\n")
    print("| per_second set | messages | achieved (per s) | deviation | most in any 1 s | vs unlimited |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| none (unlimited) | {len(unlimited):,} | {naive:,.1f} | | {busiest_second(unlimited):,} | 1.00x |")
    for rate, times in results:
        achieved = (len(times) - 1) / (times[-1] - times[0])
        deviation = (achieved / rate - 1) * 100
        print(
            f"| {rate:g} | {len(times):,} | {achieved:,.2f} | {deviation:+.1f}% | {busiest_second(times):,} "
            f"| {achieved / naive:.3f}x |"
        )


if __name__ == "__main__":
    main()
