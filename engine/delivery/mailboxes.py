"""The bounce mailbox: an IMAP folder or a local Maildir, read one message at a time.

Each message read is then either `done` (moved to `bounces.processed_folder`, or deleted when that
is null) or `rejected` (moved to `bounces.error_folder` for an operator to look at), so a later pass
never reads it again. A pass that stops half-way leaves the rest where they were; a message read
twice (a crash between recording it and moving it) is recorded once, by its event id."""

from __future__ import annotations

import imaplib
import mailbox
import os
import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from engine.config.settings import BounceImap, Bounces, Config
from engine.errors import ConfigError, LifecycleError


class MailboxUnreachable(LifecycleError):
    """The bounce mailbox cannot be opened now: the pass is tried again next time."""


@dataclass(frozen=True)
class Stored:
    """One message of the mailbox: its key there and its bytes."""

    key: str
    raw: bytes


class Mailbox(Protocol):
    name: str

    def __enter__(self) -> Self: ...

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None: ...

    def messages(self) -> Iterator[Stored]: ...

    def done(self, message: Stored) -> None: ...

    def reject(self, message: Stored) -> None: ...


def open_mailboxes(config: Config) -> list[Mailbox]:
    """The configured bounce mailboxes (IMAP, Maildir or both), not yet connected."""
    settings = config.bounces
    if settings is None or (settings.imap is None and settings.maildir is None):
        raise ConfigError(
            [
                config.problem(
                    ("bounces",),
                    "bounces: no mailbox to read: set bounces.imap (host, username, password_env) "
                    "or bounces.maildir (path)",
                )
            ]
        )
    boxes: list[Mailbox] = []
    if settings.imap is not None:
        boxes.append(ImapMailbox(settings, settings.imap, _imap_password(config, settings.imap)))
    if settings.maildir is not None:
        boxes.append(MaildirMailbox(settings, config.root / settings.maildir.path))
    return boxes


def _imap_password(config: Config, imap: BounceImap) -> str:
    password = os.environ.get(imap.password_env)
    if password is None:
        raise ConfigError(
            [
                config.problem(
                    ("bounces", "imap", "password_env"),
                    f"bounces.imap.password_env: the environment variable {imap.password_env} is not set; "
                    f"it holds the IMAP password of {imap.username}",
                )
            ]
        )
    return password


def tls_context() -> ssl.SSLContext:
    """The system's trusted CAs with hostname checks (a function so tests can trust their own CA)."""
    return ssl.create_default_context()


