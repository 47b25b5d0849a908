"""What the studio's campaign list shows: each campaign's kind, trigger, topic and priority, how
many customers its audience holds now, its last 30 days (entered, sent, skipped by reason,
converted), and every problem of its files with `file:line`. A broken campaign or template is
listed with its problems rather than hiding the others (`check_campaigns` keeps the good ones).

Audience sizes are one pass over the customer table: a conditional count per campaign, each
campaign's audience compiled to SQL by the same compiler the scheduler uses
(engine/campaigns/conditions.py), so the numbers are the customers a tick would let in now."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.engine import Engine

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

    def problem_count(self) -> int:
        return sum(len(r.problems) for r in self.rows) + len(self.other_problems)


def fingerprint(config: Config) -> tuple[Any, ...]:
    """Every campaign and template file with its size and modification time: when this is the
    same, so are the problems found in them."""
    files = []
    for folder in (config.campaigns_path, config.templates_path):
        if folder.is_dir():
            files += [
                (str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.rglob("*")) if p.is_file()
            ]
    return tuple(files)


class Checks:
    """`lifecycle validate`'s checks of campaigns and templates, run again only when a file
    changed: rendering every step in every locale takes longer than the rest of a page."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[Any, ...] | None = None
        self._found: tuple[list[Campaign], list[Problem]] = ([], [])

    def __call__(self, config: Config) -> tuple[list[Campaign], list[Problem]]:
        key = (id(config), fingerprint(config))
        with self._lock:
            if key != self._key:
                campaigns, problems = check_campaigns(config)
                self._found = (campaigns, problems + check_templates(config, campaigns))
                self._key = key
            return self._found


def overview(config: Config, engine: Engine, checks: Checks, now: datetime) -> Overview:
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
    sizes = audience_sizes(config, engine, valid, now)
    figures = recent_figures(engine, valid, now)
    for row in rows.values():
        row.audience = sizes.get(row.name) if row.campaign else None
        row.figures = figures.get(row.name) if row.campaign else None
    ordered = sorted(
        rows.values(), key=lambda r: (r.campaign is None, -(r.campaign.priority if r.campaign else 0), r.name)
    )
    return Overview(ordered, other)


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
