"""How well each way of colouring customers predicted churn on the store's own history.

At a past cut-off T, with what was known at T only: the rules (as configured, with the contract's
defaults, and calibrated from the gaps between purchases as of T), recency alone (days since the
last value event) and the model trained on the cut-offs whose horizon had ended by T. Each is
scored against what happened in (T, T + horizon]: the AUC (the chance that a customer who did not
buy again is ranked above one who did; 0.5 is a coin) and, per colour, how many customers were
given it and the share of them that bought again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy
import pandas
from sklearn.metrics import brier_score_loss, roc_auc_score

from engine.config.durations import format_duration
from engine.config.settings import Config, RedRisk, YellowRisk
from engine.customers.risk.calibration import in_force, thresholds_from_gaps
from engine.customers.risk.model import Features, NotEnoughHistory, colours, fit, probabilities

COLOURS = ("green", "yellow", "red")
RANK = {"green": 0, "yellow": 1, "red": 2}


def rule_colours(features: pandas.DataFrame, yellow: timedelta, red: timedelta) -> numpy.ndarray:
    """The rules' colours from last activity (days) and red events, as engine/campaigns/measures.py decides them."""
    inactive = features["activity_recency"].to_numpy()
    is_red = (inactive >= red.total_seconds() / 86400) | (features["red_events"].to_numpy() > 0)
    is_yellow = inactive >= yellow.total_seconds() / 86400
    return numpy.where(is_red, "red", numpy.where(is_yellow, "yellow", "green"))


def _auc(churned: numpy.ndarray, score: numpy.ndarray) -> float | None:
    if churned.all() or not churned.any():
        return None
    return round(float(roc_auc_score(churned, score)), 4)


def _by_colour(churned: numpy.ndarray, colour: numpy.ndarray) -> dict[str, dict[str, Any]]:
    """Per colour: customers, and the share (percent) of them that bought again within the horizon."""
    shares = {}
    for name in COLOURS:
        given = colour == name
        n = int(given.sum())
        shares[name] = {
            "customers": n,
            "bought_again": round(100 * float((~churned[given]).mean()), 2) if n else None,
        }
    return shares


def reliability(churned: numpy.ndarray, probability: numpy.ndarray, bins: int = 5) -> list[dict[str, Any]]:
    """Calibration, bin by bin of predicted probability (0-0.2, ..., 0.8-1): the mean probability
    predicted against the share that did not buy again; they agree when the model is calibrated."""
    index = numpy.minimum((probability * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        chosen = index == b
        n = int(chosen.sum())
        rows.append(
            {
                "from": b / bins,
                "to": (b + 1) / bins,
                "customers": n,
                "predicted": round(float(probability[chosen].mean()), 4) if n else None,
                "observed": round(float(churned[chosen].mean()), 4) if n else None,
            }
        )
    return rows


def _rules(churned: numpy.ndarray, colour: numpy.ndarray, yellow: timedelta, red: timedelta) -> dict[str, Any]:
    return {
        "yellow": format_duration(yellow),
        "red": format_duration(red),
        "auc": _auc(churned, numpy.vectorize(RANK.get)(colour) if len(colour) else colour),
        "colours": _by_colour(churned, colour),
    }


def _calibrated_rules(churned: numpy.ndarray, x: pandas.DataFrame, thresholds: dict[str, timedelta]) -> dict[str, Any]:
    yellow, red = thresholds["yellow"], thresholds["red"]
    return _rules(churned, rule_colours(x, yellow, red), yellow, red)


def backtest(features: Features, config: Config, cutoff: datetime, horizon: timedelta) -> dict[str, Any]:
    """The figures at `cutoff`. The model part is None (with the reason) when the history before it is too short."""
    x, y = features.labelled(cutoff, horizon)
    churned = y.to_numpy(dtype=bool)
    risk = config.risk
    configured = (risk.inactive_for("yellow"), risk.inactive_for("red"))
    default = (YellowRisk().inactive_for, RedRisk().inactive_for)
    gaps = thresholds_from_gaps(x)
    calibrated = in_force(config, gaps) if gaps else None
    result: dict[str, Any] = {
        "cutoff": cutoff.isoformat(),
        "horizon": format_duration(horizon),
        "customers": len(churned),
        "bought_again": int((~churned).sum()),
        "auc_recency": _auc(churned, x["recency"].to_numpy()),
        "rules": _rules(churned, rule_colours(x, *configured), *configured),
        "rules_default": _rules(churned, rule_colours(x, *default), *default),
        "rules_calibrated": _calibrated_rules(churned, x, calibrated) if calibrated else None,
        "model": None,
        "model_note": None,
    }
    try:
        model, trained_on = fit(features, cutoff - horizon, horizon)
    except NotEnoughHistory as exc:
        result["model_note"] = str(exc)
        return result
    probability = probabilities(model, x)
    result["model"] = {
        "auc": _auc(churned, probability),
        "brier": round(float(brier_score_loss(churned, probability)), 4) if len(churned) else None,
        "mean_probability": round(float(probability.mean()), 4) if len(churned) else None,
        "churn_rate": round(float(churned.mean()), 4) if len(churned) else None,
        "colours": _by_colour(churned, colours(config, probability)),
        "reliability": reliability(churned, probability),
        "trained_on": trained_on,
    }
    return result


def summary(figures: dict[str, Any]) -> dict[str, Any]:
    """The AUCs side by side, as the report carries them."""
    model = figures.get("model") or {}
    calibrated = figures.get("rules_calibrated") or {}
    return {
        "cutoff": figures["cutoff"],
        "horizon": figures["horizon"],
        "auc_model": model.get("auc"),
        "auc_rules": figures["rules"]["auc"],
        "auc_rules_default": figures["rules_default"]["auc"],
        "auc_rules_calibrated": calibrated.get("auc"),
        "auc_recency": figures["auc_recency"],
        "bought_again_by_colour": {
            "model": {c: v["bought_again"] for c, v in model["colours"].items()} if model else None,
            "rules": {c: v["bought_again"] for c, v in figures["rules"]["colours"].items()},
        },
    }