def quoted(folder: str) -> str:
    """A folder name as an IMAP quoted string (names may hold spaces)."""
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapMailbox:
    """A folder on an IMAP server (imaplib): UID SEARCH, FETCH BODY.PEEK[], then MOVE (RFC 6851) or
    COPY and delete where the server lacks MOVE."""

    def __init__(self, settings: Bounces, imap: BounceImap, password: str):
        self.settings, self.imap, self.password = settings, imap, password
        self.name = f"imap://{imap.username}@{imap.host}/{imap.folder}"
        self.connection: imaplib.IMAP4 | None = None
        self.created: set[str] = set()
        self.moves = False

    def __enter__(self) -> Self:
        imap = self.imap
        port = imap.port or (993 if imap.ssl else 143)
        try:
            if imap.ssl:
                connection: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    imap.host, port, ssl_context=tls_context(), timeout=imap.timeout
                )
            else:
                connection = imaplib.IMAP4(imap.host, port, timeout=imap.timeout)
            self.connection = connection
            if imap.starttls and not imap.ssl:
                connection.starttls(ssl_context=tls_context())
            connection.login(imap.username, self.password)
            _, capabilities = connection.capability()
            self.moves = b"MOVE" in b" ".join(c for c in capabilities if isinstance(c, bytes)).upper().split()
            status, answer = connection.select(quoted(imap.folder))
            if status != "OK":
                raise MailboxUnreachable(f"{self.name}: cannot open the folder: {_said(answer)}")
        except (imaplib.IMAP4.error, OSError) as exc:
            self._drop()
            raise MailboxUnreachable(f"{self.name} on port {port}: {exc or type(exc).__name__}") from exc
        except MailboxUnreachable:
            self._drop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self.connection is None:
            return
        with suppress(imaplib.IMAP4.error, OSError):
            self.connection.expunge()
            self.connection.logout()
        self._drop()

    def messages(self) -> Iterator[Stored]:
        with self._talking("cannot list the messages"):
            _, found = self._connected().uid("SEARCH", "UNDELETED")
        for uid in (found[0] or b"").decode().split():
            with self._talking(f"cannot read message {uid}"):
                status, data = self._connected().uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next((part[1] for part in data if isinstance(part, tuple)), None)
            if status == "OK" and isinstance(raw, bytes):  # None: gone since the search (another reader)
                yield Stored(uid, raw)

    def done(self, message: Stored) -> None:
        with self._talking(f"cannot move message {message.key} out of {self.imap.folder}"):
            if self.settings.processed_folder is None:
                self._delete(message.key)
            else:
                self._move(message.key, self.settings.processed_folder)

    def reject(self, message: Stored) -> None:
        with self._talking(f"cannot move message {message.key} to {self.settings.error_folder}"):
            self._move(message.key, self.settings.error_folder)

    @contextmanager
    def _talking(self, doing: str) -> Iterator[None]:
        """A connection lost or refused mid-pass stops the pass with one line; what is left stays put."""
        try:
            yield
        except (imaplib.IMAP4.error, OSError) as exc:
            self._drop()
            raise MailboxUnreachable(f"{self.name}: {doing}: {exc or type(exc).__name__}") from exc

    def _move(self, uid: str, folder: str) -> None:
        connection = self._connected()
        if folder not in self.created:
            connection.create(quoted(folder))  # NO when it exists already: fine
            self.created.add(folder)
        if self.moves:
            status, answer = connection.uid("MOVE", uid, quoted(folder))
        else:
            status, answer = connection.uid("COPY", uid, quoted(folder))
            if status == "OK":
                self._delete(uid)
        if status != "OK":
            raise MailboxUnreachable(f"{self.name}: cannot move message {uid} to {folder}: {_said(answer)}")

    def _delete(self, uid: str) -> None:
        self._connected().uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)")

    def _connected(self) -> imaplib.IMAP4:
        if self.connection is None:
            raise MailboxUnreachable(f"{self.name}: not connected")
        return self.connection

    def _drop(self) -> None:
        if self.connection is not None:
            with suppress(OSError):
                self.connection.shutdown()
            self.connection = None


class MaildirMailbox:
    """A local Maildir (the stdlib's `mailbox`); the folders are Maildir++ subfolders (`.Processed`),
    as Dovecot and Courier keep them."""

    def __init__(self, settings: Bounces, path: Path):
        self.settings, self.path = settings, path
        self.name = f"maildir {path}"
        self.box: mailbox.Maildir | None = None

    def __enter__(self) -> Self:
        if not (self.path / "new").is_dir() or not (self.path / "cur").is_dir():
            raise MailboxUnreachable(f"{self.name}: not a Maildir (no new/ and cur/ folders in it)")
        self.box = mailbox.Maildir(self.path, factory=None, create=False)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.box = None

    def messages(self) -> Iterator[Stored]:
        box = self._box()
        for key in sorted(box.keys()):
            try:
                raw = box.get_bytes(key)
            except KeyError:  # gone since the listing (another reader)
                continue
            except OSError as exc:
                raise MailboxUnreachable(f"{self.name}: cannot read message {key}: {exc}") from exc
            yield Stored(key, raw)

    def done(self, message: Stored) -> None:
        if self.settings.processed_folder is not None:
            self._move(message, self.settings.processed_folder)
            return
        try:
            self._box().discard(message.key)
        except OSError as exc:
            raise MailboxUnreachable(f"{self.name}: cannot delete message {message.key}: {exc}") from exc

    def reject(self, message: Stored) -> None:
        self._move(message, self.settings.error_folder)

    def _move(self, message: Stored, folder: str) -> None:
        box = self._box()
        try:
            try:
                target = box.get_folder(folder)
            except mailbox.NoSuchMailboxError:
                target = box.add_folder(folder)
            target.add(message.raw)
            box.discard(message.key)
        except OSError as exc:
            raise MailboxUnreachable(f"{self.name}: cannot move message {message.key} to {folder}: {exc}") from exc

    def _box(self) -> mailbox.Maildir:
        if self.box is None:
            raise MailboxUnreachable(f"{self.name}: not open")
        return self.box


def _said(answer: list[Any]) -> str:
    text = b" ".join(a for a in answer if isinstance(a, bytes)).decode("utf-8", "replace")
    return re.sub(r"\s+", " ", text).strip() or "no reason given"
