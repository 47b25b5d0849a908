"""The studio: the marketer's window on campaigns, their flows and live email previews.

The same pages serve two ways. `lifecycle serve` mounts them at `/studio` behind a login (an API
key on a form, then a signed session cookie), and its `/dashboard` takes the same session.
`lifecycle studio` runs them alone on the loopback address, without a login, and watches the
working copy's campaigns, templates and config.yaml: each change reaches open pages within a
moment as a server-sent event (engine/web/studio/live.py).

The studio reads files and the store and never writes to the store: the only thing it does is what
a user could do from the command line, a test send.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import RedirectResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from engine.config.settings import Config
from engine.mail.links import Links
from engine.store import schema
from engine.web.security import BodyLimit, Csrf, KnownMethods, SecurityHeaders
from engine.web.studio import customers, pages
from engine.web.studio.access import Sessions
from engine.web.studio.live import Changes, watch
from engine.web.studio.state import Studio

PREFIX = "/studio"


def service_routes() -> list[BaseRoute]:
    """The customer's pages of `lifecycle serve`, that links in emails lead to."""
    from engine.web import feedback
    from engine.web import pages as customer_pages

    return [*customer_pages.routes, *feedback.routes]


def for_service(config: Config, engine: Engine, links: Links, csrf: Csrf) -> Studio:
    """The studio of `lifecycle serve`: behind the login, no live reload."""
    return Studio(config, engine, csrf, service_routes(), sessions=Sessions(links.secrets, config.api_keys()))


def mount() -> Mount:
    return Mount(PREFIX, routes=[*pages.routes, *customers.routes])


def local_app(config: Config) -> Starlette:
    """`lifecycle studio`: the pages at /studio without a login, and the file watcher."""
    from engine.web.services import HERE

    links = Links(config)
    engine = schema.open_store(config.database_url)
    changes = Changes()
    state = Studio(config, engine, Csrf(links.secrets), service_routes(), changes=changes)

    @asynccontextmanager
    async def watching(app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        paths = [config.campaigns_path, config.templates_path, config.file]
        task = asyncio.create_task(watch(changes, paths, config.root, stop))
        threading.Thread(target=state.prepare, daemon=True).start()
        try:
            yield
        finally:
            stop.set()
            task.cancel()

    app = Starlette(
        routes=[
            Route("/", lambda request: RedirectResponse(f"{PREFIX}/"), methods=["GET"]),
            mount(),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[Middleware(SecurityHeaders), Middleware(KnownMethods), Middleware(BodyLimit)],
        exception_handlers={HTTPException: pages.http_error},  # type: ignore[dict-item]
        lifespan=watching,
    )
    app.state.studio = state
    return app


def from_environment() -> Starlette:
    """The local studio for `$LIFECYCLE_CONFIG`, as the server process builds it."""
    from engine.config.settings import load_config

    return local_app(load_config())
