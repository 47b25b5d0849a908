"""`preview` and `send-test`: one step rendered for one customer, outside the ledger."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine
from sqlmodel import col

from engine.campaigns.assignment import pick_variant
from engine.campaigns.language import Campaign
from engine.clock import utcnow
from engine.config.settings import Config
from engine.errors import NotFound
from engine.mail.compose import CUSTOMER_COLUMNS, compose
from engine.mail.links import Links
from engine.mail.message import OutgoingEmail
from engine.mail.rendering import Renderer
from engine.mail.validation import sample_event
from engine.store.tables import Customer, Event

if TYPE_CHECKING:  # mail comes before senders: a sender is only handed in
    from engine.senders import Sender, SendResult

PREVIEW_SEND_ID = 0


def find_campaign(campaigns: list[Campaign], name: str, step: int) -> Campaign:
    campaign = next((c for c in campaigns if c.name == name), None)
    if campaign is None:
        raise NotFound(f"no campaign named '{name}' (campaigns: {', '.join(c.name for c in campaigns)})")
    if not 1 <= step <= len(campaign.steps):
        raise NotFound(f"campaign '{name}' has steps 1 to {len(campaign.steps)}, not {step}")
    return campaign


def render_preview(
    config: Config,
    campaigns: list[Campaign],
    engine: Engine,
    name: str,
    customer_id: str | None,
    step: int = 1,
    locale: str | None = None,
    to: str | None = None,
) -> OutgoingEmail:
    campaign = find_campaign(campaigns, name, step)
    with engine.connect() as connection:
        query = select(*CUSTOMER_COLUMNS)
        query = (
            query.where(col(Customer.external_id) == customer_id) if customer_id else query.order_by(col(Customer.id))
        )
        row = connection.execute(query.limit(1)).first()
        if row is None:
            raise NotFound(f"no customer with id '{customer_id}'" if customer_id else "the store has no customers yet")
        customer = row._asdict()
        event = _latest_event(connection, config, campaign, customer["customer_id"])
    return compose(
        config,
        Renderer(config),
        Links(config),
        campaign,
        step,
        pick_variant(campaign, step, customer["external_id"]),
        customer,
        event,
        send_id=PREVIEW_SEND_ID,
        now=utcnow(),
        to=to,
        locale=locale,
    )


def _latest_event(
    connection: Connection, config: Config, campaign: Campaign, customer_id: int
) -> Mapping[str, Any] | None:
    """An event trigger's template sees the customer's latest such event, as it would on a send;
    a customer who never had one sees the sample event `validate` uses."""
    if campaign.trigger.event is None:
        return None
    row = connection.execute(
        select(col(Event.name), col(Event.at), col(Event.properties))
        .where(col(Event.customer_id) == customer_id, col(Event.name) == campaign.trigger.event)
        .order_by(col(Event.at).desc())
        .limit(1)
    ).first()
    return row._asdict() if row else sample_event(campaign, config)


def send_test(
    config: Config,
    campaigns: list[Campaign],
    engine: Engine,
    sender: Sender,
    name: str,
    to: str,
    customer_id: str | None,
    step: int = 1,
) -> SendResult:
    email = render_preview(config, campaigns, engine, name, customer_id, step, to=to)
    (result,) = sender.send_batch([email])
    return result
