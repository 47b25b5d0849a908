"""`preview` and `send-test`: one step rendered for one customer, outside the ledger.

Each says what it could not do as asked (a locale without its own file, a customer who never had the trigger
event) in notes for the command line to print. A test send never carries a real customer's live links: its
links are signed for a customer number the store never gives, so clicking "unsubscribe" in a test changes
nobody's choices."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine
from sqlmodel import col

from engine.campaigns.assignment import pick_variant
from engine.campaigns.language import Campaign
from engine.clock import utcnow
from engine.config.settings import Config
from engine.customers.demo_data import sample_customers
from engine.customers.importing import CORE as IMPORT_FIELDS
from engine.errors import NotFound
from engine.mail.compose import CUSTOMER_COLUMNS, compose
from engine.mail.links import Links
from engine.mail.message import OutgoingEmail
from engine.mail.rendering import Renderer
from engine.mail.samples import build_samples
from engine.mail.validation import sample_event
from engine.store.tables import Customer, Event

if TYPE_CHECKING:  # mail comes before senders: a sender is only handed in
    from engine.senders import Sender, SendResult

# Not a send of the ledger (whose ids start at 1), nor a customer of the store: previews and test sends.
PREVIEW_SEND_ID = 0
SAMPLE_CUSTOMER_ID = 0
SAMPLE_EMAIL = "sample@example.invalid"  # RFC 2606: a domain that can never receive mail
SOME_IDS = 5  # customer ids listed when the one asked for does not exist


@dataclass
class Preview:
    email: OutgoingEmail
    notes: list[str] = field(default_factory=list)  # what was rendered otherwise than asked, one line each


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
    dead_links: bool = False,
    variant: str | None = None,
) -> Preview:
    """One step for a stored customer, or for the sample customer when `customer_id` is None; with
    `dead_links`, its links are the sample customer's whoever it is rendered for. An A/B step shows
    `variant` when named, else the one the customer would get."""
    campaign = find_campaign(campaigns, name, step)
    now = utcnow()
    notes: list[str] = []
    event: Mapping[str, Any] | None
    if customer_id is None:
        customer = sample_customer(config, locale or config.default_locale, now)
        event = sample_event(campaign, config)
    else:
        with engine.connect() as connection:
            customer = _stored_customer(connection, customer_id)
            event = _latest_event(connection, campaign, customer["customer_id"])
        if campaign.trigger.event is not None and event is None:
            notes.append(f"customer '{customer_id}' never had a '{campaign.trigger.event}' event: sample event data")
            event = sample_event(campaign, config)
        if dead_links:
            customer["customer_id"] = SAMPLE_CUSTOMER_ID
    names = [v.name for v in campaign.steps[step - 1].choices()]
    if variant is not None and variant not in names:
        raise NotFound(f"step {step} of '{name}' has no variant '{variant}' (variants: {', '.join(map(str, names))})")
    variant = variant if variant is not None else pick_variant(campaign, step, customer["external_id"])
    notes += locale_notes(config, campaign, step, variant, customer, locale)
    email = compose(
        config,
        Renderer(config),
        Links(config),
        campaign,
        step,
        variant,
        customer,
        event,
        send_id=PREVIEW_SEND_ID,
        now=now,
        to=to,
        locale=locale,
    )
    return Preview(email, notes)


def _stored_customer(connection: Connection, customer_id: str) -> dict[str, Any]:
    row = connection.execute(select(*CUSTOMER_COLUMNS).where(col(Customer.external_id) == customer_id)).first()
    if row is not None:
        return row._asdict()
    some = connection.scalars(select(col(Customer.external_id)).order_by(col(Customer.id)).limit(SOME_IDS)).all()
    listed = f"; some ids: {', '.join(some)}" if some else "; the store has no customers yet"
    raise NotFound(f"no customer '{customer_id}'{listed}")


def _latest_event(connection: Connection, campaign: Campaign, customer_id: int) -> Mapping[str, Any] | None:
    """An event trigger's template sees the customer's latest such event, as it would on a send."""
    if campaign.trigger.event is None:
        return None
    row = connection.execute(
        select(col(Event.name), col(Event.at), col(Event.properties))
        .where(col(Event.customer_id) == customer_id, col(Event.name) == campaign.trigger.event)
        .order_by(col(Event.at).desc())
        .limit(1)
    ).first()
    return row._asdict() if row else None


def locale_notes(
    config: Config,
    campaign: Campaign,
    step: int,
    variant: str | None,
    customer: Mapping[str, Any],
    asked: str | None,
) -> list[str]:
    """Where the email will not be in the language asked for (or the customer's): the locale is not
    configured, or the template or subject has no text of its own in it."""
    wanted = asked or customer["locale"] or config.default_locale
    if wanted not in config.locales:
        return [f"locale '{wanted}' is not one of locales ({', '.join(config.locales)}): {config.default_locale}"]
    if wanted == config.default_locale:
        return []
    choices = campaign.steps[step - 1].choices()
    content = next((v for v in choices if v.name == variant), choices[0])
    notes = []
    if not (config.templates_path / f"{content.template}.{wanted}.mjml").is_file():
        notes.append(f"no {content.template}.{wanted}.mjml: {content.template}.mjml ({config.default_locale})")
    if isinstance(content.subject, dict) and wanted not in content.subject:
        notes.append(f"the subject has no '{wanted}' text: the '{config.default_locale}' one")
    return notes


def sample_customer(config: Config, locale: str, now: datetime) -> dict[str, Any]:
    """A customer who is clearly nobody: "Sample Customer" at an address that cannot receive mail, with the
    attributes of the demo store's fullest customer in that locale, each of the type config.yaml declares
    for it and every declared one present (what `validate` renders with)."""
    people = sample_customers(now, count=40)
    fullest = max((p for p in people if p["locale"] == locale), default=people[0], key=len)
    attributes = {k: v for k, v in fullest.items() if k not in IMPORT_FIELDS}
    if config.data_model.declared:
        typed = build_samples(config, now).customer(locale)
        attributes = {name: typed[name] for name in config.data_model.attributes if name in typed}
    return {
        "customer_id": SAMPLE_CUSTOMER_ID,
        "external_id": "sample",
        "email": SAMPLE_EMAIL,
        "first_name": "Sample",
        "last_name": "Customer",
        "locale": locale if locale in config.locales else config.default_locale,
        "timezone": config.timezone,
        "created_at": now,
        "confirmed_at": now,
        "unsubscribed_at": None,
        "frequency": None,
        "attributes": attributes,
    }


def send_test(
    config: Config,
    campaigns: list[Campaign],
    engine: Engine,
    sender: Sender,
    name: str,
    to: str,
    customer_id: str | None,
    step: int = 1,
) -> tuple[SendResult, list[str]]:
    """One step sent to `to`: for a stored customer's data when named, else for the sample customer. Either
    way its links are the sample customer's (see the module's docstring)."""
    preview = render_preview(config, campaigns, engine, name, customer_id, step, to=to, dead_links=True)
    (result,) = sender.send_batch([preview.email])
    return result, preview.notes
