"""Why a customer does or does not get a campaign now (`lifecycle why`, the studio): whether they enter,
and what each step would do, rule by rule, in words a marketer reads.

Nothing here decides anything of its own. Entering is the evaluator's candidates for this one customer
and its `EntryRules`, each read as a column; audience conditions are the compiled conditions, each shown
with the customer's actual value; a due step is `policy.checks` on the `DueSend` that `ledger.send_checks`
builds, with the same sending history the tick reads; holdout and variant come from `assignment`. So
what this says and what `lifecycle tick --dry-run` plans agree (tests/test_why.py).

Within one tick, campaigns send in priority order and a marketing send counts towards the cap of the
campaigns after it: the marketing steps that higher-priority campaigns would send this customer now
are counted here too. Everything is read in one transaction that is rolled back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from croniter import croniter
from sqlalchemy import Integer, cast, exists, func, literal, null, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import ColumnElement
from sqlmodel import col
from sqlmodel.sql.sqltypes import UTCDateTime

from engine.campaigns.assignment import in_holdout, pick_variant
from engine.campaigns.conditions import CORE_FIELDS, ConditionCompiler
from engine.campaigns.language import Campaign, Condition, did_you_mean
from engine.clock import as_utc
from engine.config.durations import format_duration
from engine.config.settings import Config
from engine.customers.search import no_such_customer
from engine.delivery import ledger, policy
from engine.delivery.evaluation import Evaluator
from engine.delivery.ledger import CUSTOMER, DueSend
from engine.delivery.policy import Action, Check, Decision
from engine.delivery.statuses import CLAIMABLE, SendStatus
from engine.errors import NotFound
from engine.store.tables import Customer, Entry, Event, Send, Suppression, table_of

NOW_DUE = "would get it now"
SENDING = (SendStatus.SENT, SendStatus.SENDING, SendStatus.UNKNOWN)


@dataclass(frozen=True)
class RuleOutcome:
    rule: str
    passed: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StepOutcome:
    step: int
    template: str
    verdict: str  # in words
    rules: list[RuleOutcome]
    # what a tick now does with it: send, skip, defer, fail (as `tick --dry-run` plans), held_out,
    # expire, wait (not due yet), done (already sent, skipped, ...), none (no entry to send it for)
    action: str = "none"
    reason: str | None = None  # of a skip, a deferral or a failure

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "template": self.template,
            "verdict": self.verdict,
            "action": self.action,
            "reason": self.reason,
            "rules": [r.as_json() for r in self.rules],
        }


@dataclass(frozen=True)
class Explanation:
    campaign: str
    customer: str
    enters: bool
    already_entered: str | None  # the entry this trigger already made, if any
    rules: list[RuleOutcome]  # of entering
    steps: list[StepOutcome]
    now: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "customer": self.customer,
            "now": self.now.isoformat() if self.now else None,
            "enters": self.enters,
            "already_entered": self.already_entered,
            "rules": [r.as_json() for r in self.rules],
            "steps": [s.as_json() for s in self.steps],
        }


def explain(
    engine: Engine, config: Config, campaigns: list[Campaign], campaign: str, customer_id: str, now: datetime
) -> Explanation:
    """Whether the customer enters `campaign` at `now`, and what a tick would do with each step.
    Campaigns that dispatch before it in a tick (higher priority) are explained first for their
    marketing sends to this customer, which count towards its cap as they do in the tick."""
    target = find_campaign(campaigns, campaign)
    with engine.connect().execution_options(read_only=True) as connection, connection.begin() as transaction:
        customer = connection.execute(select(*CUSTOMER).where(col(Customer.external_id) == customer_id)).first()
        if customer is None:
            raise no_such_customer(connection, customer_id)
        planned: list[datetime] = []  # marketing going to them earlier in the same tick, added as decided
        if target.marketing:
            for earlier in sorted(campaigns, key=lambda c: -c.priority):
                if earlier is target:
                    break
                if earlier.marketing:
                    _Explainer(connection, config, earlier, customer._asdict(), now, planned).explain()
        explanation = _Explainer(connection, config, target, customer._asdict(), now, planned).explain()
        transaction.rollback()  # the date trigger's candidates pass through a temporary table
    return explanation


def find_campaign(campaigns: Sequence[Campaign], name: str) -> Campaign:
    found = next((c for c in campaigns if c.name == name), None)
    if found is None:
        names = [c.name for c in campaigns]
        raise NotFound(
            f"no campaign named '{name}'" + (did_you_mean(name, names) or f" (campaigns: {', '.join(names)})")
        )
    return found


@dataclass
class _Entry:
    """The entry the steps are explained for: a stored one, or one that would be made now."""

    entered_at: datetime
    event_id: int | None = None
    id: int = 0
    status: str | None = None  # None: not stored
    sends: dict[int, Any] = field(default_factory=dict)  # step: the stored send


class _Explainer:
    def __init__(
        self,
        connection: Connection,
        config: Config,
        campaign: Campaign,
        customer: dict[str, Any],
        now: datetime,
        planned: list[datetime],
    ):
        self.connection = connection
        self.config = config
        self.campaign = campaign
        self.customer = customer
        self.id: int = customer["customer_id"]
        self.now = now
        self.planned = planned
        self.rules = policy.Rules.of(config)
        self.conditions = ConditionCompiler(config, now)
        self.evaluator = Evaluator(connection, config, now, only=self.id)

    def explain(self) -> Explanation:
        rules, enters, candidate, already = self._entering()
        entry, entering = self._entry_in_play(enters, candidate)
        steps = self._steps(entry, entering)
        return Explanation(
            self.campaign.name, self.customer["external_id"], enters, already, rules, steps, now=self.now
        )

    # -- entering --------------------------------------------------------------------------------

    def _entering(self) -> tuple[list[RuleOutcome], bool, Mapping[str, Any] | None, str | None]:
        """The entry rules for this customer's candidate (the one that would enter, else the latest),
        whether they enter, the candidate, and the entry this trigger already made."""
        query = self.evaluator.candidates(self.campaign)
        rows = self._candidate_rules(query) if query is not None else []
        new = [r for r in rows if not r["entered"]]
        passing = [r for r in new if all(r[name] for name in self._rule_names())]
        chosen = passing[0] if passing else (new[-1] if new else (rows[-1] if rows else None))
        trigger = self._trigger(chosen)
        row = chosen or self._candidate_rules(self._hypothetical())[0]
        outcomes = [trigger, *self._entry_outcomes(row)]
        already = None
        if chosen is not None and chosen["entered"]:
            stored = self._entry_with_key(chosen["entry_key"])
            already = f"on {when(stored.entered_at)} ({stored.status})"
            outcomes.append(RuleOutcome("new", False, f"this trigger already made an entry {already}"))
        return outcomes, bool(passing), chosen, already

    def _rule_names(self) -> list[str]:
        names = ["signed_up", *(f"audience_{i}" for i in range(len(self.campaign.audience)))]
        if self.campaign.marketing:
            names.append("topic")
        if self.campaign.reentry != "always":
            names.append("reentry")
        return names

    def _candidate_rules(self, candidates: Any) -> list[dict[str, Any]]:
        """Each candidate (oldest first) with every entry rule read as a column."""
        c = candidates.subquery("candidate").c
        rules = self.evaluator.entry_rules(self.campaign, c)
        columns: list[ColumnElement[Any]] = [rules.signed_up.label("signed_up")]
        columns += [rule.label(f"audience_{i}") for i, rule in enumerate(rules.audience)]
        if rules.topic is not None:
            columns.append(rules.topic.label("topic"))
        if rules.reentry is not None:
            columns.append(rules.reentry.label("reentry"))
        entered = exists(
            select(col(Entry.id)).where(
                col(Entry.campaign) == self.campaign.name,
                col(Entry.customer_id) == c.customer_id,
                col(Entry.entry_key) == c.entry_key,
            )
        )
        query = (
            select(c.entry_key, c.entered_at, c.event_id, entered.label("entered"), *columns)
            .join(Customer, col(Customer.id) == c.customer_id)
            .order_by(c.entered_at, c.entry_key)
        )
        return [dict(row) for row in self.connection.execute(query).mappings()]

    def _hypothetical(self) -> Any:
        """A candidate entering now, to show the other rules when the trigger has none."""
        return select(
            literal(self.id).label("customer_id"),
            literal("").label("entry_key"),
            literal(self.now, UTCDateTime()).label("entered_at"),
            cast(null(), Integer).label("event_id"),
        )

    def _entry_outcomes(self, row: Mapping[str, Any]) -> list[RuleOutcome]:
        campaign, customer = self.campaign, self.customer
        outcomes = [RuleOutcome("signed up", bool(row["signed_up"]), f"signed up on {when(customer['created_at'])}")]
        words = self._describe(campaign.audience)
        for i, text in enumerate(words):
            outcomes.append(RuleOutcome("audience", bool(row[f"audience_{i}"]), text))
        if campaign.marketing and campaign.topic is not None:
            yes = bool(row["topic"])
            outcomes.append(
                RuleOutcome("topic", yes, f"{'subscribed' if yes else 'not subscribed'} to {campaign.topic}")
            )
        if campaign.reentry != "always":
            outcomes.append(RuleOutcome("reentry", bool(row["reentry"]), self._reentry_words(bool(row["reentry"]))))
        return outcomes

    def _reentry_words(self, passed: bool) -> str:
        rule = self.campaign.reentry
        written = rule if isinstance(rule, str) else f"not within {format_duration(rule)}"
        last = self._latest_entry()
        if last is None:
            return f"reentry {written}: never entered before"
        seen = f"entered on {when(last.entered_at)}"
        return f"reentry {written}: {seen}" + ("" if passed else ", so not again")

    def _trigger(self, chosen: Mapping[str, Any] | None) -> RuleOutcome:
        trigger, earliest = self.campaign.trigger, self.evaluator.earliest(self.campaign)
        since = (
            f"since {when(earliest)} (where the campaign's evaluation last reached, or expire_after + the first delay)"
        )
        if trigger.event is not None:
            if chosen is not None:
                return RuleOutcome("trigger", True, f"{trigger.event} event at {when(chosen['entered_at'])}")
            latest = self._latest_event(trigger.event, filtered=True)
            older = f"; the latest was at {when(latest)}, too long ago" if latest else ""
            return RuleOutcome("trigger", False, f"no {trigger.event} event{_where(trigger.where)} {since}{older}")
        if trigger.inactivity is not None:
            quiet = trigger.inactivity
            what = f"{quiet.event} event" if quiet.event else "activity"
            last = self._latest_event(quiet.event) or self.customer["created_at"]
            detail = f"last {what} at {when(last)}, wanted none for {format_duration(quiet.for_)}"
            if chosen is None and last <= earliest - quiet.for_:
                detail += f": that began before {when(earliest)}, too long ago for this trigger"
            return RuleOutcome("trigger", chosen is not None, detail)
        if trigger.date is not None:
            rule = trigger.date
            value = (self.customer["attributes"] or {}).get(rule.attribute)
            shown = f"{rule.attribute} is {_value(value)}" + (
                f", offset {format_duration(rule.offset)}" if rule.offset else ""
            )
            if chosen is not None:
                return RuleOutcome("trigger", True, f"{shown}: its moment was {when(chosen['entered_at'])}")
            return RuleOutcome("trigger", False, f"{shown}: no moment {since}")
        if chosen is not None:
            return RuleOutcome("trigger", True, f"fired at {when(chosen['entered_at'])}")
        if trigger.at is not None:
            return RuleOutcome("trigger", False, f"fires once at {when(trigger.at)}, not {since}")
        following = as_utc(croniter(trigger.schedule or "", self.now).get_next(datetime))
        return RuleOutcome("trigger", False, f"no firing of '{trigger.schedule}' {since}; next at {when(following)}")

    # -- the steps -------------------------------------------------------------------------------

    def _entry_in_play(self, enters: bool, candidate: Mapping[str, Any] | None) -> tuple[_Entry, bool]:
        """The entry whose steps to show: the new one if it enters and its first step is due now; else
        an active stored one with a step due; else the new one; else the latest stored; else one that
        would enter now. The flag: whether the customer can get its steps at all."""
        new = _Entry(candidate["entered_at"], candidate["event_id"]) if enters and candidate else None
        if new is not None and new.entered_at + self.campaign.steps[0].delay <= self.now:
            return new, True
        stored = self._stored_entries()
        due = next((e for e in stored if e.status == "active" and self._due_send(e) is not None), None)
        if due is not None:
            return due, True
        if new is not None:
            return new, True
        if stored:
            return stored[0], True
        at = candidate["entered_at"] if candidate else self.now
        return _Entry(at, candidate["event_id"] if candidate else None), False

    def _due_send(self, entry: _Entry) -> Any:
        return next((s for s in entry.sends.values() if s.status in CLAIMABLE and s.next_attempt_at <= self.now), None)

    def _steps(self, entry: _Entry, entering: bool) -> list[StepOutcome]:
        outcomes: list[StepOutcome] = []
        previous: StepOutcome | None = None
        for number, spec in enumerate(self.campaign.steps, 1):
            variant = pick_variant(self.campaign, number, self.customer["external_id"])
            template = next((c.template for c in spec.choices() if c.name == variant), spec.choices()[0].template)
            send = entry.sends.get(number)
            if not entering:
                step = StepOutcome(number, template, "does not enter now, so gets nothing", [], "none")
            elif send is not None:
                step = self._stored(entry, number, template, send)
            elif number == 1 and entry.status is None:
                step = self._first(entry, template)
            elif previous is not None and previous.action == Action.SEND:
                due = self.now + spec.delay
                if due <= self.now:
                    step = self._decide(entry, number, template, due, variant)
                else:
                    step = self._would(
                        entry, number, template, due, "wait", f"due at {when(due)}, after step {number - 1}"
                    )
            else:
                after = f"{format_duration(spec.delay)} after step {number - 1} goes" if number > 1 else "not scheduled"
                step = self._would(entry, number, template, self.now, "none", after)
            outcomes.append(step)
            previous = step
        return outcomes

    def _first(self, entry: _Entry, template: str) -> StepOutcome:
        """Step 1 of an entry made now: held out, not due yet, or decided now."""
        due = entry.entered_at + self.campaign.steps[0].delay
        holdout = self._holdout()
        if holdout is not None and not holdout.passed:
            return StepOutcome(1, template, "held out: gets nothing, counted for the lift", [holdout], "held_out")
        if due > self.now:
            return self._would(entry, 1, template, due, "wait", f"due at {when(due)}")
        variant = pick_variant(self.campaign, 1, self.customer["external_id"])
        return self._decide(entry, 1, template, due, variant)

    def _holdout(self) -> RuleOutcome | None:
        share = self.campaign.holdout
        if not share:
            return None
        held = in_holdout(self.campaign, self.customer["external_id"])
        words = f"in the {share:g}% holdout" if held else f"not in the {share:g}% holdout"
        return RuleOutcome("holdout", not held, words)

    def _stored(self, entry: _Entry, number: int, template: str, send: Any) -> StepOutcome:
        """A step the ledger holds: what became of it, or what the tick now does with it."""
        status, reason = send.status, send.reason
        if status not in CLAIMABLE:
            at = send.sent_at if status in SENDING else send.updated_at or send.due_at
            words = {SendStatus.HELD_OUT: "held out: gets nothing, counted for the lift"}.get(
                status, f"{status} on {when(at)}" + (f" ({reason})" if reason else "")
            )
            return StepOutcome(number, template, words, [], "done", reason)
        if send.due_at < ledger.expired_before(self.campaign, self.now):
            words = f"expires: was due {when(send.due_at)}, more than {format_duration(self.campaign.expire_after)} ago"
            return StepOutcome(number, template, words, [], "expire", "expired")
        if send.next_attempt_at > self.now:
            waits = f"waits until {when(send.next_attempt_at)}" + (f" ({reason})" if reason else "")
            return self._would(entry, number, template, send.next_attempt_at, "wait", waits, send)
        return self._decide(entry, number, template, send.due_at, send.variant, send)

    def _would(
        self,
        entry: _Entry,
        number: int,
        template: str,
        due: datetime,
        action: str,
        words: str,
        send: Any = None,
    ) -> StepOutcome:
        """A step not decided now, with its rules as they stand now for the marketer to see."""
        variant = (
            send.variant if send is not None else pick_variant(self.campaign, number, self.customer["external_id"])
        )
        rules = self._decide(entry, number, template, due, variant, send, planning=False).rules
        return StepOutcome(number, template, words, rules, action)

    def _decide(
        self,
        entry: _Entry,
        number: int,
        template: str,
        due: datetime,
        variant: str | None,
        send: Any = None,
        planning: bool = True,
    ) -> StepOutcome:
        """The tick's decision on this step if it were due now, rule by rule."""
        due_send = self._due_send_record(entry, number, due, variant, send)
        history = ledger.recent_marketing(self.connection, [self.id], self.now - policy.lookback(self.rules))
        recent = [*history.get(self.id, []), *self.planned]
        rules = [
            self._rule(check, decision, due_send, recent)
            for check, decision in policy.checks(due_send, self.campaign, self.rules, self.now, recent)
        ]
        if number == 1 and (holdout := self._holdout()) is not None:
            rules.insert(0, holdout)
        if not due_send.readable:
            from engine.delivery.tick import UNREADABLE

            return StepOutcome(number, template, f"would fail: {UNREADABLE}", rules, "fail", UNREADABLE)
        decision = policy.decide(due_send, self.campaign, self.rules, self.now, recent)
        if planning and decision.action is Action.SEND and self.campaign.marketing:
            self.planned.append(self.now)  # the next step, in the same tick, counts it
        return StepOutcome(number, template, _verdict(decision), rules, decision.action, decision.reason)

    def _due_send_record(self, entry: _Entry, number: int, due: datetime, variant: str | None, send: Any) -> DueSend:
        """The `DueSend` the tick would read for this step, with the ledger's own checks."""
        stored = entry.status is not None
        checks = ledger.send_checks(self.config, self.campaign, number, self.now, None if stored else entry.entered_at)
        query = select(*CUSTOMER, *checks).where(col(Customer.id) == self.id)
        if stored:
            query = query.join(Entry, col(Entry.customer_id) == col(Customer.id)).where(col(Entry.id) == entry.id)
        row = dict(self.connection.execute(query).mappings().one())
        return DueSend(
            id=send.id if send is not None else 0,
            step=number,
            due_at=due,
            variant=variant,
            attempts=send.attempts if send is not None else 0,
            entry_id=entry.id,
            entered_at=entry.entered_at,
            event_id=entry.event_id,
            **row,
        )

    def _rule(self, check: Check, decision: Decision | None, send: DueSend, recent: list[datetime]) -> RuleOutcome:
        passed = decision is None
        local = policy.local_time(send, self.rules, self.now)
        clock = f"it is {local:%H:%M} for them ({send.timezone or self.rules.timezone})"
        until = f": waits until {when(decision.until)}" if decision and decision.until else ""
        campaign = self.campaign
        if check is Check.EXIT:
            ends = [rule.event for rule in campaign.exit]
            if campaign.trigger.inactivity is not None:
                ends.append("activity coming back")
            names = ", ".join(ends) or "nothing: the campaign has no exit rule"
            words = "no exit event since entering" if passed else "did an exit event since entering"
            return RuleOutcome("exit", passed, f"{words} (exit on: {names})")
        if check is Check.SUPPRESSED:
            if passed:
                return RuleOutcome("suppression", True, "the address is not on the suppression list")
            address = campaign.recipient or send.email
            why = self.connection.scalar(select(col(Suppression.reason)).where(col(Suppression.email) == address))
            return RuleOutcome("suppression", False, f"the address is on the suppression list ({why})")
        if check is Check.TOPIC:
            if send.unsubscribed_at is not None:
                words = f"unsubscribed from all marketing on {when(send.unsubscribed_at)}"
            else:
                words = f"{'subscribed' if send.subscribed else 'unsubscribed'} to {campaign.topic}"
            return RuleOutcome("topic and consent", passed, words)
        if check is Check.CONFIRMED:
            words = (
                f"confirmed the address on {when(send.confirmed_at)}"
                if send.confirmed_at
                else "has not confirmed the address (double opt-in)"
            )
            return RuleOutcome("double opt-in", passed, words)
        if check is Check.AUDIENCE:
            words = "matches the audience" if passed else "no longer matches the audience"
            step_audience = self._describe(campaign.steps[send.step - 1].audience)
            return RuleOutcome("audience", passed, "; ".join([words, *step_audience]))
        if check is Check.SEND_WINDOW:
            window = campaign.send_window
            assert window is not None
            return RuleOutcome("send window", passed, f"{_span(window.start, window.end)}; {clock}{until}")
        if check is Check.QUIET_HOURS:
            quiet = self.rules.quiet_hours
            assert quiet is not None
            return RuleOutcome("quiet hours", passed, f"{_span(quiet.start, quiet.end)}; {clock}{until}")
        caps = policy.caps(self.rules, send.frequency)
        counts = [
            f"at most {limit} per {format_duration(per)}: {sum(t > self.now - per for t in recent)} sent"
            for limit, per in caps
        ]
        return RuleOutcome("frequency cap", passed, "; ".join(counts or ["no cap"]) + until)

    # -- reading ---------------------------------------------------------------------------------

    def _stored_entries(self) -> list[_Entry]:
        """The customer's entries of the campaign, newest first, with their sends by step."""
        entries = self.connection.execute(
            select(col(Entry.id), col(Entry.entered_at), col(Entry.event_id), col(Entry.status))
            .where(col(Entry.campaign) == self.campaign.name, col(Entry.customer_id) == self.id)
            .order_by(col(Entry.entered_at).desc(), col(Entry.id).desc())
        ).all()
        found = [_Entry(e.entered_at, e.event_id, e.id, e.status) for e in entries]
        by_id = {e.id: e for e in found}
        if by_id:
            sends = self.connection.execute(select(*table_of(Send).columns).where(col(Send.entry_id).in_(by_id)))
            for send in sends:
                by_id[send.entry_id].sends[send.step] = send
        return found

    def _latest_entry(self) -> Any:
        return self.connection.execute(
            select(col(Entry.entered_at), col(Entry.status))
            .where(col(Entry.campaign) == self.campaign.name, col(Entry.customer_id) == self.id)
            .order_by(col(Entry.entered_at).desc())
            .limit(1)
        ).first()

    def _entry_with_key(self, key: str) -> Any:
        return self.connection.execute(
            select(col(Entry.entered_at), col(Entry.status)).where(
                col(Entry.campaign) == self.campaign.name,
                col(Entry.customer_id) == self.id,
                col(Entry.entry_key) == key,
            )
        ).one()

    def _latest_event(self, name: str | None, filtered: bool = False) -> datetime | None:
        query = select(func.max(col(Event.at))).where(col(Event.customer_id) == self.id, col(Event.at) <= self.now)
        if name:
            query = query.where(col(Event.name) == name)
        if filtered:
            query = query.where(self.conditions.where(self.campaign.trigger.where))
        return self.connection.scalar(query)

    def _describe(self, conditions: Sequence[Condition]) -> list[str]:
        """Each condition with the customer's actual value, read in one query."""
        if not conditions:
            return []
        columns: list[Any] = [col(Customer.id)]

        def value(expression: ColumnElement[Any]) -> Callable[[Mapping[str, Any]], Any]:
            label = f"v{len(columns)}"
            columns.append(expression.label(label))
            return lambda row: row[label]

        words = [_Words(self.conditions, self.customer, value).plan(c) for c in conditions]
        row = dict(self.connection.execute(select(*columns).where(col(Customer.id) == self.id)).mappings().one())
        return [w(row) for w in words]


