"""Synthetic purchase histories with a known structure for the churn model's tests: each customer
buys on a rhythm of their own (every 15 to 120 days, a little irregular), and some stop for good at
a random moment. Days since the last purchase mean different things for different rhythms, which is
what the model can learn and recency alone cannot."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

START = datetime(2025, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 6, 1, tzinfo=UTC)
RHYTHMS = (15, 30, 60, 120)


def history(customers: int, seed: int = 7, rhythms: tuple[int, ...] = RHYTHMS, stop_share: float = 0.5):
    """(customer records, event records) for `import customers` / `import events`."""
    rng = random.Random(seed)
    people, events = [], []
    span = (NOW - START).days
    for n in range(customers):
        cid = f"c{n:05d}"
        joined = START + timedelta(days=rng.uniform(0, span * 0.3))
        people.append({"id": cid, "email": f"{cid}@example.com", "created_at": joined.isoformat()})
        rhythm = rng.choice(rhythms)
        stops = (
            joined + timedelta(days=rng.uniform(0, span)) if rng.random() < stop_share else NOW + timedelta(days=999)
        )
        moment = joined + timedelta(days=rng.uniform(0, rhythm))
        while moment < min(stops, NOW + timedelta(days=1)):
            events.append({"customer": cid, "event": "purchase", "at": moment.isoformat(), "properties": {"total": 20}})
            moment += timedelta(days=rhythm * rng.uniform(0.7, 1.3))
    return people, events
