"""What the studio's campaign list shows: each campaign's kind, trigger, topic and priority, how
many customers its audience holds now, its last 30 days (entered, sent, skipped by reason,
converted), and every problem of its files with `file:line`. A broken campaign or template is
listed with its problems rather than hiding the others (`check_campaigns` keeps the good ones).

Audience sizes are one pass over the customer table: a conditional count per campaign, each
campaign's audience compiled to SQL by the same compiler the scheduler uses
(engine/campaigns/conditions.py), so the numbers are the customers who meet the audience
conditions now (consent and the send-time rules are the tick's to check). They and the 30-day
figures are counted on a thread of their own (`Counts`), since on a large store they take seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from engine.campaigns.conditions import ConditionCompiler
from engine.campaigns.language import Campaign, check_campaigns
from engine.config.settings import Config
from engine.errors import Problem, display_path
from engine.insights.report import Scope, campaign_figures, report_connection
from engine.mail.validation import check_templates
from engine.store.tables import Customer
from engine.web.studio import words

RECENT = timedelta(days=30)


@dataclass
class Row:
    name: str
    source: str
    campaign: Campaign | None  # None: the file does not parse into a campaign
    problems: list[Problem] = field(default_factory=list)
    audience: int | None = None
    figures: dict[str, Any] | None = None

    @property
    def trigger(self) -> str:
        return words.trigger(self.campaign.trigger) if self.campaign else ""


@dataclass
class Overview:
    rows: list[Row]
    other_problems: list[Problem]  # problems of no one campaign's files (config, a shared layout)
    counted_at: datetime | None  # when the audiences and figures shown were counted
    count_error: str = ""

    def problem_count(self) -> int:
        return sum(len(r.problems) for r in self.rows) + len(self.other_problems)


def fingerprint(config: Config, template_contents: bool = True) -> tuple[Any, ...]:
    """Every campaign and template file with its size and modification time: when this is the
    same, so are the problems found in them. Campaigns are checked against the templates' names
    only, so for them a template's edit changes nothing (`template_contents=False`)."""
    files: list[tuple[Any, ...]] = []
    for folder, contents in ((config.campaigns_path, True), (config.templates_path, template_contents)):
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    stat = path.stat()
                    files.append((str(path), stat.st_mtime_ns, stat.st_size) if contents else (str(path),))
    return tuple(files)


