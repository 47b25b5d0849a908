"""`lifecycle run`: a tick every `scheduler.interval`, driven by APScheduler, until SIGTERM/SIGINT.

APScheduler keeps the ticks from overlapping (max_instances=1) and coalesces missed runs into
one; coordination between daemons lives in the store (claims, worker rows, the evaluation lock),
never in APScheduler's own job store, which cannot be shared between processes.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from types import FrameType

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from engine import metrics
from engine.campaigns.language import Campaign
from engine.clock import utcnow
from engine.config.settings import Config
from engine.delivery import workers
from engine.delivery.bounces import process_bounces, reads_bounces
from engine.delivery.tick import TickReport, tick
from engine.senders import Sender
from engine.store.dialect import unavailable

log = logging.getLogger("lifecycle.daemon")


def needs_risk_runs(config: Config) -> bool:
    """Whether the daemon has churn risk to retrain or calibrate on a schedule."""
    risk = config.risk
    return risk.model == "predicted" or not (risk.explicit("yellow") and risk.explicit("red"))


MAX_BACKOFF = timedelta(minutes=5)


class Daemon:
    def __init__(
        self,
        config: Config,
        campaigns: list[Campaign],
        engine: Engine,
        sender: Sender,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.config = config
        self.campaigns = campaigns
        self.engine = engine
        self.sender = sender
        self.clock = clock
        self.stopping = threading.Event()
        self.failures = 0
        self.worker: str | None = None
        self.scheduler = BlockingScheduler(executors={"default": ThreadPoolExecutor(1)}, timezone="UTC")

    def run(self) -> None:
        """Block until a signal asks to stop; then finish the batch in hand and return."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.scheduler.add_job(
            self.tick_once,
            "interval",
            id="tick",
            next_run_time=utcnow(),
            seconds=self.config.scheduler.interval.total_seconds(),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        if needs_risk_runs(self.config):
            self.scheduler.add_job(
                self.retrain_once,
                "interval",
                id="risk",
                next_run_time=utcnow(),
                seconds=self.config.risk.retrain.total_seconds(),
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,
            )
        log.info(
            "daemon started",
            extra={
                "interval_seconds": self.config.scheduler.interval.total_seconds(),
                "campaigns": len(self.campaigns),
            },
        )
        try:
            with self.sender:
                self.scheduler.start()
        finally:
            self._retire()
            log.info("daemon stopped")

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("stopping: finishing the batch in hand", extra={"signal": signal.Signals(signum).name})
        self.stopping.set()
        threading.Thread(target=self.scheduler.shutdown, kwargs={"wait": True}, daemon=True).start()

    def tick_once(self) -> TickReport | None:
        if self.stopping.is_set():
            return None
        started = time.perf_counter()
        try:
            if self.worker is None:
                self.worker = workers.register(self.engine)
            report = tick(
                self.config,
                self.campaigns,
                self.engine,
                self.sender,
                self.clock(),
                worker=self.worker,
                stop=self.stopping.is_set,
            )
        except Exception as exc:
            if unavailable(exc):
                self._database_down(exc)
            else:
                self._tick_failed(exc)
            return None
        self.failures = 0
        self._record(report, time.perf_counter() - started)
        self._read_bounces()
        return report

    def retrain_once(self) -> None:
        """Every `risk.retrain`: the churn model retrained and everyone rescored (`model: predicted`),
        or the rules' thresholds recalibrated; in the ticks' own thread, between two ticks. A failure
        is logged and the rules or the last model stay in force."""
        from engine.customers.risk.model import NotEnoughHistory
        from engine.customers.risk.training import refresh

        if self.stopping.is_set():
            return
        try:
            done = refresh(self.engine, self.config, self.clock())
        except NotEnoughHistory as exc:
            log.warning("churn model not trained", extra={"reason": str(exc)})
            return
        except Exception as exc:
            log.exception("churn risk run failed", extra={"error": (str(exc).splitlines() or [""])[0]})
            return
        if done is not None:
            log.info(
                "churn risk refreshed",
                extra={"version": done.version, "thresholds": done.thresholds, "scored": done.scored},
            )

    def _read_bounces(self) -> None:
        """One pass over the bounce mailbox after each tick; a mailbox that cannot be read now is
        read at the next tick, and never holds up sending."""
        if not reads_bounces(self.config) or self.stopping.is_set():
            return
        try:
            found = process_bounces(self.config, self.engine, self.clock())
        except Exception as exc:
            log.error("bounce mailbox not read; trying again next tick", extra={"error": str(exc).splitlines()[0]})
            return
        if found.read:
            log.info("bounces", extra=found.as_log())

    def _database_down(self, exc: Exception) -> None:
        """Log, back off exponentially, try again: the tick's transactions rolled back whole."""
        self.failures += 1
        delay = min(self.config.scheduler.interval * 2**self.failures, MAX_BACKOFF)
        metrics.TICKS.labels("database_error").inc()
        log.error(
            "database unavailable; retrying",
            extra={
                "error": str(exc).splitlines()[0],
                "retry_in_seconds": delay.total_seconds(),
                "failures": self.failures,
            },
        )
        self.engine.dispose()
        if not self.stopping.is_set():
            self.scheduler.modify_job("tick", next_run_time=utcnow() + delay)

    def _tick_failed(self, exc: Exception) -> None:
        """A bug or bad data, not the database: backing off would not help, and the next tick (with
        whatever changed by then) runs on time. The work of the tick that committed stands."""
        metrics.TICKS.labels("error").inc()
        log.exception(
            "tick failed; the next tick runs on schedule", extra={"error": (str(exc).splitlines() or [""])[0]}
        )

    def _record(self, report: TickReport, seconds: float) -> None:
        totals: Counter[str] = Counter()
        for campaign, counts in report.counts.items():
            for status, n in counts.items():
                totals[status] += n
                if status == "entered":
                    metrics.ENTRIES.labels(campaign).inc(n)
                else:
                    metrics.SENDS.labels(campaign, status).inc(n)
        for campaign, problem in report.problems.items():
            log.error("campaign did not run in full", extra={"campaign": campaign, "problem": problem})
        metrics.TICKS.labels("ok").inc()
        metrics.TICK_SECONDS.observe(seconds)
        log.info(
            "tick",
            extra={
                "now": report.now.isoformat(),
                "seconds": round(seconds, 3),
                "evaluated": len(self.campaigns),
                **dict(totals),
                **({"paused": sorted(report.paused)} if report.paused else {}),
                **({"paused_until": report.paused_until.isoformat()} if report.paused_until else {}),
            },
        )

    def _retire(self) -> None:
        if self.worker is None:
            return
        try:
            workers.retire(self.engine, self.worker)
        except (OperationalError, DBAPIError):
            log.warning("could not retire the worker row; it will be judged dead by its heartbeat")
