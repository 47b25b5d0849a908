"""Senders, chosen by `sender.backend`: a built-in name or `package.module:Class`."""

from __future__ import annotations

from importlib import import_module

from engine.config.settings import Config
from engine.errors import ConfigError
from engine.senders.base import Sender, SendResult, Unreachable

BUILT_IN = {
    "file": "engine.senders.file:FileSender",
    "null": "engine.senders.null:NullSender",
    "smtp": "engine.senders.smtp:SmtpSender",
    "sendgrid": "engine.senders.sendgrid:SendgridSender",
    "postmark": "engine.senders.postmark:PostmarkSender",
    "ses": "engine.senders.ses:SesSender",
    "mailgun": "engine.senders.mailgun:MailgunSender",
}


def load_sender(config: Config) -> Sender:
    target = BUILT_IN.get(config.sender.backend, config.sender.backend)
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(
            [
                config.problem(
                    ("sender", "backend"),
                    f"sender.backend: '{config.sender.backend}' is not {', '.join(BUILT_IN)} "
                    "or an importable package.module:Class",
                )
            ]
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Sender)):
        raise ConfigError(
            [
                config.problem(
                    ("sender", "backend"), f"sender.backend: {target} is not a subclass of engine.senders.Sender"
                )
            ]
        )
    return cls(config)


__all__ = ["SendResult", "Sender", "Unreachable", "load_sender"]
