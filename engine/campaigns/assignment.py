"""Which holdout and which A/B variant a customer gets: a stable share of a hash, the same on
every machine and every evaluation."""

from __future__ import annotations

import hashlib

from engine.campaigns.language import Campaign


def share(*parts: object) -> float:
    """A stable number in [0, 1) for a customer: the same holdout and variant on every machine."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_holdout(campaign: Campaign, external_id: str) -> bool:
    """Whether the customer is in the campaign's holdout: the same on every machine and every entry."""
    return share(campaign.name, "holdout", external_id) * 100 < campaign.holdout


def pick_variant(campaign: Campaign, step: int, external_id: str) -> str | None:
    """A weighted pick that is the same for a customer every time (A/B tests stay consistent)."""
    content = campaign.steps[step - 1]
    if content.variants is None:
        return None
    choices = content.choices()
    point = share(campaign.name, "variant", step, external_id) * sum(v.weight for v in choices)
    for variant in choices:
        point -= variant.weight
        if point < 0:
            return variant.name
    return choices[-1].name
