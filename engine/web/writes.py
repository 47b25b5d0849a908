"""Group commit for the customer's writes (preference changes, one-click unsubscribes, confirmations).

Each write is small, but on its own it pays for taking the database's write lock, a commit and,
away from SQLite, a thread handoff. Under load, the writes that arrive while one transaction runs
wait for the next, and that one takes them all: one lock, one commit for the lot. A write that
fails must not take the others with it, so a failed batch is run again with each write in its own
savepoint.

On SQLite the batch runs on the event loop itself, as the reads do: it is local work, shorter than
a thread handoff. Only the write lock could make it wait, when another process (a second server
process, the daemon's tick) holds it; so the lock is tried, not waited for, and a batch that
finds it taken sleeps a moment without blocking the loop and tries again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from sqlalchemy.engine import Connection, Engine

from engine.store.dialect import lock_taken, make_engine, on_event_loop

T = TypeVar("T")
LOCK_RETRY = 0.001  # seconds before a batch tries SQLite's write lock again
Outcome = tuple[Any, BaseException | None]  # a write's result, or what it raised


@dataclass
class _Write:
    work: Callable[..., Any]
    args: tuple[Any, ...]
    done: asyncio.Future[Any]


class GroupCommit:
    def __init__(self, engine: Engine):
        self.on_loop = on_event_loop(engine)
        # SQLite: a pool of its own whose connections never wait for the write lock.
        self.engine = (
            make_engine(engine.url.render_as_string(hide_password=False), lock_timeout=0) if self.on_loop else engine
        )
        self.waiting: list[_Write] = []
        self.committing = False
        self.committer: asyncio.Task[None] | None = None  # held, so the loop cannot drop the task midway

    async def __call__(self, work: Callable[..., T], *args: Any) -> T:
        """Runs `work(connection, *args)` in a transaction, shared with the writes waiting beside it;
        returns once that transaction has committed."""
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.waiting.append(_Write(work, args, done))
        if not self.committing:
            self.committing = True
            self.committer = asyncio.create_task(self._commit_waiting())
        return await done

    async def _commit_waiting(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting, []
                try:
                    outcomes = await self._commit(batch)
                except Exception as error:  # the database is gone: every write of the batch fails
                    outcomes = [(None, error)] * len(batch)
                for write, (result, failure) in zip(batch, outcomes, strict=True):
                    if write.done.cancelled():  # the client went away; its write stands
                        continue
                    if failure is None:
                        write.done.set_result(result)
                    else:
                        write.done.set_exception(failure)
        finally:
            self.committing = False

    async def _commit(self, batch: list[_Write]) -> list[Outcome]:
        if not self.on_loop:
            return await anyio.to_thread.run_sync(self._transaction, batch)
        while True:
            try:
                return self._transaction(batch)
            except Exception as error:
                if not lock_taken(error):
                    raise
            await asyncio.sleep(LOCK_RETRY)

    def _transaction(self, batch: list[_Write]) -> list[Outcome]:
        with self.engine.connect() as connection:
            try:
                with connection.begin():
                    return [(_run(connection, write), None) for write in batch]
            except Exception as error:
                if lock_taken(error):
                    raise
            with connection.begin():
                return [_alone(connection, write) for write in batch]


def _run(connection: Connection, write: _Write) -> Any:
    return write.work(connection, *write.args)


def _alone(connection: Connection, write: _Write) -> Outcome:
    """The write in a savepoint of its own: if it fails, only its own changes are undone."""
    try:
        with connection.begin_nested():
            return _run(connection, write), None
    except Exception as error:  # handed to the request that made the write
        return None, error
