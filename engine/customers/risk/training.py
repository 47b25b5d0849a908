"""`lifecycle risk train` and the daemon's scheduled retraining: calibrate the rules, backtest, train,
store and score, in that order, from one read of the store per cut-off."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import col

from engine.clock import as_utc, utcnow
from engine.config.durations import format_duration
from engine.config.settings import Config
from engine.customers.risk.backtest import backtest, summary
from engine.customers.risk.calibration import apply_stored, in_force, thresholds_from_gaps
from engine.customers.risk.model import (
    Features,
    NotEnoughHistory,
    fit,
    latest_model,
    predict,
    store_model,
    store_scores,
)
from engine.store.tables import RiskModel

if TYPE_CHECKING:
    import pandas


@dataclass
class Training:
    """What a training run did: the version stored, the calibrated rules, the backtest and the scores."""

    version: int
    thresholds: dict[str, Any] | None
    figures: dict[str, Any]
    scored: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    note: str | None = None  # why no model was trained


def train(engine: Engine, config: Config, now: datetime) -> Training:
    """Calibrate the rules from the gaps between purchases as of `now`, backtest at `now - horizon`,
    train the model on the cut-offs up to then and store it, then score every customer. With too
    little history the calibration is still stored and `NotEnoughHistory` is raised after it: the
    rules stay in force."""
    horizon = config.risk.horizon
    started = time.perf_counter()
    with engine.connect() as connection:  # reads only: a write would hold the store's lock throughout
        features = Features(connection, config)
        gaps = thresholds_from_gaps(features.at(now))
        thresholds = in_force(config, gaps) if gaps else None
        if thresholds:
            config.risk.calibrate(thresholds)
        figures = backtest(features, config, now - horizon, horizon)
        try:
            model, trained_on = fit(features, now - horizon, horizon)
            note = None
        except NotEnoughHistory as exc:
            model, trained_on, note = None, None, str(exc)
    trained = time.perf_counter()
    metrics = {**summary(figures), "trained_on": trained_on, "note": note}
    with engine.begin() as connection:
        version = store_model(connection, config, utcnow(), now, thresholds, metrics, model)
    result = Training(
        version, _spans(thresholds), figures, seconds={"training": round(trained - started, 2)}, note=note
    )
    if note is not None:
        raise NotEnoughHistory(note)
    result.scored, result.seconds["scoring"] = score(engine, config, now, features.at(now))
    return result


def score(
    engine: Engine, config: Config, now: datetime, features: pandas.DataFrame | None = None
) -> tuple[dict[str, int], float]:
    """Score every customer with the latest stored model (on `features` at `now` when they were read
    already); the counts per colour and the seconds it took."""
    started = time.perf_counter()
    with engine.connect() as connection:
        loaded = latest_model(connection, config)
        if loaded is None:
            raise NotEnoughHistory("no churn model is stored yet: run `lifecycle risk train` first")
        scores = predict(connection, config, loaded, now, features)
    with engine.begin() as connection:
        counts = store_scores(connection, scores, now, loaded.version)
    return counts, round(time.perf_counter() - started, 2)


def _spans(thresholds: dict[str, Any] | None) -> dict[str, Any] | None:
    return {k: format_duration(v) for k, v in thresholds.items()} if thresholds else None


def refresh(engine: Engine, config: Config, now: datetime | None = None) -> Training | None:
    """The daemon's scheduled run: under `model: predicted` a whole training, else the rules'
    calibration alone (when the config leaves a threshold unset). None when there was nothing to do,
    or when another daemon of the store ran within `risk.retrain` (its results are taken instead)."""
    moment = now or utcnow()
    if recently_run(engine, config, moment):
        apply_stored(config, engine)
        return None
    if config.risk.model == "predicted":
        return train(engine, config, moment)
    if config.risk.explicit("yellow") and config.risk.explicit("red"):
        return None
    with engine.connect() as connection:
        gaps = thresholds_from_gaps(Features(connection, config).at(moment))
    if gaps is None:
        return None
    thresholds = in_force(config, gaps)
    config.risk.calibrate(thresholds)
    with engine.begin() as connection:
        version = store_model(connection, config, utcnow(), moment, thresholds, {"note": "rules calibrated"}, None)
    return Training(version, _spans(thresholds), {})


def recently_run(engine: Engine, config: Config, now: datetime) -> bool:
    """Whether a run as of less than `risk.retrain` before `now` is stored."""
    query = select(func.max(col(RiskModel.data_until)))
    with engine.connect() as connection:
        latest = connection.execute(query).scalar()
    return latest is not None and as_utc(latest) > now - config.risk.retrain
