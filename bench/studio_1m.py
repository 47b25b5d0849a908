"""The studio on a store of 1,000,000 customers and 10,000,000 events (SQLite, built as
bench/tick_1m.py builds it) with the shipped campaigns: how long the campaign list takes to answer
with every campaign's audience size and 30-day figures, and how long a preview takes to render
after its template file changes.

    .venv/bin/python bench/studio_1m.py                      # 1,000,000 customers
    .venv/bin/python bench/studio_1m.py --customers 100000

Audience sizes are compared with the naive way, one COUNT per campaign, and so is the campaign list
that answers from counts made on a thread of their own (engine/web/studio/overview.py `Counts`)
with the list that would wait for them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tick_1m import NOW, fill, machine, project

from engine.campaigns.conditions import ConditionCompiler
from engine.campaigns.language import load_campaigns
from engine.config.settings import load_config
from engine.store.tables import Customer
from engine.web.studio import local_app
from engine.web.studio.overview import audience_sizes as sizes
from engine.web.studio.overview import recent_figures

RUNS = 5


def timed(work, runs: int = RUNS) -> float:
    """The median wall time of `runs` calls, in milliseconds."""
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - started)
    return 1000 * statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="studio-bench-") as folder:
        root = Path(folder)
        config_file = project(root, f"sqlite:///{root}/bench.db")
        print(f"building {args.customers:,} customers and {10 * args.customers:,} events ...", flush=True)
        built = fill(f"sqlite:///{root}/bench.db", args.customers, postgres=False)
        config = load_config(config_file)
        campaigns = load_campaigns(config)
        app = local_app(config)
        engine = app.state.studio.engine
        compiler = ConditionCompiler(config, NOW)

        def one_count_each() -> None:
            with engine.connect() as connection:
                for c in campaigns:
                    connection.execute(select(func.count()).select_from(Customer).where(compiler.all_of(c.audience)))

        rows = []
        rows.append(("audience sizes: one COUNT per campaign (naive)", timed(one_count_each, 1)))
        rows.append(
            ("audience sizes: one pass for all campaigns", timed(lambda: sizes(config, engine, campaigns, NOW), 1))
        )
        rows.append(("30-day figures of every campaign", timed(lambda: recent_figures(engine, campaigns, NOW), 1)))
        with TestClient(app) as client:
            started = time.perf_counter()
            assert client.get("/studio/").status_code == 200
            rows.append(("campaign list, first answer (checks every template)", 1000 * (time.perf_counter() - started)))
            while "data-counting" in client.get("/studio/").text:
                time.sleep(0.2)
            rows.append(("campaign list, until every audience is counted", 1000 * (time.perf_counter() - started)))
            rows.append(("campaign list with audience sizes, files unchanged", timed(lambda: client.get("/studio/"))))
            preview = "/studio/preview/email?campaign=welcome&locale=en"
            template = root / "templates" / "emails" / "welcome.mjml"
            client.get(preview)
            rows.append(("preview, template unchanged", timed(lambda: client.get(preview))))

            def after_a_change() -> None:
                template.write_text(template.read_text() + "\n")
                assert client.get(preview).status_code == 200

            rows.append(("preview, right after its template changed", timed(after_a_change)))
    print(f"\n{machine()}; store built in {built:.0f} s; {len(campaigns)} shipped campaigns; median of runs\n")
    print(f"| {'what':<52} | {'ms':>9} |")
    print(f"|{'-' * 54}|{'-' * 11}|")
    for what, ms in rows:
        print(f"| {what:<52} | {ms:>9.1f} |")


if __name__ == "__main__":
    main()
