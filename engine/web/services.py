"""What the routes share, made once when the app starts: config, store, signed links,
preferences, CSRF, page templates and the webhook's verification key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import anyio
from sendgrid.helpers.eventwebhook import EventWebhook
from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.templating import Jinja2Templates

from ..config import Config
from ..links import Links
from ..preferences import Preferences
from .security import Csrf

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

    async def in_store(self, work: Callable[..., T], *args: Any) -> T:
        """Runs store work on a worker thread, off the event loop."""
        return await anyio.to_thread.run_sync(work, *args, limiter=self.store_threads)


def store_threads(engine: Engine) -> anyio.CapacityLimiter:
    """How many requests use the store at once. SQLite has one writer at a time and the store
    begins every write with the write lock (BEGIN IMMEDIATE), so there one thread does it all:
    requests queue here, cheaply, rather than in SQLite's sleeping busy handler.
    Other databases get as many threads as SQLAlchemy's default pool has connections."""
    return anyio.CapacityLimiter(1 if engine.dialect.name == "sqlite" else POOL_CONNECTIONS)


def services(request: Request) -> Services:
    return request.app.state.services
