"""What the routes share, made once when the app starts: config, store, signed links,
preferences, CSRF, page templates and the webhook's verification key; and the three ways a route
uses the store (`read`, `write`, `run`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
from sendgrid.helpers.eventwebhook import EventWebhook
from sqlalchemy.engine import Connection, Engine
from starlette.requests import Request
from starlette.templating import Jinja2Templates

from engine.config.settings import Config
from engine.customers.preferences import Preferences
from engine.mail.links import Links
from engine.store.dialect import on_event_loop, one_writer
from engine.web.security import Csrf
from engine.web.writes import GroupCommit

HERE = Path(__file__).parent
T = TypeVar("T")
POOL_CONNECTIONS = 15  # SQLAlchemy's default QueuePool: 5 kept + 10 overflow


@dataclass
class Services:
    config: Config
    engine: Engine
    links: Links
    preferences: Preferences
    csrf: Csrf
    templates: Jinja2Templates
    api_keys: set[str]
    webhook: EventWebhook | None  # None: no public key configured, so every webhook post is refused
    store_threads: anyio.CapacityLimiter
    group_commit: GroupCommit
    loop_reader: LoopReader
    page_cache: dict[tuple[Any, ...], str] = field(default_factory=dict)  # see pages._preference_form

    async def read(self, work: Callable[..., T], *args: Any) -> T:
        """`work(connection, *args)` for a short read. On SQLite it runs right here on the event
        loop: a point read of a local file in WAL mode never waits for a writer, and takes less
        time than handing it to a thread would (the handoff also makes two threads take turns at
        the GIL). Other databases answer over the network, so a worker thread waits for them."""
        if on_event_loop(self.engine):
            return self.loop_reader(work, *args)
        return await self.run(_read, self.engine, work, *args)

    async def write(self, work: Callable[..., T], *args: Any) -> T:
        """`work(connection, *args)` in a transaction shared with the writes waiting beside it."""
        return await self.group_commit(work, *args)

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """Longer store work (the ingest API, webhooks, the dashboard) on a worker thread, off the
        event loop: it may wait for the database's write lock while the daemon's tick holds it."""
        return await anyio.to_thread.run_sync(work, *args, limiter=self.store_threads)


class LoopReader:
    """The reads that run on the event loop (SQLite) share one connection, kept open: taking one
    from the pool and giving it back was a tenth of a page's cost (py-spy under
    bench/web_latency.py). Each read ends its transaction, so the next one sees the latest commit;
    a read that fails drops the connection, and the next read opens another."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.connection: Connection | None = None

    def __call__(self, work: Callable[..., T], *args: Any) -> T:
        connection = self.connection or self.engine.connect().execution_options(read_only=True)
        self.connection = None
        try:
            result = work(connection, *args)
        except BaseException:
            connection.close()
            raise
        connection.rollback()
        self.connection = connection
        return result


def _read(engine: Engine, work: Callable[..., T], *args: Any) -> T:
    with engine.connect().execution_options(read_only=True) as connection:
        return work(connection, *args)


def store_threads(engine: Engine) -> anyio.CapacityLimiter:
    """How many requests write to the store at once. SQLite has one writer at a time and the store
    begins every write with the write lock (BEGIN IMMEDIATE), so there one thread does it all:
    requests queue here, cheaply, rather than in SQLite's sleeping busy handler.
    Other databases get as many threads as SQLAlchemy's default pool has connections."""
    return anyio.CapacityLimiter(1 if one_writer(engine) else POOL_CONNECTIONS)


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found
