"""What the studio's campaign list shows: each campaign's kind, trigger, topic and priority, how
many customers its audience holds now, its last 30 days (entered, sent, skipped by reason,
converted), and every problem of its files with `file:line`. A broken campaign or template is
listed with its problems rather than hiding the others (`check_campaigns` keeps the good ones).

Audience sizes are one pass over the customer table: a conditional count per campaign, each
campaign's audience compiled to SQL by the same compiler the scheduler uses
(engine/campaigns/conditions.py), so the numbers are the customers who meet the audience
conditions now (consent and the send-time rules are the tick's to check). They and the 30-day
figures are counted on a thread of their own (`Counts`), since on a large store they take seconds;
until then each audience shows as estimated from a random sample, with its 95% interval."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql import ColumnElement
from sqlmodel import col
from statsmodels.stats.proportion import proportion_confint

from engine.campaigns.conditions import ConditionCompiler
from engine.campaigns.language import Campaign, check_campaigns
from engine.config.settings import Config
from engine.errors import Problem, display_path
from engine.insights.report import Scope, campaign_figures, report_connection
from engine.mail.validation import check_templates
from engine.store.tables import Customer
from engine.web.studio import words

RECENT = timedelta(days=30)
SAMPLE = 5_000  # customers an estimate counts: its 95% interval is within about ±1.4% of the customers
MOST_DRAWN = 25_000  # ids drawn at most for a sample, where ids have gaps
CONFIDENCE = 0.95


@dataclass
class Row:
    name: str
    source: str
    campaign: Campaign | None  # None: the file does not parse into a campaign
    problems: list[Problem] = field(default_factory=list)
    audience: Size | None = None
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
    checking: bool = False  # the templates' checks are not done: only the campaigns' problems are shown

    def estimated(self) -> bool:
        return any(r.audience is not None and r.audience.estimated for r in self.rows)

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
        self._checking: threading.Thread | None = None
        self._working = {what: threading.Lock() for what in ("campaigns", "everything")}

    def campaigns(self, config: Config) -> tuple[list[Campaign], list[Problem]]:
        return self._cached("campaigns", config, lambda: check_campaigns(config), template_contents=False)

    def __call__(self, config: Config) -> tuple[list[Campaign], list[Problem]]:
        def everything() -> tuple[list[Campaign], list[Problem]]:
            campaigns, problems = self.campaigns(config)
            return campaigns, problems + check_templates(config, campaigns)

        return self._cached("everything", config, everything)

    def soon(self, config: Config, wait: float) -> tuple[list[Campaign], list[Problem]] | None:
        """Everything's checks if they are done within `wait` seconds, else None: they go on on a
        thread of their own (the first check of a process compiles every template and takes a
        second), and a later call finds them done."""
        key = (id(config), fingerprint(config))
        with self._lock:
            found = self._found.get("everything")
            if found is not None and found[0] == key:
                return found[1]
            if self._checking is None or not self._checking.is_alive():
                self._checking = threading.Thread(target=self, args=(config,), daemon=True)
                self._checking.start()
            checking = self._checking
        checking.join(wait)
        with self._lock:
            found = self._found.get("everything")
        if found is not None and found[0] == key:
            return found[1]
        # ended without them (it failed, or checked files that have changed since): here, then
        return None if checking.is_alive() else self(config)

    def _cached(
        self,
        what: str,
        config: Config,
        work: Callable[[], tuple[list[Campaign], list[Problem]]],
        template_contents: bool = True,
    ) -> tuple[list[Campaign], list[Problem]]:
        key = (id(config), fingerprint(config, template_contents))
        with self._working[what]:  # a second caller waits for the first's result instead of checking again
            with self._lock:
                found = self._found.get(what)
            if found is not None and found[0] == key:
                return found[1]
            result = work()
            with self._lock:
                self._found[what] = (key, result)
            return result


@dataclass(frozen=True)
class Size:
    """How many customers a campaign's audience holds: exact, or estimated from a random sample of
    `sample` customers with the 95% interval from `low` to `high` (the page says which)."""

    count: int
    low: int = 0
    high: int = 0
    sample: int = 0  # 0: counted exactly

    @property
    def estimated(self) -> bool:
        return self.sample > 0


@dataclass
class Counted:
    sizes: dict[str, Size]
    figures: dict[str, dict[str, Any]]
    at: datetime | None


class Counts:
    """Audience sizes and 30-day figures, counted on a thread of their own. On a large store the
    exact counts take seconds (each audience is subqueries over the events of a million customers),
    so that thread first estimates each audience from a random sample of customers (a fraction of a
    second, shown with its 95% interval), then counts the 30-day figures, then every audience
    exactly. The list answers with what is there, waiting `wait` seconds at most, and counts again
    when the last count is `fresh_for` seconds old or a campaign's audience or goal changed; until
    then an older exact count of a campaign is kept rather than replaced by an estimate. What is
    still being counted shows as such, and the page fetches itself again until it is there."""

    def __init__(self, wait: float = 0.7, fresh_for: float = 60.0, sample: int | None = None) -> None:
        self.wait, self.fresh_for = wait, fresh_for
        self.sample = SAMPLE if sample is None else sample
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # told of every count kept, and of the end
        self._sizes: dict[str, tuple[str, Size]] = {}  # campaign: (its definition, its size)
        self._figures: dict[str, tuple[str, dict[str, Any]]] = {}
        self._at: datetime | None = None
        self._done: tuple[dict[str, str], float] | None = None  # what the last full count counted, and when
        self._counting: threading.Thread | None = None
        self.error = ""

    def begin(self, config: Config, engine: Engine, campaigns: list[Campaign], now: datetime) -> None:
        """Start counting, unless the last count is fresh or a count is under way."""
        wanted = _definitions(campaigns)
        with self._lock:
            if self._stale(wanted) and (self._counting is None or not self._counting.is_alive()):
                self._counting = threading.Thread(
                    target=self._count, args=(wanted, config, engine, campaigns, now), daemon=True
                )
                self._counting.start()

    def __call__(
        self, config: Config, engine: Engine, campaigns: list[Campaign], now: datetime, wait: float | None = None
    ) -> Counted | None:
        """What is counted for the campaigns as defined now, once every one has a size (an estimate
        will do), the counting has ended, or `wait` seconds (`self.wait`) have passed."""
        self.begin(config, engine, campaigns, now)
        wanted = _definitions(campaigns)
        deadline = time.monotonic() + (self.wait if wait is None else wait)
        with self._changed:
            while self._stale(wanted) and self._counting is not None and self._counting.is_alive():
                left = deadline - time.monotonic()
                if len(_current(self._sizes, wanted)) == len(wanted) or left <= 0:
                    break
                self._changed.wait(left)
            if self._at is None:
                return None
            return Counted(_current(self._sizes, wanted), _current(self._figures, wanted), self._at)

    def _stale(self, wanted: dict[str, str]) -> bool:
        return self._done is None or self._done[0] != wanted or time.monotonic() - self._done[1] > self.fresh_for

    def _count(
        self, wanted: dict[str, str], config: Config, engine: Engine, campaigns: list[Campaign], now: datetime
    ) -> None:
        try:
            with self._lock:
                unknown = [c for c in campaigns if c.name not in _current(self._sizes, wanted)]
            if unknown and self.sample:
                self._keep(wanted, now, sizes=audience_estimates(config, engine, unknown, now, self.sample))
            self._keep(wanted, now, figures=recent_figures(engine, campaigns, now))
            exact = audience_sizes(config, engine, campaigns, now)
            self._keep(wanted, now, sizes={name: Size(n) for name, n in exact.items()})
        except SQLAlchemyError as exc:
            self.error = f"the store could not be read: {exc.__class__.__name__}"
        else:
            self.error = ""
            with self._lock:
                self._done = (wanted, time.monotonic())
        finally:
            with self._changed:
                self._changed.notify_all()

    def _keep(
        self,
        wanted: dict[str, str],
        now: datetime,
        sizes: dict[str, Size] | None = None,
        figures: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        with self._lock:
            self._sizes.update({name: (wanted[name], size) for name, size in (sizes or {}).items()})
            self._figures.update({name: (wanted[name], f) for name, f in (figures or {}).items() if name in wanted})
            self._at = now
            self._changed.notify_all()


def _definitions(campaigns: list[Campaign]) -> dict[str, str]:
    """What a campaign's counts depend on, by campaign."""
    return {c.name: c.model_dump_json(include={"audience", "goal", "topic", "type"}) for c in campaigns}


