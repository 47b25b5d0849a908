"""The envelope sender of SMTP messages (MAIL FROM, which the receiving server keeps as Return-Path and
sends bounces to), and, with VERP, the send a bounce is about.

With `bounces.verp` each message goes out from `bounces+<send id>-<signature>@domain`: a bounce
comes back to that address even when it quotes nothing of the original message. The signature is a
short HMAC of the send id with the secret that signs links, so a message forged to name another
send is told apart; old secrets still accepted for links are accepted here too."""

from __future__ import annotations

import hashlib
import hmac
import re

from engine.config.settings import Config

SIGNATURE_LENGTH = 10  # hex digits: 40 bits, more than anyone can guess by mailing bounces
VERP = re.compile(rf"(?P<base>.+)\+(?P<send>[0-9]{{1,18}})-(?P<signature>[0-9a-f]{{{SIGNATURE_LENGTH}}})")


def signature(secret: str, send_id: int) -> str:
    mac = hmac.new(secret.encode(), f"lifecycle.bounce.{send_id}".encode(), hashlib.sha256)
    return mac.hexdigest()[:SIGNATURE_LENGTH]


class ReturnPaths:
    """MAIL FROM for each send: `bounces.address` (with VERP, carrying the send), or None to use From.
    The secret is read once, when the sender is made: a missing one fails at start, not mid-batch."""

    def __init__(self, config: Config):
        self.address = config.bounces.address if config.bounces else None
        self.secret = config.secret_keys()[0] if config.bounces and config.bounces.verp else None

    def for_send(self, send_id: int) -> str | None:
        if self.address is None or self.secret is None:
            return self.address
        local, _, domain = self.address.rpartition("@")
        return f"{local}+{send_id}-{signature(self.secret, send_id)}@{domain}"


def read_verp(config: Config, address: str) -> tuple[int, bool] | None:
    """(send id, whether its signature is genuine) for an address of the VERP form on the bounce
    address; None for any other address."""
    if config.bounces is None:
        return None
    local, _, domain = address.strip().lower().rpartition("@")
    base_local, _, base_domain = config.bounces.address.lower().rpartition("@")
    found = VERP.fullmatch(local)
    if found is None or found["base"] != base_local or domain != base_domain:
        return None
    send_id = int(found["send"])
    signed = any(hmac.compare_digest(found["signature"], signature(key, send_id)) for key in config.secret_keys())
    return send_id, signed
