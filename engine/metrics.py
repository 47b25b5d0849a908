"""Prometheus metrics of the engine, on the default registry: the daemon and the web service
expose them (`/metrics`); the core only counts."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

TICKS = Counter("lifecycle_ticks_total", "Ticks run", ["outcome"])
SENDS = Counter("lifecycle_sends_total", "Sends by the status they reached", ["campaign", "status"])
ENTRIES = Counter("lifecycle_entries_total", "Campaign entries created", ["campaign"])
TICK_SECONDS = Histogram(
    "lifecycle_tick_duration_seconds",
    "Duration of a whole tick",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
SENDER_SECONDS = Histogram(
    "lifecycle_sender_latency_seconds",
    "Duration of one sender batch call",
    ["backend"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CAMPAIGN_PAUSED = Gauge(
    "lifecycle_campaign_paused",
    "1 while a campaign's sending is paused (by the deliverability guard or an operator), else 0",
    ["campaign"],
)


def show_paused(paused: Mapping[str, bool]) -> None:
    """Whether each campaign named is paused, as the store says now."""
    for campaign, held in paused.items():
        CAMPAIGN_PAUSED.labels(campaign).set(1 if held else 0)