def _current(found: dict[str, tuple[str, Any]], wanted: dict[str, str]) -> dict[str, Any]:
    """What was counted for each campaign as it is defined now (a changed audience is counted anew)."""
    return {name: value for name, (definition, value) in found.items() if wanted.get(name) == definition}


def overview(config: Config, engine: Engine, checks: Checks, counts: Counts, now: datetime) -> Overview:
    """The campaign list. The campaigns alone are enough to count, so the counts begin first, and
    the templates' checks after them (both at once would slow the sizes): the list waits for the two
    `counts.wait` seconds at most, and what is not there by then shows as being counted or checked."""
    started = time.monotonic()
    campaigns, problems = checks.campaigns(config)
    counted = counts(config, engine, campaigns, now)
    checked = checks.soon(config, max(0.0, started + counts.wait - time.monotonic()))
    if checked is not None:
        campaigns, problems = checked
    rows = {c.source: Row(c.name, c.source, c) for c in campaigns}
    for path in sorted(config.campaigns_path.glob("*.y*ml")) if config.campaigns_path.is_dir() else []:
        shown = display_path(path, config.root)
        rows.setdefault(shown, Row(path.stem, shown, None))
    other: list[Problem] = []
    for problem in problems:
        owner = rows.get(problem.file) or _user_of(problem.file, rows.values())
        (owner.problems if owner else other).append(problem)
    for row in rows.values():
        if row.campaign and counted:
            row.audience = counted.sizes.get(row.name)
            row.figures = counted.figures.get(row.name)
    ordered = sorted(
        rows.values(), key=lambda r: (r.campaign is None, -(r.campaign.priority if r.campaign else 0), r.name)
    )
    return Overview(ordered, other, counted.at if counted else None, counts.error, checking=checked is None)


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
    with engine.connect() as connection:
        _, counts = _audience_counts(connection, config, campaigns, now)
    return {c.name: n for c, n in zip(campaigns, counts, strict=True)}


