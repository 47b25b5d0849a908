"""Compose one email of one campaign step for one customer: the context, the render, the message.
The scheduler, `preview` and `send-test` all go through here, so what is previewed is what is sent."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import SQLColumnExpression
from sqlmodel import col

from engine.campaigns.language import Campaign
from engine.config.settings import Config
from engine.mail.links import LazyLinks, Links
from engine.mail.message import OutgoingEmail, build_email
from engine.mail.rendering import Renderer, template_context
from engine.store.tables import Customer

CUSTOMER_COLUMNS: tuple[SQLColumnExpression[Any], ...] = (
    col(Customer.id).label("customer_id"),
    col(Customer.external_id),
    col(Customer.email),
    col(Customer.first_name),
    col(Customer.last_name),
    col(Customer.locale),
    col(Customer.timezone),
    col(Customer.created_at),
    col(Customer.confirmed_at),
    col(Customer.unsubscribed_at),
    col(Customer.frequency),
    col(Customer.attributes),
)


def customer_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """What templates see as `customer`: attributes, then the core fields (which win)."""
    return {
        **(row["attributes"] or {}),
        "id": row["external_id"],
        "email": row["email"],
        "first_name": row["first_name"],
        "last_name": row["last_name"],
        "locale": row["locale"],
        "timezone": row["timezone"],
        "created_at": row["created_at"],
    }


def send_links(
    config: Config, links: Links, campaign: Campaign, customer: Mapping[str, Any], send_id: int
) -> LazyLinks:
    """Links bound to this send: the rating buttons' (`links.rate[score]`), and in an email to the
    team, "I'm on it" (`links.acknowledge`) and the customer's page in the studio (behind its login)."""
    customer_id = customer["customer_id"]
    if not campaign.recipient:
        return LazyLinks({"rate": lambda: links.rating(customer_id, send_id, config.feedback.scores())})
    page = f"{links.base}/studio/customers/{quote(customer['external_id'], safe='')}"
    return LazyLinks({"acknowledge": lambda: links.alert(customer_id, send_id), "customer": lambda: page})


def compose(
    config: Config,
    renderer: Renderer,
    links: Links,
    campaign: Campaign,
    step: int,
    variant: str | None,
    customer: Mapping[str, Any],
    event: Mapping[str, Any] | None,
    send_id: int,
    now: datetime,
    to: str | None = None,
    locale: str | None = None,
    team: Mapping[str, Any] | None = None,
) -> OutgoingEmail:
    """`team`: what an email to the team shows besides the event (customers.feedback.alert_context)."""
    # one set of links for the template and the headers: each is sealed once, when first read
    urls = links.for_customer(customer["customer_id"], campaign.topic) | send_links(
        config, links, campaign, customer, send_id
    )
    choices = campaign.steps[step - 1].choices()
    content = next((v for v in choices if v.name == variant), choices[0])
    context = template_context(config, campaign, step, customer_view(customer), event, urls)
    context.update(team or {})
    if locale:
        context["locale"] = locale
    rendered = renderer.render(content.template, content.subject, context)
    recipient = to or campaign.recipient or customer["email"]
    to_name = (
        None if (to or campaign.recipient) else " ".join(filter(None, [customer["first_name"], customer["last_name"]]))
    )
    return build_email(
        config,
        send_id=send_id,
        campaign=campaign.name,
        marketing=campaign.marketing,
        to=recipient,
        to_name=to_name,
        rendered=rendered,
        unsubscribe_url=urls["unsubscribe"],
        now=now,
    )
