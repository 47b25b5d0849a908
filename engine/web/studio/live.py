"""Live reload for `lifecycle studio`: the campaign, template and config files are watched
(watchfiles, which asks the operating system rather than polling), and each change is pushed to
every open page as a server-sent event; the page then fetches itself again and swaps its content
in place, so a marketer sees an edit without reloading. `lifecycle serve` has none of this: a
server's files change by deployment, not by editing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from watchfiles import Change, awatch

HEARTBEAT = 15.0  # seconds between comments that keep idle connections (and proxies) open
DEBOUNCE_MS = 50  # an editor's save is often several writes: gather those that come together


class Changes:
    """A counter of changes seen, and a way to wait for the next one."""

    def __init__(self) -> None:
        self.version = 0
        self.changed: list[str] = []
        self._condition = asyncio.Condition()

    async def announce(self, paths: list[str]) -> None:
        async with self._condition:
            self.version += 1
            self.changed = paths
            self._condition.notify_all()

    async def after(self, version: int, timeout: float) -> int:
        """The version once it passes `version`, or as it is after `timeout` seconds."""
        async with self._condition:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._condition.wait_for(lambda: self.version > version), timeout)
            return self.version


async def watch(changes: Changes, paths: list[Path], root: Path, stop: asyncio.Event) -> None:
    """Announces every change under `paths` until `stop` is set. Editors' swap and backup files
    (`.name.swp`, `name~`) are not the marketer's content."""
    watched = [str(p) for p in paths if p.exists()]
    async for batch in awatch(*watched, stop_event=stop, debounce=DEBOUNCE_MS, step=20, recursive=True):
        names = sorted({_shown(Path(path), root) for kind, path in batch if _content(Path(path), kind)})
        if names:
            await changes.announce(names)


def _content(path: Path, kind: Change) -> bool:
    return not (path.name.startswith(".") or path.name.endswith(("~", ".swp", ".tmp")))


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


async def events(request: Request, changes: Changes) -> Response:
    """`GET /studio/events`: `event: change` with the changed files, each time files change."""

    async def stream() -> AsyncIterator[str]:
        seen = changes.version
        yield "retry: 500\n\n"
        while True:
            now = await changes.after(seen, HEARTBEAT)
            if now == seen:
                yield ": still here\n\n"
                continue
            seen = now
            yield f"event: change\ndata: {' '.join(changes.changed)}\nid: {now}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"cache-control": "no-store"})
