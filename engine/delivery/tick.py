"""A tick: evaluate every campaign into entries, then send what is due, in priority order.

campaigns/*.yaml --Evaluator--> entries + first sends --due_sends--> decide (skip / defer / send)
  --claim--> render --Sender--> sent / failed / retried, and the next step scheduled.

The tick only orchestrates: the rules of who gets what are `policy.decide`, and every status change
is the ledger's. What goes wrong with one send (its customer's data, a filter, the message) fails that
send alone, with its reason; a campaign whose templates no longer compile, or whose evaluation or
dispatch meets a bug or bad data, is reported in `TickReport.problems` and the others go on. Only a
store that cannot be reached (`dialect.unavailable`) stops the tick.
"""

from __future__ import annotations

import logging
import random
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine

from engine.campaigns.language import Campaign
from engine.config.settings import Config
from engine.customers import feedback
from engine.delivery import ledger, policy, workers
from engine.delivery.evaluation import Evaluator
from engine.delivery.ledger import DueSend
from engine.delivery.policy import Action
from engine.delivery.statuses import DeferReason, SendStatus, SkipReason
from engine.errors import Problem, ProblemsError, TemplateError
from engine.mail.compose import compose
from engine.mail.links import Links
from engine.mail.message import OutgoingEmail
from engine.mail.rendering import Renderer
from engine.senders import Sender, SendResult
from engine.store import tallies
from engine.store.dialect import unavailable

log = logging.getLogger("lifecycle.tick")
UNREADABLE = (
    "the customer's attributes are stored as JSON the database cannot read (NaN or Infinity); import them again"
)