class _Words:
    """A condition in words with the customer's actual value: `stage is current (wanted: loyal)`. The
    values are read by the same compiled SQL the audience is selected with; nested conditions show
    their own outcome (✓ or ✗)."""

    def __init__(
        self,
        compiler: ConditionCompiler,
        customer: Mapping[str, Any],
        value: Callable[[ColumnElement[Any]], Callable[[Mapping[str, Any]], Any]],
    ):
        self.compiler = compiler
        self.customer = customer
        self.value = value

    def plan(self, c: Condition) -> Callable[[Mapping[str, Any]], str]:
        compiler = self.compiler
        if c.any is not None:
            parts = [self._marked(x) for x in c.any]
            return lambda row: "any of: " + "; ".join(p(row) for p in parts)
        if c.not_ is not None:
            inner = self._marked(c.not_)
            return lambda row: f"not: {inner(row)}"
        if c.stage is not None:
            stage = self.value(compiler.measures.stage_of())
            return lambda row: f"stage is {stage(row)} (wanted: {c.stage})"
        if c.risk is not None:
            risk = self.value(compiler.measures.risk_of())
            return lambda row: f"risk is {risk(row)} (wanted: {c.risk})"
        if c.subscribed is not None:
            chosen = self.value(compiler.subscribed(c.subscribed))
            return lambda row: f"subscribed to {c.subscribed}: {'yes' if chosen(row) else 'no'} (wanted: yes)"
        if c.event is not None:
            count = self.value(compiler.history_count(c))
            return lambda row: f"{c.event} events{_within(c)}{_where(c.where)}: {count(row)} (wanted {_how_many(c)})"
        assert c.attribute is not None
        name = c.attribute
        actual = self.customer.get(name) if name in CORE_FIELDS else (self.customer["attributes"] or {}).get(name)
        ((operator, operand),) = c.comparison().operators().items()
        return lambda row: f"{name} is {_value(actual)} (wanted {_operator(operator, operand)})"

    def _marked(self, c: Condition) -> Callable[[Mapping[str, Any]], str]:
        words = self.plan(c)
        passed = self.value(self.compiler.condition(c))
        return lambda row: f"{words(row)} {'✓' if passed(row) else '✗'}"


