"""Rendering: sandboxed Jinja (strict about undefined names, escaping customer data) into MJML,
MJML into HTML with mjml-python, and a plain-text part from NAME.txt or from the HTML."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import html2text
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal
from jinja2 import (FileSystemLoader, StrictUndefined, TemplateError as JinjaError,
                    TemplateNotFound, TemplateSyntaxError, pass_context)
from jinja2.sandbox import ImmutableSandboxedEnvironment
from mjml import mjml2html

from .campaigns import Campaign, Subject
from .config import Config
from .errors import Problem, TemplateError

RTL_LOCALES = {"ar", "he", "fa", "ur"}


@dataclass
class RenderedEmail:
    subject: str
    html: str
    text: str


def _locale(ctx) -> str:
    return ctx.get("locale") or "en"


def _as_datetime(value: Any) -> datetime | date:
    """Attributes hold dates as ISO text; a bare date stays a date."""
    if isinstance(value, str):
        text = value.strip()
        return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value


@pass_context
def _date_filter(ctx, value: Any, format: str = "long") -> str:
    value = _as_datetime(value)
    if isinstance(value, datetime):
        value = value.astimezone(ZoneInfo(ctx.get("timezone") or "UTC")) if value.tzinfo else value
        value = value.date()
    return format_date(value, format=format, locale=_locale(ctx))


@pass_context
def _datetime_filter(ctx, value: Any, format: str = "medium") -> str:
    value = _as_datetime(value)
    if not isinstance(value, datetime):
        value = datetime.combine(value, datetime.min.time())
    return format_datetime(value, format=format, tzinfo=ZoneInfo(ctx.get("timezone") or "UTC"),
                           locale=_locale(ctx))


@pass_context
def _number_filter(ctx, value: Any) -> str:
    return format_decimal(value, locale=_locale(ctx))


@pass_context
def _money_filter(ctx, value: Any, currency: str = "USD") -> str:
    return format_currency(value, currency, locale=_locale(ctx))


def _environment(folder: Path, autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(loader=FileSystemLoader(str(folder)), autoescape=autoescape,
                                        undefined=StrictUndefined, auto_reload=True)
    env.filters.update(date=_date_filter, datetime=_datetime_filter, number=_number_filter, money=_money_filter)
    return env


class Renderer:
    """Renders one step of one campaign for one customer. Templates are compiled once per process
    (Jinja's cache, refreshed when a file changes)."""

    def __init__(self, config: Config):
        self.config = config
        self.folder = config.templates_path
        self.markup = _environment(self.folder, autoescape=True)
        self.plain = _environment(self.folder, autoescape=False)
        self._text_maker = html2text.HTML2Text(bodywidth=0)
        self._text_maker.ignore_images = True
        self._text_maker.ignore_tables = True  # MJML lays out with tables; the text is what matters

    def template_file(self, name: str, locale: str, ext: str = "mjml") -> str | None:
        """NAME.<locale>.EXT, else NAME.EXT; None when neither exists."""
        for candidate in (f"{name}.{locale}.{ext}", f"{name}.{ext}"):
            if (self.folder / candidate).is_file():
                return candidate
        return None

    def subject_source(self, subject: Subject, locale: str) -> str:
        if isinstance(subject, str):
            return subject
        return subject.get(locale) or subject.get(self.config.default_locale) or next(iter(subject.values()))

    def render(self, template: str, subject: Subject, context: dict[str, Any]) -> RenderedEmail:
        """Raise TemplateError (located) on any problem, so a broken template never sends a blank."""
        locale = context.get("locale") or self.config.default_locale
        mjml_name = self.template_file(template, locale)
        if mjml_name is None:
            raise TemplateError([Problem(f"{self.folder}/{template}.mjml", 1, 1, f"template '{template}' does not exist")])
        html = self._html(mjml_name, context)
        subject_text = self._render_string(self.subject_source(subject, locale), context, f"subject of {template}")
        text_name = self.template_file(template, locale, "txt")
        text = (self._render_file(self.plain, text_name, context) if text_name
                else self._text_maker.handle(html).strip() + "\n")
        return RenderedEmail(subject=" ".join(subject_text.split()), html=html, text=text)

    def _html(self, name: str, context: dict[str, Any]) -> str:
        source = self._render_file(self.markup, name, context)
        try:
            return mjml2html(source, disable_comments=True)
        except Exception as exc:  # mrml reports its own error type
            raise TemplateError([Problem(self._path(name), 1, 1, f"MJML: {exc}")]) from None

    def _render_file(self, env, name: str, context: dict[str, Any]) -> str:
        try:
            return env.get_template(name).render(context)
        except TemplateSyntaxError as exc:
            raise TemplateError([Problem(self._path(exc.name or name), exc.lineno or 1, 1, exc.message or str(exc))]) from None
        except TemplateNotFound as exc:
            raise TemplateError([Problem(self._path(name), 1, 1, f"includes '{exc.name}', which does not exist")]) from None
        except JinjaError as exc:
            raise TemplateError([Problem(self._path(name), _line_of(exc, name), 1, str(exc))]) from None

    def _render_string(self, source: str, context: dict[str, Any], what: str) -> str:
        try:
            return _compiled_string(self.plain, source).render(context)
        except JinjaError as exc:
            raise TemplateError([Problem(what, getattr(exc, "lineno", 1) or 1, 1, str(exc))]) from None

    def _path(self, name: str) -> str:
        return str(self.folder / name)


@lru_cache(maxsize=512)
def _compiled_string(env, source: str):
    return env.from_string(source)


def _line_of(exc: Exception, name: str) -> int:
    """The template line of a render-time error, from the traceback Jinja rewrites."""
    tb, line = exc.__traceback__, 1
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(name):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def template_context(config: Config, campaign: Campaign, step: int, customer: dict[str, Any],
                     event: dict[str, Any] | None, links: dict[str, str]) -> dict[str, Any]:
    """What every template sees (campaigns.md, "Steps and templates")."""
    locale = customer.get("locale") if customer.get("locale") in config.locales else config.default_locale
    return {
        "customer": customer,
        "event": event,
        "campaign": {"name": campaign.name, "description": campaign.description, "type": campaign.type,
                     "topic": campaign.topic},
        "step": {"number": step, "of": len(campaign.steps)},
        "brand": config.brand.model_dump(),
        "links": links,
        "locale": locale,
        "direction": "rtl" if locale.split("-")[0] in RTL_LOCALES else "ltr",
        "timezone": customer.get("timezone") or config.timezone,
    }
