"""`lifecycle validate`: config, every campaign and every template, with every problem located."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from functools import lru_cache
from pathlib import Path
from typing import Any

from markupsafe import escape

from engine.campaigns.language import Campaign, load_campaigns
from engine.config.settings import Config, load_config
from engine.customers.demo_data import sample_customers, sample_events
from engine.errors import Problem, ProblemsError, TemplateError, display_path
from engine.mail.rendering import Renderer, Sample, template_context

PLACEHOLDER = Sample("sample")


class SampleRecord(dict[str, Any]):
    """A sample customer or event: known fields from the demo store, anything else a placeholder,
    so that validation checks the template itself rather than one customer's data."""

    def __missing__(self, key: str) -> Any:
        return PLACEHOLDER


def validate_all(config_file: str | Path | None) -> tuple[Config | None, list[Campaign], list[Problem]]:
    try:
        config = load_config(config_file)
    except ProblemsError as exc:
        return None, [], exc.problems
    problems: list[Problem] = []
    try:
        config.secret_keys()
    except ProblemsError as exc:
        problems += exc.problems
    try:
        campaigns = load_campaigns(config)
    except ProblemsError as exc:
        return config, [], problems + exc.problems
    problems += check_templates(config, campaigns)
    return config, campaigns, problems


def check_templates(config: Config, campaigns: list[Campaign]) -> list[Problem]:
    """Render every step of every campaign in every locale against sample data."""
    renderer = Renderer(config)
    customers, _ = _sample_store(datetime.now(UTC).date())
    links = {
        "preferences": f"{config.public_url}/preferences/TOKEN-P",
        "unsubscribe": f"{config.public_url}/unsubscribe/TOKEN-U",
        "confirm": f"{config.public_url}/confirm/TOKEN-C",
    }
    problems: dict[str, Problem] = {}
    for campaign in campaigns:
        event = sample_event(campaign)
        for locale in config.locales:
            customer = _sample_customer(customers, locale)
            for number, step in enumerate(campaign.steps, start=1):
                for content in step.choices():
                    context = template_context(config, campaign, number, customer, event, links)
                    context["locale"] = locale
                    try:
                        rendered = renderer.render(content.template, content.subject, context)
                    except TemplateError as exc:
                        for p in exc.problems:
                            problems.setdefault(str(p), _from_campaign(p, campaign))
                        continue
                    if campaign.marketing:
                        for p in _compliance(config, renderer, content.template, locale, rendered.html, links):
                            problems.setdefault(str(p), p)
    return list(problems.values())


def _compliance(
    config: Config, renderer: Renderer, template: str, locale: str, html: str, links: dict[str, str]
) -> list[Problem]:
    """What every marketing email must carry: a way out (unsubscribe or preferences) and the
    brand's postal address."""
    file = display_path(renderer.folder / (renderer.template_file(template, locale) or template), config.root)
    missing = []
    if not (links["unsubscribe"] in html or links["preferences"] in html):
        missing.append("links.unsubscribe or links.preferences link")
    if config.brand.address and str(escape(config.brand.address)) not in html:
        missing.append("brand.address (the postal address the footer must show)")
    return [Problem(file, 1, 1, f"marketing template '{template}' ({locale}) has no {what}") for what in missing]


def _from_campaign(problem: Problem, campaign: Campaign) -> Problem:
    """A subject is written in the campaign file: point there."""
    if problem.file.startswith("subject of"):
        return Problem(campaign.source, 1, 1, f"{problem.file}: {problem.message}")
    return problem


def _sample_customer(customers: list[dict[str, Any]], locale: str) -> SampleRecord:
    chosen = max(
        (c for c in customers if c.get("locale") == locale),
        default=customers[0],
        key=lambda c: len(c.get("attributes", c)),
    )
    record = SampleRecord({k: v for k, v in chosen.items() if k not in ("topics", "attributes")})
    record.update(chosen.get("attributes", {}))
    record["locale"] = locale
    return record


@lru_cache(maxsize=1)
def _sample_store(day: date) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The demo store's customers and events, made once a day rather than once per campaign."""
    now = datetime.combine(day, time(12), UTC)
    customers = sample_customers(now, count=40)
    return customers, sample_events(customers, now)


def sample_event(campaign: Campaign) -> SampleRecord | None:
    """The trigger event a template sees, from the demo store's events of that name."""
    name = campaign.trigger.event
    if name is None:
        return None
    now = datetime.now(UTC)
    _, events = _sample_store(now.date())
    sample: dict[str, Any] = next((e for e in events if e["event"] == name), {"at": now.isoformat()})
    return SampleRecord(name=name, at=sample["at"], properties=SampleRecord(sample.get("properties", {})))
