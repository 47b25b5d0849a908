"""One email as the studio previews it: any step, variant, locale and customer (a stored one, or
the sample customer built from the declared data model), rendered by the same code that sends
(engine/mail/previews.py), with everything a marketer checks before it goes: subject, preheader,
the text part, the headers, and every link, the service's own links resolved in-process against
the service's routes and their signatures checked."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from html.parser import HTMLParser
from urllib.parse import urlsplit

from sqlalchemy.engine import Engine
from starlette.routing import BaseRoute, Match

from engine.campaigns.language import Campaign
from engine.config.settings import Config
from engine.errors import LifecycleError, Problem, ProblemsError
from engine.mail.links import PURPOSES, SEND_PURPOSES, Links
from engine.mail.message import OutgoingEmail
from engine.mail.previews import render_preview
from engine.mail.rendering import is_rtl

PREHEADER = re.compile(r'<div style="display:none;font-size:1px;[^"]*">(.*?)</div>', re.S)
# Headers a marketer reads, in the order a mail client shows them; the rest follow.
FIRST_HEADERS = ("From", "To", "Reply-To", "Subject", "Date", "List-Unsubscribe", "List-Unsubscribe-Post")


@dataclass
class Link:
    text: str
    url: str
    checked: bool | None = None  # None: a link to elsewhere, not the service's to check
    note: str = ""


@dataclass
class Shown:
    """A rendered preview, or why there is none."""

    email: OutgoingEmail | None
    notes: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    error: str = ""
    links: list[Link] = field(default_factory=list)
    locale: str = ""

    @property
    def direction(self) -> str:
        return "rtl" if is_rtl(self.locale) else "ltr"

    @property
    def preheader(self) -> str:
        found = PREHEADER.search(self.email.html) if self.email else None
        return html.unescape(re.sub(r"<[^>]+>", "", found.group(1))).strip() if found else ""

    def headers(self) -> list[tuple[str, str]]:
        """The message's own headers, as the bytes a sender hands over carry them (decoded)."""
        if self.email is None:
            return []
        parsed = message_from_bytes(self.email.raw, policy=policy.default)
        found = [(name, str(value)) for name, value in parsed.items()]
        order = {name.lower(): i for i, name in enumerate(FIRST_HEADERS)}
        return sorted(found, key=lambda h: order.get(h[0].lower(), len(order)))


def show(
    config: Config,
    campaigns: list[Campaign],
    engine: Engine,
    routes: list[BaseRoute],
    name: str,
    step: int,
    variant: str | None,
    locale: str | None,
    customer: str | None,
) -> Shown:
    """The preview, or the problem that stops it (a broken template: its `file:line`)."""
    try:
        preview = render_preview(config, campaigns, engine, name, customer, step, locale=locale, variant=variant)
    except ProblemsError as exc:
        return Shown(None, problems=exc.problems, locale=locale or config.default_locale)
    except LifecycleError as exc:
        return Shown(None, error=str(exc), locale=locale or config.default_locale)
    email = preview.email
    shown_locale = _lang(email.html) or locale or config.default_locale
    links = [check(Link(text, url), config, routes) for text, url in links_in(email.html)]
    unsubscribe = email.headers.get("List-Unsubscribe", "").strip("<>")
    if unsubscribe:
        links.append(check(Link("List-Unsubscribe header", unsubscribe), config, routes))
    return Shown(email, preview.notes, links=links, locale=shown_locale)


def _lang(page: str) -> str | None:
    found = re.search(r'<html[^>]*\blang="([^"]+)"', page)
    return found.group(1) if found else None


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href") or ""
            self._text = []
        elif tag == "img" and self._href is not None:
            self._text.append(f"[image: {dict(attrs).get('alt') or 'no alt text'}]")

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.found.append((" ".join("".join(self._text).split()), self._href))
            self._href = None


def links_in(page: str) -> list[tuple[str, str]]:
    """(text, URL) of every link of the HTML part, in order."""
    parser = _Anchors()
    parser.feed(page)
    return parser.found


def check(link: Link, config: Config, routes: list[BaseRoute]) -> Link:
    """A link into the service must reach one of its pages with a token the page will accept:
    matched against the service's routes in-process, and its signature checked with the keys the
    service verifies with. Links elsewhere are listed, not fetched."""
    base = config.public_url.rstrip("/")
    if not link.url.startswith(base + "/"):
        if not urlsplit(link.url).scheme:
            link.checked, link.note = False, "not an absolute URL: a mail client cannot open it"
        return link
    path = urlsplit(link.url).path
    scope = {"type": "http", "method": "GET", "path": path, "root_path": ""}
    route = next((r for r in routes if r.matches(scope)[0] == Match.FULL), None)
    if route is None:
        link.checked, link.note = False, f"no page of the service answers {path}"
        return link
    purpose, _, rest = path.strip("/").partition("/")
    token = rest.split("/")[0]
    links = Links(config)
    if purpose in PURPOSES:
        ok = links.read(purpose, token) is not None
    elif purpose in ("feedback", "alerts"):
        ok = links.read_send(SEND_PURPOSES[purpose == "alerts"], token) is not None
    else:
        ok = True
    link.checked = ok
    link.note = f"the {purpose} page, signed" if ok else f"the {purpose} page refuses this token"
    return link
