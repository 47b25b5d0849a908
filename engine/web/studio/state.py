"""What the studio's pages share: the config (read again after config.yaml changes, in the local
studio), the store, the login (None in the local studio), the checks of the files, the service's
routes that previewed links are resolved against, and the live-reload counter."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.templating import Jinja2Templates

from engine.clock import utcnow
from engine.config.settings import Config, load_config
from engine.errors import Problem, ProblemsError
from engine.web.security import Csrf
from engine.web.studio.access import Sessions
from engine.web.studio.live import Changes
from engine.web.studio.overview import Checks, Counts

HERE = Path(__file__).parent
PREPARING = 30.0  # seconds the start waits for every audience to have a size before checking templates


def studio_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.auto_reload = False
    templates.env.filters["segment"] = lambda value: quote(str(value), safe="")  # one path segment
    return templates


@dataclass
class Studio:
    config: Config
    engine: Engine
    csrf: Csrf
    service_routes: list[BaseRoute]
    sessions: Sessions | None = None  # None: the local studio, no login
    changes: Changes | None = None  # the local studio: live reload
    templates: Jinja2Templates = field(default_factory=studio_templates)
    checks: Checks = field(default_factory=Checks)
    counts: Counts = field(default_factory=Counts)
    config_problems: list[Problem] = field(default_factory=list)
    _config_version: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def sessions_allow(self, request: Request) -> bool:
        """A signed-in browser or a bearer key; everyone in the local studio."""
        return self.sessions is None or self.sessions.allowed(request)

    def prepare(self) -> None:
        """Begin what the campaign list needs before anyone asks, so that the first list a person
        opens after the start finds it counted or under way: the counts, and once every audience
        has a size (an estimate will do), the templates' checks, which would slow them down."""
        config = self.current_config()
        self.counts(config, self.engine, self.checks.campaigns(config)[0], utcnow(), wait=PREPARING)
        self.checks.soon(config, 0)

    def current_config(self) -> Config:
        """The config, read again when a file changed since (the local studio): a broken
        config.yaml keeps the last good one and shows its problems."""
        if self.changes is None or self.changes.version == self._config_version:
            return self.config
        with self._lock:
            self._config_version = self.changes.version
            try:
                self.config = load_config(self.config.file)
                self.config_problems = []
            except ProblemsError as exc:
                self.config_problems = exc.problems
        return self.config


def studio(request: Request) -> Studio:
    found: Studio = request.app.state.studio
    return found
