"""A tick: evaluate every campaign into entries, then send what is due, in priority order.

campaigns/*.yaml --Evaluator--> entries + first sends --due_sends--> decide (skip / defer / send)
  --claim--> render --Sender--> sent / failed / retried, and the next step scheduled.

The tick only orchestrates: the rules of who gets what are `policy.decide`, and every status change
is the ledger's. Between evaluating and sending, the deliverability guard (`guard.py`) may pause
campaigns; a paused campaign (`pauses.py`) sends nothing from its next batch on. What goes wrong
with one send (its customer's data, a filter, the message) fails that send alone, with its reason;
a campaign whose templates no longer compile, or whose evaluation or dispatch meets a bug or bad
data, is reported in `TickReport.problems` and the others go on. Only a store that cannot be
reached (`dialect.unavailable`) stops the tick.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine

from engine.campaigns.language import Campaign
from engine.config.settings import Config
from engine.customers import feedback
from engine.delivery import guard, ledger, pauses, policy, workers
from engine.delivery.couriers import Acknowledgement, Courier, Couriers, Handover, Parcel
from engine.delivery.evaluation import Evaluator
from engine.delivery.ledger import DueSend
from engine.delivery.policy import Action
from engine.delivery.ratelimit import Gate, RateLimiter, backoff
from engine.delivery.statuses import DeferReason, SendStatus, SkipReason
from engine.errors import Problem, TemplateError, describe
from engine.mail.rendering import Renderer
from engine.senders import Sender, SendResult
from engine.store import tallies
from engine.store.dialect import refresh_statistics, unavailable

log = logging.getLogger("lifecycle.tick")
UNREADABLE = (
    "the customer's attributes are stored as JSON the database cannot read (NaN or Infinity); import them again"
)
# What the rest of a batch is recorded with when it is held back: deferred, to be tried again.
NOT_TRIED = SendResult(0, ok=False, error="not tried: the sender raised on an earlier message", transient=True)
HELD_BACK = SendResult(0, ok=False, error="held back: the provider asked to slow down", throttled=True)
RESTATE = 10_000  # entries created by one evaluation, from which the store's statistics are read again


@dataclass(frozen=True)
class InFlight:
    """A group with a courier: what recording its results needs."""

    campaign: Campaign
    step: int
    sends: dict[int, DueSend]


@dataclass
class TickReport:
    now: datetime
    dry_run: bool
    counts: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    planned: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)  # each failed send and its reason, to print
    seconds: dict[str, float] = field(default_factory=dict)  # evaluate, dispatch
    problems: dict[str, str] = field(default_factory=dict)  # campaign -> why part of it did not run
    paused: dict[str, dict[str, str]] = field(default_factory=dict)  # campaign -> its pause (pauses.Pause)
    paused_until: datetime | None = None  # the provider said to slow down: no daemon sends until then

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "dry_run": self.dry_run,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "campaigns": {name: dict(sorted(c.items())) for name, c in sorted(self.counts.items())},
            **({"planned": self.planned} if self.dry_run else {}),
            **({"problems": dict(sorted(self.problems.items()))} if self.problems else {}),
            **({"paused": dict(sorted(self.paused.items()))} if self.paused else {}),
            **({"paused_until": self.paused_until.isoformat()} if self.paused_until else {}),
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
        self.renderer = Renderer(config)  # checks every file of a campaign before it is dispatched
        self.courier = Courier(config, campaigns, sender)
        self.couriers = Couriers(self.courier, config.scheduler.worker_count())
        self.in_flight: dict[Future[Acknowledgement], InFlight] = {}
        self.report = TickReport(now=now, dry_run=dry_run)
        self.report.counts.update({c.name: Counter() for c in campaigns})  # every campaign has a row
        self.worker = worker
        self.stop = stop
        self.limiter = RateLimiter(config, engine)

    def run(self) -> TickReport:
        """One tick. A tick of its own (not a daemon's) registers as a worker for its duration."""
        try:
            if self.dry_run or self.worker is not None:
                return self._run()
            self.worker = workers.register(self.engine)
            try:
                return self._run()
            finally:
                workers.retire(self.engine, self.worker)
        finally:
            self.couriers.close()

    def _run(self) -> TickReport:
        started = time.perf_counter()
        with self.engine.connect() as connection:
            outer = connection.begin() if self.dry_run else None
            with self._transaction(connection):
                workers.recover_in_flight(connection, self.config.scheduler.lease, self.now, self.worker)
                self._evaluate(connection)
            if not self.dry_run and sum(counts["entered"] for counts in self.report.counts.values()) >= RESTATE:
                with connection.begin():
                    refresh_statistics(connection, "entry", "send")
            self.report.seconds["evaluate"] = time.perf_counter() - started
            names = [c.name for c in self.campaigns]
            held = guard.run(connection, self.config, names, self.sender, self.now, self.dry_run)
            self.report.paused.update({name: pause.as_dict() for name, pause in held.items()})
            for campaign in sorted(self.campaigns, key=lambda c: -c.priority):
                self._dispatch_campaign(connection, campaign)
            self._collect(connection, most=0)
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
                        self._collect(connection, most=0)  # the next step, or campaign, sees this one recorded
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
        batch_size = self.limiter.batch_size(self.config.scheduler.batch_size)
        while not self.stop():  # a stop request lets the batch in hand finish, then claims no more
            self._collect(connection, most=self.couriers.capacity - 1)  # a provider's "slow down" included
            with self._transaction(connection):
                if held := pauses.active(connection, campaign.name):  # a pause holds from the next batch
                    self.report.paused[campaign.name] = held[campaign.name].as_dict()
                    return
                if self.worker:
                    workers.heartbeat(connection, self.worker)
                gate = self.limiter.gate(connection, self.now, lock=not self.dry_run)
                if gate.paused_until is not None:
                    self.report.paused_until = gate.paused_until
                    return
                due = ledger.due_sends(connection, self.config, campaign, step, self.now, batch_size)
                if not due:
                    return
                sendable = {send.id: send for send in self._decide(connection, campaign, due)}
                to_send = [sendable[i] for i in self._within_rate(connection, campaign, gate, list(sendable), sendable)]
                events = ledger.events_by_id(connection, [s.event_id for s in to_send if s.event_id])
                team = self._team(connection, campaign, to_send, events)
            if to_send:
                self._deliver(connection, campaign, step, to_send, events, team)
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

    def _within_rate(
        self, connection: Connection, campaign: Campaign, gate: Gate, ids: list[int], sends: dict[int, DueSend]
    ) -> list[int]:
        """The sends the sender's windows (per_hour, per_day) still have room for; the rest wait,
        deferred, until the windows move on."""
        budget = gate.budget
        if budget is None or len(ids) <= budget:
            return ids
        allowed, held = ids[:budget], [sends[i] for i in ids[budget:]]
        reason, until = gate.deferral(connection, self.now, len(allowed))
        ledger.defer(connection, [(send, reason, until) for send in held], self.now)
        self.report.counts[campaign.name][f"{SendStatus.DEFERRED}:{DeferReason.RATE_LIMIT}"] += len(held)
        if self.dry_run:
            for send in held:
                self._plan(campaign, send, Action.DEFER, reason, until)
        return allowed

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
        """Hand the sends to the couriers group by group, each group claimed (committed) just
        before it goes, at its slot of the sender's pace, with no more groups out than there are
        couriers: a worker killed mid-batch leaves `unknown` only what they had, and the rest of its
        batch waits, never claimed. Results are recorded as they come back, while the next groups
        and batches are prepared. Once a sender raises, or the provider says to slow down, the rest
        of the batch is put back untried."""
        parcels = [
            Parcel(s.id, s.variant, s.customer, events.get(s.event_id) if s.event_id else None, team.get(s.id))
            for s in sends
        ]
        by_id = {s.id: s for s in sends}
        if self.dry_run:
            self._rehearse(connection, campaign, step, by_id, parcels)
            return
        size = self.couriers.handover_size(len(parcels), self.sender.acknowledges)
        if len(parcels) > size:
            self.couriers.start()
        tried: set[int] = set()
        held = None
        for turn in self.limiter.in_turn(parcels):
            for group in (turn[i : i + size] for i in range(0, len(turn), size)):
                finished = self._finished(most=self.couriers.capacity - 1)
                held = held or trouble(finished)
                if not held:
                    tried.update(parcel.send_id for parcel in group)
                    self._hand_over(connection, campaign, step, by_id, group)
                for flight, future in finished:  # recorded while the couriers work on the next groups
                    self._acknowledged(connection, flight, future)
                if held:
                    break
            if held:
                break
        rest = [send for i, send in by_id.items() if i not in tried]
        if rest:
            self._put_back(connection, campaign, rest, held or NOT_TRIED)

    def _hand_over(
        self, connection: Connection, campaign: Campaign, step: int, sends: dict[int, DueSend], group: list[Parcel]
    ) -> None:
        """Claim a group and give it to a courier; a send another worker claimed first is left to it.
        Under an hourly or daily limit the window is counted again in the claim's transaction (its
        row locked): another daemon may have spent some of it since this batch was counted."""
        ids = [parcel.send_id for parcel in group]
        with connection.begin():
            if self.limiter.windowed:
                ids = self._within_rate(connection, campaign, self.limiter.gate(connection, self.now), ids, sends)
            claimed = self._claim(connection, campaign, ids)
        if claimed:
            flight = InFlight(campaign, step, {i: sends[i] for i in claimed})
            parcels = [parcel for parcel in group if parcel.send_id in claimed]
            self.in_flight[self.couriers.submit(Handover(campaign.name, step, parcels))] = flight

    def _claim(self, connection: Connection, campaign: Campaign, ids: list[int]) -> set[int]:
        return ledger.claim(connection, ids, self.now, campaign.recipient, self.worker)

    def _put_back(self, connection: Connection, campaign: Campaign, sends: list[DueSend], held: SendResult) -> None:
        """The sends of a batch that were never claimed, because a sender raised or the provider said
        to slow down: they wait, deferred (until the pause, or a retry's backoff), no try counted."""
        kind = DeferReason.THROTTLED if held.throttled else DeferReason.RETRY
        until = self.report.paused_until if held.throttled and self.report.paused_until else None
        waiting = [
            (send, f"{kind}: {held.error}", until or self.now + backoff(send.attempts + 1, None)) for send in sends
        ]
        with connection.begin():
            ledger.defer(connection, waiting, self.now, count_try=False)
        self.report.counts[campaign.name][f"{SendStatus.DEFERRED}:{kind}"] += len(sends)

    def _collect(self, connection: Connection, most: int) -> None:
        """Record what the couriers have finished, first waiting until at most `most` handovers
        are still with them."""
        for flight, future in self._finished(most):
            self._acknowledged(connection, flight, future)

    def _finished(self, most: int) -> list[tuple[InFlight, Future[Acknowledgement]]]:
        """The handovers the couriers have finished, taken from those in flight, once at most
        `most` are still with them."""
        pending = [future for future in self.in_flight if not future.done()]
        while len(pending) > most:
            wait(pending, return_when=FIRST_COMPLETED)
            pending = [future for future in pending if not future.done()]
        return [(self.in_flight.pop(future), future) for future in list(self.in_flight) if future.done()]

    def _acknowledged(self, connection: Connection, flight: InFlight, future: Future[Acknowledgement]) -> None:
        group = list(flight.sends)
        try:
            acknowledgement = future.result()
        except Exception:  # a sender that raised, a courier that died: some of the group may have gone
            log.warning("the sender raised; the messages it had are marked unknown", exc_info=True)
            self._settle(connection, flight.campaign, flight.step, flight.sends, group, [])
            return
        self.couriers.record(acknowledgement)
        self._settle(connection, flight.campaign, flight.step, flight.sends, group, acknowledgement.results)

    def _rehearse(
        self, connection: Connection, campaign: Campaign, step: int, sends: dict[int, DueSend], parcels: list[Parcel]
    ) -> None:
        """A dry run claims and composes every message, to plan a failure where one could not be
        made, and sends none."""
        claimed = self._claim(connection, campaign, list(sends))
        sends = {i: send for i, send in sends.items() if i in claimed}
        handover = Handover(campaign.name, step, [parcel for parcel in parcels if parcel.send_id in claimed])
        emails, failures = self.courier.compose(handover)
        failed = {f.send_id: f.error for f in failures}
        for send in sends.values():
            self._plan(campaign, send, *(("fail", failed[send.id]) if send.id in failed else (Action.SEND, None)))
        results = [SendResult(e.send_id, ok=True, message_id=e.message_id) for e in emails]
        self._settle(connection, campaign, step, sends, list(sends), results + failures)

    def _settle(
        self,
        connection: Connection,
        campaign: Campaign,
        step: int,
        sends: dict[int, DueSend],
        group: list[int],
        results: list[SendResult],
    ) -> None:
        """Record one group's results in one transaction; a send of the group without one is `unknown`."""
        answered = {r.send_id for r in results}
        lost = [(sends[i], "the sender gave no result for it") for i in group if i not in answered]
        try:
            with self._transaction(connection):
                self._record(connection, campaign, step, sends, results)
                ledger.mark_unknown_sends(connection, lost, self.now)
            self.report.counts[campaign.name][SendStatus.UNKNOWN] += len(lost)
        except Exception as exc:
            if unavailable(exc) or self.dry_run:
                raise  # the claims stay `sending` until a worker recovers them
            with self._transaction(connection):
                ledger.mark_unknown_sends(
                    connection, [(sends[i], f"recording failed: {describe(exc)}") for i in group], self.now
                )
            self.report.counts[campaign.name][SendStatus.UNKNOWN] += len(group)
            raise

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
        throttled: list[tuple[SendResult, DueSend]] = []
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
            elif result.throttled:
                throttled.append((result, send))
                counts[f"{SendStatus.DEFERRED}:{DeferReason.THROTTLED}"] += 1
            elif result.transient and attempts < self.config.scheduler.max_attempts:
                until = self.now + backoff(attempts, result.retry_after)
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
        self._hold_off(connection, throttled, went=bool(sent))
        ledger.mark_failed(connection, failed, self.now)
        ledger.suppress_invalid(connection, invalid, self.now)

    def _hold_off(self, connection: Connection, throttled: list[tuple[SendResult, DueSend]], went: bool) -> None:
        """The provider said to slow down: every daemon pauses, and the sends it refused wait
        until then, their try given back."""
        if went:
            self.limiter.went_through(connection)
        if not throttled:
            return
        asked = max((result.retry_after or 0 for result, _ in throttled), default=0) or None
        until = self.limiter.throttled(connection, self.now, asked)
        self.report.paused_until = until
        waiting = [(send, f"{DeferReason.THROTTLED}: {result.error}", until) for result, send in throttled]
        ledger.defer(connection, waiting, self.now, count_try=False)

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


def trouble(finished: list[tuple[InFlight, Future[Acknowledgement]]]) -> SendResult | None:
    """What to hold the rest of a batch back with, if a finished handover raised (a sender's bug,
    a courier that died) or the provider said to slow down; else None."""
    if any(future.exception() is not None for _, future in finished):
        return NOT_TRIED
    if any(result.throttled for _, future in finished for result in future.result().results):
        return HELD_BACK
    return None


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
