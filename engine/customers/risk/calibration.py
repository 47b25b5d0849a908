"""The rules' thresholds calibrated from the store's own rhythm of buying.

The contract's defaults (yellow after 14 days without activity, red after 30) suit daily buyers; in
a shop people visit every few months they paint almost everyone red. When config.yaml does not set
`risk.yellow.inactive_for` / `risk.red.inactive_for`, they come from the customers' own mean gaps
between value events: yellow after the median gap (a typical customer is due), red after the 90th
percentile (later than nine customers in ten would wait), within sane bounds. `lifecycle risk
train` and the daemon (every `risk.retrain`) store them; commands take the latest stored ones
(`apply_stored`). A value written in the config always wins.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import numpy
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col

from engine.config.settings import Config
from engine.store.tables import RiskModel

if TYPE_CHECKING:
    import pandas

MIN_BUYERS = 50  # customers with two or more value events: fewer, and the defaults stay
YELLOW_BOUNDS = (timedelta(days=7), timedelta(days=180))
RED_BOUNDS = (timedelta(days=14), timedelta(days=730))


def thresholds_from_gaps(features: pandas.DataFrame) -> dict[str, timedelta] | None:
    """Yellow and red inactivity from the customers' mean gaps between value events (`features_at`'s
    `mean_gap`, in days), or None with fewer than `MIN_BUYERS` repeat buyers."""
    gaps = features["mean_gap"].dropna()
    gaps = gaps[gaps > 0]
    if len(gaps) < MIN_BUYERS:
        return None
    median, p90 = numpy.percentile(gaps.to_numpy(), [50, 90])
    yellow = _bounded(timedelta(days=round(float(median))), YELLOW_BOUNDS)
    red = _bounded(timedelta(days=round(float(p90))), RED_BOUNDS)
    return {"yellow": yellow, "red": max(red, yellow + timedelta(days=1))}


def _bounded(value: timedelta, bounds: tuple[timedelta, timedelta]) -> timedelta:
    return min(max(value, bounds[0]), bounds[1])


def in_force(config: Config, calibrated: dict[str, timedelta]) -> dict[str, timedelta]:
    """The calibrated thresholds for the colours the config leaves unset, kept in order with a
    colour it does set: yellow always before red."""
    risk = config.risk
    chosen = dict(calibrated)
    if risk.explicit("red") and not risk.explicit("yellow"):
        chosen["yellow"] = min(chosen["yellow"], risk.red.inactive_for - timedelta(days=1))
    if risk.explicit("yellow") and not risk.explicit("red"):
        chosen["red"] = max(chosen["red"], risk.yellow.inactive_for + timedelta(days=1))
    return chosen


def rules_note(config: Config) -> str | None:
    """What `validate` says when the config leaves a rule threshold to the calibration."""
    unset = [f"risk.{c}.inactive_for" for c in ("yellow", "red") if not config.risk.explicit(c)]
    if not unset:
        return None
    return (
        f"note: {' and '.join(unset)} not set: calibrated from the store's gaps between purchases by "
        "`lifecycle risk train` and the daemon (14d and 30d until then)"
    )


def apply_stored(config: Config, engine: Engine) -> None:
    """Give `config` the latest stored calibration (nothing when none is stored or the config sets both)."""
    if config.risk.explicit("yellow") and config.risk.explicit("red"):
        return
    query = (
        select(col(RiskModel.yellow_seconds), col(RiskModel.red_seconds))
        .where(col(RiskModel.yellow_seconds).is_not(None))
        .order_by(col(RiskModel.version).desc())
        .limit(1)
    )
    with engine.connect() as connection:
        row = connection.execute(query).first()
    if row is not None:
        yellow, red = row
        stored = {"yellow": timedelta(seconds=yellow or 0), "red": timedelta(seconds=red or 0)}
        config.risk.calibrate(in_force(config, stored))