def audience_estimates(
    config: Config, engine: Engine, campaigns: list[Campaign], now: datetime, sample: int = SAMPLE
) -> dict[str, Size]:
    """Each campaign's audience estimated from `sample` customers drawn at random: the share of them
    in the audience times the customers in the store, with the 95% Wilson score interval of that
    share (statsmodels). Ids are drawn at random between the lowest and the highest, and those that
    are a customer are the sample, so every customer is as likely to be in it. A store of no more
    than `sample` customers is counted exactly, and so is an audience without conditions."""
    if not campaigns:
        return {}
    lowest, highest = func.min(col(Customer.id)), func.max(col(Customer.id))
    with report_connection(engine) as connection:  # on PostgreSQL no JIT: compiling took longer than the count
        low, high, total = connection.execute(
            select(*(select(f).select_from(Customer).scalar_subquery() for f in (lowest, highest, func.count())))
        ).one()  # apart, each of min and max reads one end of the primary key; together SQLite reads it all
        if total <= sample:
            _, exact = _audience_counts(connection, config, campaigns, now)
            return {c.name: Size(n) for c, n in zip(campaigns, exact, strict=True)}
        ids = range(low, high + 1)
        drawn = sorted(random.sample(ids, min(len(ids), MOST_DRAWN, math.ceil(sample * len(ids) / total))))
        seen, hits = _audience_counts(connection, config, campaigns, now, only=col(Customer.id).in_(drawn))
    if not seen:
        return {}
    sizes = {}
    for campaign, hit in zip(campaigns, hits, strict=True):
        if not campaign.audience:  # everyone: no need to estimate
            sizes[campaign.name] = Size(total)
            continue
        share_low, share_high = proportion_confint(hit, seen, alpha=1 - CONFIDENCE, method="wilson")
        sizes[campaign.name] = Size(
            round(total * hit / seen), math.floor(total * share_low), math.ceil(total * share_high), seen
        )
    return sizes


def _audience_counts(
    connection: Connection,
    config: Config,
    campaigns: list[Campaign],
    now: datetime,
    only: ColumnElement[bool] | None = None,
) -> tuple[int, list[int]]:
    """The customers (those `only` keeps) and how many of them are in each campaign's audience, in one
    pass over the customer table: a conditional count per campaign, each audience compiled to SQL by
    the compiler the scheduler uses."""
    compiler = ConditionCompiler(config, now)
    counts = [func.count(case((compiler.all_of(c.audience), 1))) if c.audience else func.count() for c in campaigns]
    query = select(func.count(), *counts).select_from(Customer)
    row = connection.execute(query if only is None else query.where(only)).one()
    return int(row[0]), [int(n) for n in row[1:]]


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
