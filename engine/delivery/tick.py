"""A tick: evaluate every campaign into entries, then send what is due, in priority order.

campaigns/*.yaml --Evaluator--> entries + first sends --due_sends--> decide (skip / defer / send)
  --claim--> render --Sender--> sent / failed / retried, and the next step scheduled.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Connection, Engine

from engine.campaigns.language import Campaign
from engine.config.settings import Config
from engine.customers.preferences import FREQUENCY_CHOICES
from engine.delivery import ledger, workers
from engine.delivery.evaluation import Evaluator, new_send
from engine.errors import TemplateError
from engine.mail.compose import compose
from engine.mail.links import Links
from engine.mail.message import OutgoingEmail
from engine.mail.rendering import Renderer
from engine.senders import Sender, SendResult
from engine.store import tallies
from engine.store.dialect import insert_new
from engine.store.tables import Send, Suppression


@dataclass
class TickReport:
    now: datetime
    dry_run: bool
    counts: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    planned: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # evaluate, dispatch

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "dry_run": self.dry_run,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "campaigns": {name: dict(sorted(c.items())) for name, c in sorted(self.counts.items())},
            **({"planned": self.planned} if self.dry_run else {}),
        }


@dataclass
class Decision:
    action: str  # send | skip | defer
    reason: str | None = None
    until: datetime | None = None


class Tick:
    def __init__(
        self,
        config: Config,
        campaigns: list[Campaign],
        engine: Engine,
        sender: Sender,
        now: datetime,
        dry_run: bool = False,
        progress: Callable[[int], None] | None = None,
        worker: str | None = None,
        stop: Callable[[], bool] = lambda: False,
    ):
        self.config = config
        self.campaigns = campaigns
        self.engine = engine
        self.sender = sender
        self.now = now
        self.dry_run = dry_run
        self.progress = progress or (lambda n: None)
        self.renderer = Renderer(config)
        self.links = Links(config)
        self.report = TickReport(now=now, dry_run=dry_run)
        self.report.counts.update({c.name: Counter() for c in campaigns})  # every campaign has a row
        self.worker = worker
        self.stop = stop

    def run(self) -> TickReport:
        """One tick. A tick of its own (not a daemon's) registers as a worker for its duration."""
        if self.dry_run or self.worker is not None:
            return self._run()
        self.worker = workers.register(self.engine)
        try:
            return self._run()
        finally:
            workers.retire(self.engine, self.worker)

    def _run(self) -> TickReport:
        started = time.perf_counter()
        with self.engine.connect() as connection:
            outer = connection.begin() if self.dry_run else None
            with self._transaction(connection):
                workers.recover_in_flight(connection, self.config.scheduler.lease, self.now, self.worker)
                if ledger.lock_evaluation(connection):
                    self._evaluate(connection)
            self.report.seconds["evaluate"] = time.perf_counter() - started
            for campaign in sorted(self.campaigns, key=lambda c: -c.priority):
                for step in range(1, len(campaign.steps) + 1):
                    if not self.stop():
                        self._dispatch(connection, campaign, step)
            if not self.dry_run:
                with connection.begin():
                    tallies.fold(connection)  # the report's counts, with what this tick changed
            if outer is not None:
                outer.rollback()
        self.report.seconds["dispatch"] = time.perf_counter() - started - self.report.seconds["evaluate"]
        for counts in self.report.counts.values():
            for key in [k for k, v in counts.items() if v == 0]:
                del counts[key]
        return self.report

    def _evaluate(self, connection: Connection) -> None:
        evaluator = Evaluator(connection, self.config, self.now)
        for campaign in self.campaigns:
            counts = self.report.counts[campaign.name]
            counts["entered"] += evaluator.evaluate(campaign)
            counts["expired"] += ledger.expire_overdue(connection, campaign, self.now)

    def _transaction(self, connection: Connection):
        """Each step commits on its own; a dry run keeps everything in one transaction it discards."""
        return nullcontext() if self.dry_run else connection.begin()

    # -- dispatch --------------------------------------------------------------------------------

    def _dispatch(self, connection: Connection, campaign: Campaign, step: int) -> None:
        batch_size = self.config.scheduler.batch_size
        while not self.stop():  # a stop request lets the batch in hand finish, then claims no more
            with self._transaction(connection):
                if self.worker:
                    workers.heartbeat(connection, self.worker)
                rows = ledger.due_sends(connection, self.config, campaign, step, self.now, batch_size)
                if not rows:
                    return
                outgoing_rows = self._decide_batch(connection, campaign, rows)
                emails = {r["id"]: campaign.recipient or r["email"] for r in outgoing_rows}
                claimed = ledger.claim(connection, list(emails), self.now, emails, self.worker)
                outgoing = [r for r in outgoing_rows if r["id"] in claimed]
                events = ledger.events_by_id(connection, [r["event_id"] for r in outgoing if r["event_id"]])
            if outgoing:
                self._deliver(connection, campaign, step, outgoing, events)
            self.progress(len(rows))

    def _decide_batch(self, connection: Connection, campaign: Campaign, rows) -> list:
        """Record skips and deferrals; return the rows that may be sent now."""
        lookback = max([per for _, per in self._caps(None)] + list(FREQUENCY_CHOICES.values()))
        recent = (
            ledger.recent_marketing(connection, [r["customer_id"] for r in rows], self.now - lookback)
            if campaign.marketing
            else {}
        )
        changes, ended, to_send = [], {}, []
        for row in rows:
            decision = self.decide(row, campaign, recent.get(row["customer_id"], []))
            counts = self.report.counts[campaign.name]
            if decision.action == "send":
                to_send.append(row)
                if campaign.marketing:
                    recent.setdefault(row["customer_id"], []).append(self.now)
                continue
            if decision.action == "skip":
                changes.append(
                    {"id": row["id"], "status": "skipped", "reason": decision.reason, "updated_at": self.now}
                )
                ended[row["entry_id"]] = "exited" if decision.reason == "exit" else "stopped"
                counts[f"skipped:{decision.reason}"] += 1
            else:
                changes.append(
                    {
                        "id": row["id"],
                        "status": "deferred",
                        "reason": decision.reason,
                        "next_attempt_at": decision.until,
                        "updated_at": self.now,
                    }
                )
                counts[f"deferred:{decision.reason}"] += 1
            if self.dry_run:
                self._plan(campaign, row, decision)
        ledger.mark(connection, changes)
        ledger.end_entries(connection, ended)
        return to_send

    def decide(self, row, campaign: Campaign, sent_recently: list[datetime]) -> Decision:
        """Who gets nothing, and why (campaigns.md): the first reason that applies wins."""
        marketing = campaign.marketing
        if row["exited"]:
            return Decision("skip", "exit")
        if row["suppressed"]:
            return Decision("skip", "suppressed")
        if marketing and (row["unsubscribed_at"] is not None or not row["subscribed"]):
            return Decision("skip", "unsubscribed")
        if marketing and self.config.double_opt_in and row["confirmed_at"] is None:
            return Decision("skip", "not_confirmed")
        if not row["in_audience"]:
            return Decision("skip", "audience")
        local = self.now.astimezone(ZoneInfo(row["timezone"] or self.config.timezone))
        if campaign.send_window and not campaign.send_window.contains(local.time()):
            return Decision("defer", "send_window", _next_local(local, campaign.send_window.start))
        quiet = self.config.quiet_hours
        if marketing and quiet and quiet.contains(local.time()):
            return Decision("defer", "quiet_hours", _next_local(local, quiet.end))
        if marketing:
            for limit, per in self._caps(row["frequency"]):
                within = sorted(t for t in sent_recently if t > self.now - per)
                if len(within) >= limit:
                    return Decision("defer", "frequency_cap", within[len(within) - limit] + per)
        return Decision("send")

    def _caps(self, frequency: str | None) -> list[tuple[int, timedelta]]:
        """The marketing cap of config, and the lower one a customer chose for themselves."""
        caps = []
        if self.config.limits.marketing:
            caps.append((self.config.limits.marketing.max, self.config.limits.marketing.per))
        if frequency in FREQUENCY_CHOICES:
            caps.append((1, FREQUENCY_CHOICES[frequency]))
        return caps

    # -- delivery --------------------------------------------------------------------------------

    def _deliver(self, connection: Connection, campaign: Campaign, step: int, rows, events: dict) -> None:
        emails, failures = [], []
        for row in rows:
            try:
                emails.append(self._email(campaign, step, row, events.get(row["event_id"])))
            except TemplateError as exc:
                failures.append(SendResult(row["id"], ok=False, error=str(exc)))
        if self.dry_run:
            for row in rows:
                self._plan(campaign, row, Decision("send"))
            results = [SendResult(e.send_id, ok=True, message_id=e.message_id) for e in emails]
        else:
            results = self.sender.send_batch(emails) if emails else []
        with self._transaction(connection):
            self._record(connection, campaign, step, {r["id"]: r for r in rows}, results + failures)

    def _email(self, campaign: Campaign, step: int, row, event: dict | None) -> OutgoingEmail:
        return compose(
            self.config,
            self.renderer,
            self.links,
            campaign,
            step,
            row["variant"],
            row,
            event,
            send_id=row["id"],
            now=self.now,
        )

    def _record(self, connection: Connection, campaign: Campaign, step: int, rows: dict, results: list[SendResult]):
        counts = self.report.counts[campaign.name]
        changes, ended, next_sends, invalid = [], {}, [], []
        max_attempts = self.config.scheduler.max_attempts
        for result in results:
            row = rows[result.send_id]
            if result.ok:
                changes.append(
                    {
                        "id": row["id"],
                        "status": "sent",
                        "message_id": result.message_id,
                        "sent_at": self.now,
                        "updated_at": self.now,
                    }
                )
                counts["sent"] += 1
                if step < len(campaign.steps):
                    due = self.now + campaign.steps[step].delay
                    next_sends.append(
                        new_send(
                            campaign,
                            step + 1,
                            row["entry_id"],
                            row["customer_id"],
                            row["external_id"],
                            due,
                            now=self.now,
                        )
                    )
                else:
                    ended[row["entry_id"]] = "completed"
            elif result.transient and _attempts(row) < max_attempts:
                changes.append(
                    {
                        "id": row["id"],
                        "status": "deferred",
                        "reason": f"retry: {result.error}",
                        "next_attempt_at": self.now + _backoff(_attempts(row), result.retry_after),
                        "updated_at": self.now,
                    }
                )
                counts["deferred:retry"] += 1
            else:
                changes.append({"id": row["id"], "status": "failed", "reason": result.error, "updated_at": self.now})
                ended[row["entry_id"]] = "stopped"
                counts["failed"] += 1
                if result.invalid_address:
                    invalid.append(
                        {"email": rows[result.send_id]["email"], "reason": "invalid", "created_at": self.now}
                    )
        ledger.mark(connection, changes)
        ledger.end_entries(connection, ended)
        if next_sends:
            connection.execute(insert_new(connection, Send.__table__, ["entry_id", "step"]), next_sends)
        if invalid:
            connection.execute(insert_new(connection, Suppression.__table__, ["email"]), invalid)

    def _plan(self, campaign: Campaign, row, decision: Decision) -> None:
        self.report.planned.append(
            {
                "campaign": campaign.name,
                "step": row["step"],
                "customer": row["external_id"],
                "email": campaign.recipient or row["email"],
                "action": decision.action,
                "reason": decision.reason,
                "until": decision.until.isoformat() if decision.until else None,
            }
        )


def _attempts(row) -> int:
    """Attempts including the one just made (the claim counted it)."""
    return row["attempts"] + 1


def _backoff(attempt: int, retry_after: float | None) -> timedelta:
    """Exponential backoff with jitter, never sooner than the provider asked."""
    seconds = min(60 * 2 ** (attempt - 1), 3600) * random.uniform(0.5, 1.5)
    return timedelta(seconds=max(seconds, retry_after or 0))


def _next_local(local: datetime, start) -> datetime:
    """The next time the recipient's clock shows `start`, as UTC."""
    candidate = local.replace(hour=start.hour, minute=start.minute, second=0, microsecond=0)
    if candidate <= local:
        candidate = (local + timedelta(days=1)).replace(hour=start.hour, minute=start.minute, second=0, microsecond=0)
    return candidate.astimezone(ZoneInfo("UTC"))


def tick(
    config: Config,
    campaigns: list[Campaign],
    engine: Engine,
    sender: Sender,
    now: datetime,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
    worker: str | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> TickReport:
    return Tick(config, campaigns, engine, sender, now, dry_run, progress, worker, stop).run()