@dataclass
class TickReport:
    now: datetime
    dry_run: bool
    counts: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    planned: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)  # each failed send and its reason, to print
    seconds: dict[str, float] = field(default_factory=dict)  # evaluate, dispatch
    problems: dict[str, str] = field(default_factory=dict)  # campaign -> why part of it did not run

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "dry_run": self.dry_run,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "campaigns": {name: dict(sorted(c.items())) for name, c in sorted(self.counts.items())},
            **({"planned": self.planned} if self.dry_run else {}),
            **({"problems": dict(sorted(self.problems.items()))} if self.problems else {}),
        }

    def problem(self, campaign: str, what: str, exc: BaseException) -> None:
        """Note why part of a campaign did not run this tick; the others go on."""
        self.counts[campaign][what] += 1
        self.problems[campaign] = f"{what}: {describe(exc)}"


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
        self.rules = policy.Rules.of(config)
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
                self._evaluate(connection)
            self.report.seconds["evaluate"] = time.perf_counter() - started
            for campaign in sorted(self.campaigns, key=lambda c: -c.priority):
                self._dispatch_campaign(connection, campaign)
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
        for campaign in self._evaluation_order():
            if not ledger.lock_evaluation(connection, campaign.name):
                continue  # another daemon evaluates it now
            counts = self.report.counts[campaign.name]
            try:
                with connection.begin_nested():  # a failure undoes this campaign's evaluation only
                    entered = evaluator.evaluate(campaign)
                    expired = ledger.expire_overdue(connection, campaign, self.now)
            except Exception as exc:
                if unavailable(exc):
                    raise
                log.debug("evaluation failed", exc_info=True, extra={"campaign": campaign.name})
                self.report.problem(campaign.name, "evaluation_failed", exc)
                continue
            counts["entered"] += entered
            counts["expired"] += expired

    def _evaluation_order(self) -> list[Campaign]:
        """The campaigns, each worker starting at its own place in the list, so that daemons
        evaluating at the same moment take different campaigns first rather than queue for one."""
        start = zlib.crc32((self.worker or "").encode()) % max(len(self.campaigns), 1)
        return self.campaigns[start:] + self.campaigns[:start]

    def _transaction(self, connection: Connection) -> AbstractContextManager[object]:
        """Each step commits on its own; a dry run keeps everything in one transaction it discards."""
        return nullcontext() if self.dry_run else connection.begin()

    # -- dispatch --------------------------------------------------------------------------------

    def _dispatch_campaign(self, connection: Connection, campaign: Campaign) -> None:
        """Every step of one campaign, unless its templates no longer compile (a file edited since
        the campaigns were loaded): then its sends wait, untouched, for the fix."""
        try:
            self._check_templates(campaign)
        except Exception as exc:
            self.report.problem(campaign.name, "templates_broken", exc)
            return
        try:
            with self._isolated(connection):
                for step in range(1, len(campaign.steps) + 1):
                    if not self.stop():
                        self._dispatch(connection, campaign, step)
        except Exception as exc:
            if unavailable(exc):
                raise
            log.debug("dispatch failed", exc_info=True, extra={"campaign": campaign.name})
            self.report.problem(campaign.name, "dispatch_failed", exc)

    def _check_templates(self, campaign: Campaign) -> None:
        """Compile every file a send of the campaign may use (cached until a file changes)."""
        for spec in campaign.steps:
            for content in spec.choices():
                for locale in self.config.locales:
                    name = self.renderer.template_file(content.template, locale)
                    if name is None:
                        problem = Problem(
                            f"{content.template}.mjml", 1, 1, f"template '{content.template}' does not exist"
                        )
                        raise TemplateError([problem])
                    self.renderer.compile(name)
                    text = self.renderer.template_file(content.template, locale, "txt")
                    if text is not None:
                        self.renderer.plain.get_template(text)

    def _isolated(self, connection: Connection) -> AbstractContextManager[object]:
        """A dry run's one transaction gets a savepoint per campaign, so that a failed statement
        (which aborts a PostgreSQL transaction) does not take the other campaigns with it."""
        return connection.begin_nested() if self.dry_run else nullcontext()

    def _dispatch(self, connection: Connection, campaign: Campaign, step: int) -> None:
        batch_size = self.config.scheduler.batch_size
        while not self.stop():  # a stop request lets the batch in hand finish, then claims no more
            with self._transaction(connection):
                if self.worker:
                    workers.heartbeat(connection, self.worker)
                due = ledger.due_sends(connection, self.config, campaign, step, self.now, batch_size)
                if not due:
                    return
                to_send = self._decide(connection, campaign, due)
                emails = {send.id: campaign.recipient or send.email for send in to_send}
                claimed = ledger.claim(connection, list(emails), self.now, emails, self.worker)
                outgoing = [send for send in to_send if send.id in claimed]
                events = ledger.events_by_id(connection, [s.event_id for s in outgoing if s.event_id])
                team = self._team(connection, campaign, outgoing, events)
            if outgoing:
                self._deliver(connection, campaign, step, outgoing, events, team)
            self.progress(len(due))

    def _decide(self, connection: Connection, campaign: Campaign, due: list[DueSend]) -> list[DueSend]:
        """Decide each send (engine/delivery/policy.py), record the skips and deferrals, and return
        the sends that may go now."""
        recent = (
            ledger.recent_marketing(connection, [s.customer_id for s in due], self.now - policy.lookback(self.rules))
            if campaign.marketing
            else {}
        )
        counts = self.report.counts[campaign.name]
        skipped: list[tuple[DueSend, SkipReason]] = []
        deferred: list[tuple[DueSend, str, datetime]] = []
        failed: list[tuple[DueSend, str | None]] = []
        to_send = []
        for send in due:
            if not send.readable:  # stored before the store refused such values: this customer alone
                failed.append((send, UNREADABLE))
                counts[SendStatus.FAILED] += 1
                if self.dry_run:
                    self._plan(campaign, send, "fail", UNREADABLE)
                continue
            decision = policy.decide(send, campaign, self.rules, self.now, recent.get(send.customer_id, []))
            if decision.action is Action.SEND:
                to_send.append(send)
                if campaign.marketing:  # the cap holds within a batch too
                    recent.setdefault(send.customer_id, []).append(self.now)
                continue
            if isinstance(decision.reason, SkipReason):
                skipped.append((send, decision.reason))
                counts[f"{SendStatus.SKIPPED}:{decision.reason}"] += 1
            elif decision.reason is not None and decision.until is not None:
                deferred.append((send, decision.reason, decision.until))
                counts[f"{SendStatus.DEFERRED}:{decision.reason}"] += 1
            if self.dry_run:
                self._plan(campaign, send, decision.action, decision.reason, decision.until)
        ledger.skip(connection, skipped, self.now)
        ledger.defer(connection, deferred, self.now)
        ledger.mark_failed(connection, failed, self.now)
        return to_send

    # -- delivery --------------------------------------------------------------------------------

    def _deliver(
        self,
        connection: Connection,
        campaign: Campaign,
        step: int,
        sends: list[DueSend],
        events: dict[int, dict[str, Any]],
        team: dict[int, dict[str, Any]],
    ) -> None:
        """Compose and send the claimed sends, then record each one's outcome: whatever goes wrong,
        no claimed send is left `sending`."""
        emails, failures = [], []
        for send in sends:
            event = events.get(send.event_id) if send.event_id is not None else None
            try:
                emails.append(self._email(campaign, step, send, event, team.get(send.id)))
            except Exception as exc:  # this customer's data, a filter, the message: this send alone
                if not isinstance(exc, TemplateError):
                    log.debug("composing failed", exc_info=True, extra={"send": send.id})
                failures.append(SendResult(send.id, ok=False, error=describe(exc)))
        if self.dry_run:
            failed = {f.send_id: f.error for f in failures}
            for send in sends:
                self._plan(campaign, send, *(("fail", failed[send.id]) if send.id in failed else (Action.SEND, None)))
            results = [SendResult(e.send_id, ok=True, message_id=e.message_id) for e in emails]
        else:
            results = self._send(emails)
        by_id = {s.id: s for s in sends}
        answered = {r.send_id for r in results + failures}
        lost = [(s, "the sender gave no result for it") for s in sends if s.id not in answered]
        try:
            with self._transaction(connection):
                self._record(connection, campaign, step, by_id, results + failures)
                ledger.mark_unknown_sends(connection, lost, self.now)
        except Exception as exc:
            if unavailable(exc) or self.dry_run:
                raise  # the claims stay `sending` until a worker recovers them as `unknown`
            with self._transaction(connection):
                ledger.mark_unknown_sends(
                    connection, [(s, f"recording failed: {describe(exc)}") for s in sends], self.now
                )
            raise

    def _send(self, emails: list[OutgoingEmail]) -> list[SendResult]:
        """The sender's results; a sender that raises leaves its messages without one (`unknown`:
        some may have gone out)."""
        try:
            return self.sender.send_batch(emails) if emails else []
        except Exception:
            log.warning("the sender raised; its batch is marked unknown", exc_info=True)
            return []

    @staticmethod
    def _team(
        connection: Connection, campaign: Campaign, sends: list[DueSend], events: dict[int, dict[str, Any]]
    ) -> dict[int, dict[str, Any]]:
        """An email to the team shows the customer's last orders and the latest rating it is about."""
        if not campaign.recipient:
            return {}
        return {
            s.id: feedback.alert_context(connection, s.customer_id, events.get(s.event_id) if s.event_id else None)
            for s in sends
        }

    def _email(
        self,
        campaign: Campaign,
        step: int,
        send: DueSend,
        event: dict[str, Any] | None,
        team: dict[str, Any] | None = None,
    ) -> OutgoingEmail:
        return compose(
            self.config,
            self.renderer,
            self.links,
            campaign,
            step,
            send.variant,
            send.customer,
            event,
            send_id=send.id,
            now=self.now,
            team=team,
        )

    def _record(
        self,
        connection: Connection,
        campaign: Campaign,
        step: int,
        sends: dict[int, DueSend],
        results: list[SendResult],
    ) -> None:
        """Sent, to retry later, or failed for good: one change to the ledger of each kind."""
        counts = self.report.counts[campaign.name]
        sent: list[tuple[DueSend, str | None]] = []
        retries: list[tuple[DueSend, str, datetime]] = []
        failed: list[tuple[DueSend, str | None]] = []
        invalid = []
        for result in results:
            send = sends.get(result.send_id)
            if send is None:  # a result for a send not in this batch: nothing to record
                continue
            attempts = send.attempts + 1  # including the one just made (the claim counted it)
            if result.ok:
                sent.append((send, result.message_id))
                counts[SendStatus.SENT] += 1
            elif result.transient and attempts < self.config.scheduler.max_attempts:
                until = self.now + _backoff(attempts, result.retry_after)
                retries.append((send, f"{DeferReason.RETRY}: {result.error}", until))
                counts[f"{SendStatus.DEFERRED}:{DeferReason.RETRY}"] += 1
            else:
                failed.append((send, result.error))
                counts[SendStatus.FAILED] += 1
                self.report.failed.append(
                    {"campaign": campaign.name, "step": step, "customer": send.external_id, "reason": result.error}
                )
                if result.invalid_address:
                    invalid.append(send.email)
        ledger.mark_sent(connection, campaign, step, sent, self.now)
        ledger.defer(connection, retries, self.now)
        ledger.mark_failed(connection, failed, self.now)
        ledger.suppress_invalid(connection, invalid, self.now)

    def _plan(
        self, campaign: Campaign, send: DueSend, action: str, reason: str | None = None, until: datetime | None = None
    ) -> None:
        self.report.planned.append(
            {
                "campaign": campaign.name,
                "step": send.step,
                "customer": send.external_id,
                "email": campaign.recipient or send.email,
                "action": action,
                "reason": reason,
                "until": until.isoformat() if until else None,
            }
        )


def describe(exc: BaseException) -> str:
    """An exception as a reason a person can read: a located problem as it is, else its kind and text."""
    if isinstance(exc, ProblemsError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _backoff(attempt: int, retry_after: float | None) -> timedelta:
    """Exponential backoff with jitter, never sooner than the provider asked."""
    seconds = min(60 * 2 ** (attempt - 1), 3600) * random.uniform(0.5, 1.5)
    return timedelta(seconds=max(seconds, retry_after or 0))


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
