"""Couriers compose and send the claimed sends, so that rendering, the costliest part of a send,
uses every core while the tick keeps the ledger in one process.

The tick hands a courier one group of claimed sends at a time (a `Handover` of `Parcel`s). The
courier composes each message (engine/mail/compose.py) and gives the group to its own sender; the
results come back to the tick, which records them. A courier never touches the store, so every
status change stays the ledger's and the guarantees are the same with one courier or many.

With `scheduler.workers` above one, the couriers are processes forked from the tick's (they
inherit its compiled templates), each with a sender of its own; a group small enough for one
courier is done in the tick's own process. Nothing in a courier outlives the tick that forked it.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import util
from typing import Any

from engine.campaigns.language import Campaign
from engine.clock import utcnow
from engine.config.settings import Config
from engine.errors import TemplateError, describe
from engine.mail.compose import compose
from engine.mail.links import Links
from engine.mail.message import OutgoingEmail
from engine.mail.rendering import Renderer
from engine.metrics import SENDER_SECONDS
from engine.senders import Sender, SendResult

log = logging.getLogger("lifecycle.couriers")
SMALLEST_HANDOVER = 20


@dataclass(frozen=True, slots=True)
class Parcel:
    """One claimed send with what composing its message needs: `customer` as compose reads it,
    the event that triggered the entry, and for an email to the team what it shows."""

    send_id: int
    variant: str | None
    customer: dict[str, Any]
    event: dict[str, Any] | None = None
    team: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Handover:
    """The sends of one campaign step that one courier composes and sends at once."""

    campaign: str
    step: int
    parcels: list[Parcel]


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """A courier's answer: one result per parcel, and how long the sender took."""

    results: list[SendResult]
    sender_seconds: float


class Courier:
    """Composes and sends handovers, in whichever process it lives."""

    def __init__(self, config: Config, campaigns: list[Campaign], sender: Sender):
        self.config = config
        self.campaigns = {campaign.name: campaign for campaign in campaigns}
        self.sender = sender
        # The tick checks a campaign's templates before dispatching it; within a handover, once a second will do.
        self.renderer = Renderer(config, trusted_for=1.0)
        self.links = Links(config)

    def compose(self, handover: Handover) -> tuple[list[OutgoingEmail], list[SendResult]]:
        """The messages, and a failed result for each parcel whose message could not be made
        (its customer's data, a filter, the template): that send alone fails, with the reason."""
        campaign = self.campaigns[handover.campaign]
        emails, failures = [], []
        for parcel in handover.parcels:
            try:
                emails.append(self.email(campaign, handover.step, parcel))
            except Exception as exc:
                if not isinstance(exc, TemplateError):
                    log.debug("composing failed", exc_info=True, extra={"send": parcel.send_id})
                failures.append(SendResult(parcel.send_id, ok=False, error=describe(exc)))
        return emails, failures

    def email(self, campaign: Campaign, step: int, parcel: Parcel) -> OutgoingEmail:
        return compose(
            self.config,
            self.renderer,
            self.links,
            campaign,
            step,
            parcel.variant,
            parcel.customer,
            parcel.event,
            send_id=parcel.send_id,
            now=utcnow(),  # the Date of a message is when it leaves, whatever day --now replays
            team=parcel.team,
        )

    def deliver(self, handover: Handover) -> Acknowledgement:
        """Compose the group and send what could be composed. A sender that raises raises here:
        the tick then cannot know which of the group went out."""
        emails, failures = self.compose(handover)
        started = time.perf_counter()
        results = self.sender.send_batch(emails)
        return Acknowledgement(failures + results, time.perf_counter() - started)


class Couriers:
    """Where the tick's handovers go: to the courier in the tick's process, or, once `start` has
    forked them, to `workers` courier processes, each working on one handover at a time."""

    def __init__(self, courier: Courier, workers: int):
        self.courier = courier
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None

    def handover_size(self, sends: int, acknowledges: int) -> int:
        """How many of a batch's sends go in one handover: at most what the sender acknowledges
        at once, and small enough that every courier gets a share; but not so small that forking
        a courier would cost more than it saves."""
        share = -(-sends // self.workers)
        return min(acknowledges, max(SMALLEST_HANDOVER, share))

    @property
    def capacity(self) -> int:
        """How many handovers may be with couriers at once: each one in flight, not queued."""
        return self.workers if self.pool is not None else 1

    def start(self) -> None:
        """Fork the courier processes, unless there are already some or one worker is asked for.
        The collector is frozen across the fork, so no object of the tick's process (a database
        connection, say) is ever collected, and closed, in a courier; it also keeps the pages
        the processes share from being copied."""
        if self.pool is not None or self.workers < 2:
            return
        pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_start_courier,
            initargs=(self.courier, os.getpid()),
        )
        gc.collect()
        gc.freeze()
        try:
            pool.submit(os.getpid).result()  # a fork context starts every process at the first submit
        finally:
            gc.unfreeze()
        self.pool = pool

    def submit(self, handover: Handover) -> Future[Acknowledgement]:
        """Give a handover to a courier. When a courier process has died, the executor stops the
        others (what they had comes back as an error: unknown) and new ones are forked."""
        if self.pool is not None:
            try:
                return self.pool.submit(_deliver_here, handover)
            except BrokenProcessPool:
                self.close()
                self.start()
                return self.submit(handover)
        future: Future[Acknowledgement] = Future()
        try:
            future.set_result(self.courier.deliver(handover))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def record(self, acknowledgement: Acknowledgement) -> None:
        """The sender's latency, in this process's metrics: a forked courier's die with it (the
        sender times itself where it runs)."""
        if self.pool is not None and acknowledgement.results:
            SENDER_SECONDS.labels(self.courier.sender.name).observe(acknowledgement.sender_seconds)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None


_courier: Courier | None = None  # in a forked courier process: the one it works as


def _start_courier(courier: Courier, parent: int) -> None:
    """In a new courier process: a sender of its own (a connection is never shared with the tick's
    process), no part in the tick's signals, and an exit as soon as the tick's process is gone."""
    global _courier
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the tick stops its couriers itself, after the batch in hand
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    courier.sender = type(courier.sender)(courier.config)
    _courier = courier
    gc.freeze()  # what it inherited lives as long as it does: the collector need not look at it again
    util.Finalize(None, courier.sender.close, exitpriority=10)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()


def _exit_when_orphaned(parent: int) -> None:
    """A tick killed with SIGKILL cannot stop its couriers: they notice and leave."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _deliver_here(handover: Handover) -> Acknowledgement:
    assert _courier is not None, "a courier process runs _start_courier first"
    return _courier.deliver(handover)