OPERATOR_WORDS = {
    "equals": "=",
    "not_equals": "≠",
    "in": "one of",
    "not_in": "none of",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
}


def _operator(operator: str, operand: Any) -> str:
    if operator == "exists":
        return "set" if operand else "not set"
    if operator in ("within_last", "within_next"):
        return f"{operator.replace('_', ' ')} {format_duration(operand)}"
    shown = ", ".join(_value(x) for x in operand) if isinstance(operand, list) else _value(operand)
    return f"{OPERATOR_WORDS[operator]} {shown}"


def _value(value: Any) -> str:
    if value is None:
        return "not set"
    if isinstance(value, datetime):
        return when(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _how_many(c: Condition) -> str:
    bounds = [
        f"at least {c.at_least}" if c.at_least is not None else "",
        f"at most {c.at_most}" if c.at_most is not None else "",
    ]
    return " and ".join(b for b in bounds if b) or "at least 1"


def _within(c: Condition) -> str:
    return f" within {format_duration(c.within)}" if c.within is not None else ""


def _where(where: Mapping[str, Any] | None) -> str:
    if not where:
        return ""
    return " where " + ", ".join(
        f"{name} {_operator(*next(iter(comparison.operators().items())))}" for name, comparison in where.items()
    )


def _span(start: Any, end: Any) -> str:
    return f"{start:%H:%M} to {end:%H:%M} their time"


def _verdict(decision: Decision) -> str:
    if decision.action is Action.SEND:
        return NOW_DUE
    if decision.action is Action.SKIP:
        return f"would be skipped ({decision.reason}), and the entry ends"
    return f"would wait ({decision.reason}) until {when(decision.until)}" if decision.until else "would wait"


def when(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    return f"{as_utc(moment):%Y-%m-%d %H:%M} UTC"
