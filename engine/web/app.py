"""The app factory: routes, middleware and the services they share."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from engine.config.settings import Config
from engine.customers.preferences import Preferences
from engine.mail.links import Links
from engine.store import schema
from engine.web import api, dashboard, feedback, openapi, ops, pages, segment, webhooks
from engine.web.security import BodyLimit, Csrf, KnownMethods, SecurityHeaders
from engine.web.services import HERE, LoopReader, Services, store_threads
from engine.web.writes import GroupCommit


def page_templates() -> Jinja2Templates:
    """The pages ship with the package and never change while it runs: no mtime check per request."""
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.auto_reload = False
    return templates


def create_app(config: Config, engine: Engine | None = None) -> Starlette:
    """The web service for one config. A missing secret or a bad webhook key fails here, at start."""
    links = Links(config)
    engine = engine or schema.open_store(config.database_url)
    services = Services(
        config=config,
        engine=engine,
        links=links,
        preferences=Preferences(config),
        csrf=Csrf(links.secrets),
        templates=page_templates(),
        api_keys=config.api_keys(),
        webhook=webhooks.sendgrid.verifier(config),
        store_threads=store_threads(engine),
        group_commit=GroupCommit(engine),
        loop_reader=LoopReader(engine),
    )
    app = Starlette(
        routes=[
            *pages.routes,
            *feedback.routes,
            *api.routes,
            *segment.routes,
            *webhooks.routes,
            *ops.routes,
            *dashboard.routes,
            *openapi.routes,
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[
            Middleware(ops.RequestMetrics),
            Middleware(SecurityHeaders),
            Middleware(KnownMethods),
            Middleware(BodyLimit),
        ],
        # Starlette types a handler as taking any Exception, not the class it is registered for
        exception_handlers={HTTPException: pages.http_error},  # type: ignore[dict-item]
    )
    app.state.services = services
    return app
