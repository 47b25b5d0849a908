"""The predicted churn model: learned from the store's own history, calibrated, signed, stored, and
used to score every customer.

Training rows are the customers as they were at several past cut-offs (each half a horizon before
the next, the latest a horizon before `now`, so each label, "no value event within the horizon
after the cut-off", is already known): four, or up to eight while the rows stay under `MAX_ROWS`,
so a small store learns from more of its past. The learner is scikit-learn's histogram gradient boosting,
fitted once on three customers in four; the fourth are held out to calibrate it
(`CalibratedClassifierCV` over the frozen fit) so that a probability of 0.7 means seven in ten such
customers did not buy (isotonic regression when the held-out rows are many, Platt's sigmoid
otherwise). One fit and a held-out quarter rather than three cross-validated fits: on CDNOW the
same AUC in a third of the time (bench/risk_histories.py).

The fitted model is pickled; since unpickling runs code, the bytes are signed with the project
secret (HMAC-SHA256) and a model whose signature does not match is refused, never loaded.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy
import pandas
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection, Engine
from sqlmodel import col
from threadpoolctl import threadpool_limits

from engine.config.settings import Config
from engine.customers.risk.features import FEATURES, churned, features_at
from engine.errors import LifecycleError
from engine.store.tables import CustomerRisk, RiskModel, table_of

CUTOFFS = (4, 8)  # training cut-offs, each half a horizon before the next: the fewest and the most
MIN_LABELS = 50  # customers who bought again, and who did not, that a training needs at the least
ISOTONIC_FROM = 20_000  # calibration rows; below, a sigmoid: isotonic steps fitted on 3,000 rows were off by 0.15
CALIBRATION_SHARE = 4  # one customer in this many is held out of the fit to calibrate it
MAX_ROWS = 200_000  # rows fitted at the most, drawn at random: 400,000 rows of CDNOW customers fitted no better
SCORE_BATCH = 10000
SIGNED = b"lifecycle risk model\n"


class NotEnoughHistory(LifecycleError):
    """Too little history to learn from: the rules stay in force."""


class TamperedModel(LifecycleError):
    """A stored model whose signature does not match the project secret."""


class Features:
    """Features and labels per cut-off, read once however many trainings ask for them."""

    def __init__(self, connection: Connection, config: Config):
        self.connection, self.config = connection, config
        self._features: dict[datetime, pandas.DataFrame] = {}

    def at(self, cutoff: datetime) -> pandas.DataFrame:
        if cutoff not in self._features:
            self._features[cutoff] = features_at(self.connection, self.config, cutoff)
        return self._features[cutoff]

    def labelled(self, cutoff: datetime, horizon: timedelta) -> tuple[pandas.DataFrame, pandas.Series]:
        features = self.at(cutoff)
        return features, churned(self.connection, self.config, cutoff, horizon, features.index)


def one_thread() -> threadpool_limits:
    """scikit-learn's OpenMP threads held to one. On a shared two-core machine its threads spin
    waiting for each other: a fit of 8,000 rows took 43 s on two threads and 0.8 s on one."""
    return threadpool_limits(limits=1, user_api="openmp")


def training_cutoffs(last: datetime, horizon: timedelta, customers: int) -> list[datetime]:
    """As many cut-offs as `customers` rows each fit in `MAX_ROWS`, within `CUTOFFS`: on the Complete
    Journey's 2,469 households eight took the AUC 0.003 to 0.005 above four, at earlier cut-offs."""
    fewest, most = CUTOFFS
    count = min(max(MAX_ROWS // max(customers, 1), fewest), most)
    return [last - i * horizon / 2 for i in range(count)]


def fit(features: Features, last_cutoff: datetime, horizon: timedelta) -> tuple[Any, dict[str, Any]]:
    """The calibrated model trained on the cut-offs up to `last_cutoff`, whose labels end by
    `last_cutoff + horizon`; and what it was trained on."""
    frames, labels = [], []
    for cutoff in training_cutoffs(last_cutoff, horizon, len(features.at(last_cutoff))):
        x, y = features.labelled(cutoff, horizon)
        frames.append(x)
        labels.append(y)
    x_all, y_all = pandas.concat(frames), pandas.concat(labels).astype(bool)
    churners, buyers = int(y_all.sum()), int((~y_all).sum())
    if min(churners, buyers) < MIN_LABELS:
        raise NotEnoughHistory(
            f"not enough history to train the churn model: at the cut-offs up to {last_cutoff.date()} there are "
            f"{buyers} customers who bought again within {horizon.days}d and {churners} who did not; it needs "
            f"{MIN_LABELS} of each. The rules stay in force."
        )
    drawn = numpy.sort(numpy.random.default_rng(0).permutation(len(y_all))[:MAX_ROWS])
    x_values, y_values = x_all.to_numpy(dtype=float)[drawn], y_all.to_numpy()[drawn]
    held_out = x_all.index.to_numpy()[drawn] % CALIBRATION_SHARE == 0
    method = "isotonic" if held_out.sum() >= ISOTONIC_FROM else "sigmoid"
    with one_thread():
        if min(y_values[held_out].sum(), (~y_values[held_out]).sum()) < MIN_LABELS // 2:
            # too few to spare: three cross-validated fits, each calibrated on the fold it did not see
            model = CalibratedClassifierCV(learner(len(y_values)), method=method, cv=3).fit(x_values, y_values)
        else:
            fitted = learner(int((~held_out).sum())).fit(x_values[~held_out], y_values[~held_out])
            model = CalibratedClassifierCV(FrozenEstimator(fitted), method=method)
            model.fit(x_values[held_out], y_values[held_out])
    return model, {
        "rows": len(y_all),
        "fitted": len(y_values),
        "churned": churners,
        "bought_again": buyers,
        "calibration": method,
    }


def learner(rows: int) -> HistGradientBoostingClassifier:
    """Shallow trees with large leaves (one row in 500 at the least): chosen on CDNOW's earlier
    cut-offs, not the one the bench scores, where they beat deeper trees and overfit less. A
    hundred rounds, no early stopping: its validation rows would be drawn at random, and the same
    store would give another model on each run."""
    return HistGradientBoostingClassifier(
        max_iter=100,
        learning_rate=0.1,
        max_leaf_nodes=7,
        min_samples_leaf=max(20, rows // 500),
        l2_regularization=1.0,
        early_stopping=False,
    )


def probabilities(model: Any, features: pandas.DataFrame) -> numpy.ndarray:
    """Each customer's probability of no value event within the horizon."""
    if features.empty:
        return numpy.zeros(0)
    with one_thread():
        result: numpy.ndarray = model.predict_proba(features[list(FEATURES)].to_numpy(dtype=float))[:, 1]
    return result


def colours(config: Config, probability: numpy.ndarray) -> numpy.ndarray:
    risk = config.risk
    return numpy.where(
        probability >= risk.red.probability,
        "red",
        numpy.where(probability >= risk.yellow.probability, "yellow", "green"),
    )


# -- signed storage ----------------------------------------------------------------------------------


def _signature(secret: str, payload: bytes) -> str:
    return hmac.new(secret.encode(), SIGNED + payload, hashlib.sha256).hexdigest()


def store_model(
    connection: Connection,
    config: Config,
    trained_at: datetime,
    data_until: datetime,
    thresholds: dict[str, timedelta] | None,
    metrics: dict[str, Any],
    model: Any | None,
) -> int:
    """Append a training run; returns its version."""
    payload = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL) if model is not None else None
    row = {
        "trained_at": trained_at,
        "data_until": data_until,
        "horizon_seconds": int(config.risk.horizon.total_seconds()),
        "yellow_seconds": int(thresholds["yellow"].total_seconds()) if thresholds else None,
        "red_seconds": int(thresholds["red"].total_seconds()) if thresholds else None,
        "metrics": metrics,
        "model": payload,
        "signature": _signature(config.secret_keys()[0], payload) if payload is not None else None,
    }
    version = connection.execute(insert(table_of(RiskModel)).values(**row).returning(col(RiskModel.version))).scalar()
    return int(version or 0)


@dataclass(frozen=True)
class Loaded:
    version: int
    trained_at: datetime
    metrics: dict[str, Any]
    model: Any


def latest_model(connection: Connection, config: Config) -> Loaded | None:
    """The newest stored model, its signature checked against the secret (and the old ones still
    accepted); None when none was trained."""
    row = connection.execute(
        select(
            col(RiskModel.version),
            col(RiskModel.trained_at),
            col(RiskModel.metrics),
            col(RiskModel.model),
            col(RiskModel.signature),
        )
        .where(col(RiskModel.model).is_not(None))
        .order_by(col(RiskModel.version).desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    version, trained_at, metrics, payload, signature = row
    if not any(hmac.compare_digest(_signature(secret, payload), signature or "") for secret in config.secret_keys()):
        raise TamperedModel(
            f"risk model version {version} is not signed with this project's secret (altered, or trained "
            "with another secret): it is not loaded; run `lifecycle risk train` again"
        )
    return Loaded(version, trained_at, metrics, pickle.loads(payload))


# -- scores ------------------------------------------------------------------------------------------


def predict(
    connection: Connection, config: Config, loaded: Loaded, now: datetime, features: pandas.DataFrame | None = None
) -> pandas.DataFrame:
    """Every customer created by `now`: probability and colour (index: customer id). `features`:
    those at `now` when the caller has read them already."""
    features = features_at(connection, config, now) if features is None else features
    probability = probabilities(loaded.model, features)
    return pandas.DataFrame({"probability": probability, "colour": colours(config, probability)}, index=features.index)


def store_scores(connection: Connection, scores: pandas.DataFrame, now: datetime, version: int) -> dict[str, int]:
    """Replace `customer_risk` with these scores; the count per colour."""
    table = table_of(CustomerRisk)
    connection.execute(delete(table))
    for start in range(0, len(scores), SCORE_BATCH):
        batch = scores.iloc[start : start + SCORE_BATCH]
        rows = zip(batch.index, batch["probability"], batch["colour"], strict=True)
        connection.execute(
            insert(table),
            [
                {
                    "customer_id": int(i),
                    "probability": float(p),
                    "colour": c,
                    "scored_at": now,
                    "model_version": version,
                }
                for i, p, c in rows
            ],
        )
    counts = scores["colour"].value_counts()
    return {name: int(counts.get(name, 0)) for name in ("green", "yellow", "red")}


def scores_for(engine: Engine, customer_ids: list[int]) -> dict[int, tuple[float, str]]:
    """The latest (probability, colour) of each of these customers (store ids) that has a score."""
    query = select(col(CustomerRisk.customer_id), col(CustomerRisk.probability), col(CustomerRisk.colour)).where(
        col(CustomerRisk.customer_id).in_(customer_ids)
    )
    with engine.connect() as connection:
        return {i: (p, c) for i, p, c in connection.execute(query)}
