"""Writes each message to `<directory>/<send id>.eml`: the embedded default, and a dry outbox. A test send
(`lifecycle send-test`, not in the ledger) gets a name of its own, `test-<UTC time>-<n>.eml`, so that no test
overwrites an earlier one and no test is mistaken for a real send; an alert to the operator (the deliverability
guard's) likewise, `alert-<UTC time>-<n>.eml`."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from engine.config.settings import Config
from engine.mail.message import OutgoingEmail
from engine.mail.previews import PREVIEW_SEND_ID
from engine.senders.base import ALERT_SEND_ID, Sender, SendResult

OUTSIDE_LEDGER = {PREVIEW_SEND_ID: "test", ALERT_SEND_ID: "alert"}  # the file name's prefix for each


class FileSender(Sender):
    name = "file"
    signs = True

    def __init__(self, config: Config):
        super().__init__(config)
        directory = Path(config.sender.file.directory)
        self.directory = directory if directory.is_absolute() else config.root / directory
        self.directory.mkdir(parents=True, exist_ok=True)

    def deliver(self, emails: list[OutgoingEmail]) -> list[SendResult]:
        return [self._write(email) for email in emails]

    def _write(self, email: OutgoingEmail) -> SendResult:
        prefix = OUTSIDE_LEDGER.get(email.send_id)
        final = self._own_file(prefix) if prefix else self.directory / f"{email.send_id}.eml"
        partial = final.with_suffix(".eml.part")
        try:
            partial.write_bytes(email.raw)
            os.replace(partial, final)  # a reader never sees half a message
        except OSError as exc:
            partial.unlink(missing_ok=True)
            return SendResult(email.send_id, ok=False, error=f"cannot write {final}: {exc}", transient=True)
        return SendResult(email.send_id, ok=True, message_id=email.message_id)

    def _own_file(self, prefix: str) -> Path:
        """The first free `<prefix>-<UTC time>-<n>.eml`: messages written within the same second each keep
        their file."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        n = 1
        while (self.directory / f"{prefix}-{stamp}-{n}.eml").exists():
            n += 1
        return self.directory / f"{prefix}-{stamp}-{n}.eml"