class Checks:
    """`lifecycle validate`'s checks of campaigns and templates, run again only when a file
    changed. The campaigns alone (what a preview needs) are kept apart from the templates' checks,
    which render every step in every locale and take longer than the rest of a page."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: dict[str, tuple[tuple[Any, ...], tuple[list[Campaign], list[Problem]]]] = {}

    def campaigns(self, config: Config) -> tuple[list[Campaign], list[Problem]]:
        return self._cached("campaigns", config, lambda: check_campaigns(config), template_contents=False)

    def __call__(self, config: Config) -> tuple[list[Campaign], list[Problem]]:
        def everything() -> tuple[list[Campaign], list[Problem]]:
            campaigns, problems = self.campaigns(config)
            return campaigns, problems + check_templates(config, campaigns)

        return self._cached("everything", config, everything)

    def _cached(
        self,
        what: str,
        config: Config,
        work: Callable[[], tuple[list[Campaign], list[Problem]]],
        template_contents: bool = True,
    ) -> tuple[list[Campaign], list[Problem]]:
        key = (id(config), fingerprint(config, template_contents))
        with self._lock:
            found = self._found.get(what)
        if found is not None and found[0] == key:
            return found[1]
        result = work()
        with self._lock:
            self._found[what] = (key, result)
        return result


@dataclass
class Counted:
    sizes: dict[str, int]
    figures: dict[str, dict[str, Any]]
    at: datetime


class Counts:
    """Audience sizes and 30-day figures, counted on a thread of their own. On a large store they
    take seconds (each audience is subqueries over the events of a million customers), so the list
    answers with the latest count and its time, waiting for a new one `wait` seconds at most, and
    counts again when it is `fresh_for` seconds old or a campaign's audience or goal changed. What
    is still being counted shows as such, and the page fetches itself again until it is there."""

    def __init__(self, wait: float = 0.7, fresh_for: float = 60.0) -> None:
        self.wait, self.fresh_for = wait, fresh_for
        self._lock = threading.Lock()
        self._counted: tuple[dict[str, str], float, Counted] | None = None
        self._counting: threading.Thread | None = None
        self.error = ""

    def __call__(self, config: Config, engine: Engine, campaigns: list[Campaign], now: datetime) -> Counted | None:
        wanted = {c.name: c.model_dump_json(include={"audience", "goal", "topic", "type"}) for c in campaigns}
        with self._lock:
            counted = self._counted
            stale = counted is None or counted[0] != wanted or time.monotonic() - counted[1] > self.fresh_for
            if stale and (self._counting is None or not self._counting.is_alive()):
                self._counting = threading.Thread(
                    target=self._count, args=(wanted, config, engine, campaigns, now), daemon=True
                )
                self._counting.start()
            counting = self._counting
        if stale and counting is not None:
            counting.join(self.wait)
        with self._lock:
            counted = self._counted
        if counted is None:
            return None
        known = {name for name, definition in counted[0].items() if wanted.get(name) == definition}
        result = counted[2]
        return Counted(
            {n: v for n, v in result.sizes.items() if n in known},
            {n: v for n, v in result.figures.items() if n in known},
            result.at,
        )

    def _count(
        self, wanted: dict[str, str], config: Config, engine: Engine, campaigns: list[Campaign], now: datetime
    ) -> None:
        try:
            counted = Counted(
                audience_sizes(config, engine, campaigns, now), recent_figures(engine, campaigns, now), now
            )
        except SQLAlchemyError as exc:
            self.error = f"the store could not be read: {exc.__class__.__name__}"
            return
        self.error = ""
        with self._lock:
            self._counted = (wanted, time.monotonic(), counted)


def overview(config: Config, engine: Engine, checks: Checks, counts: Counts, now: datetime) -> Overview:
    campaigns, problems = checks(config)
    rows = {c.source: Row(c.name, c.source, c) for c in campaigns}
    for path in sorted(config.campaigns_path.glob("*.y*ml")) if config.campaigns_path.is_dir() else []:
        shown = display_path(path, config.root)
        rows.setdefault(shown, Row(path.stem, shown, None))
    other: list[Problem] = []
    for problem in problems:
        owner = rows.get(problem.file) or _user_of(problem.file, rows.values())
        (owner.problems if owner else other).append(problem)
    valid = [r.campaign for r in rows.values() if r.campaign is not None]
    counted = counts(config, engine, valid, now)
    for row in rows.values():
        if row.campaign and counted:
            row.audience = counted.sizes.get(row.name)
            row.figures = counted.figures.get(row.name)
    ordered = sorted(
        rows.values(), key=lambda r: (r.campaign is None, -(r.campaign.priority if r.campaign else 0), r.name)
    )
    return Overview(ordered, other, counted.at if counted else None, counts.error)


def _user_of(file: str, rows: Iterable[Row]) -> Row | None:
    """The campaign whose step uses the template file, so that its problem shows on its row."""
    stem = Path(file).name.split(".")[0]
    for row in rows:
        if row.campaign and any(v.template == stem for s in row.campaign.steps for v in s.choices()):
            return row
    return None


def audience_sizes(config: Config, engine: Engine, campaigns: list[Campaign], now: datetime) -> dict[str, int]:
    """Customers in each campaign's audience now, counted in one pass over the customer table."""
    if not campaigns:
        return {}
    compiler = ConditionCompiler(config, now)
    counts = [
        func.count(case((compiler.all_of(c.audience), 1))).label(f"c{i}") if c.audience else func.count()
        for i, c in enumerate(campaigns)
    ]
    with engine.connect() as connection:
        row = connection.execute(select(*counts).select_from(Customer)).one()
    return {c.name: int(n) for c, n in zip(campaigns, row, strict=True)}


def recent_figures(engine: Engine, campaigns: list[Campaign], now: datetime) -> dict[str, dict[str, Any]]:
    """Each campaign's figures for the entries of the last 30 days, from the report's queries."""
    scope = Scope(now, since=now - RECENT)
    with report_connection(engine) as connection:
        return campaign_figures(connection, scope, {c.name: c for c in campaigns}, lambda n: None)


def campaign_named(config: Config, checks: Checks, name: str) -> tuple[Campaign | None, list[Problem]]:
    """One campaign by name, with the problems of its files; None when no valid campaign has it."""
    campaigns, problems = checks(config)
    campaign = next((c for c in campaigns if c.name == name), None)
    if campaign is None:
        return None, [p for p in problems if Path(p.file).stem == name]
    templates = {v.template for s in campaign.steps for v in s.choices()}
    mine = [p for p in problems if p.file == campaign.source or Path(p.file).name.split(".")[0] in templates]
    return campaign, mine
