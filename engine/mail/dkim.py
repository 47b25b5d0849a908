"""DKIM signatures (RFC 6376) on the bytes the SMTP and file senders emit: one signature per
`dkim:` entry of config.yaml, RSA (`rsa-sha256`) or Ed25519 (`ed25519-sha256`, RFC 8463), both
header and body canonicalised `relaxed`.

The signer is written here rather than taken from dkimpy (which the tests verify with): dkimpy
signs RSA in pure Python, about 7.5 ms a message on the development machines, fifteen times a
whole render. Here OpenSSL (through `cryptography`) signs, the keys are parsed once when the
sender starts, and the canonical forms are cut from the message the engine itself wrote (one
header a field, one body for every key), so a signature costs what the bench measures
(bench/tick_welcome.py): mostly the private-key operation itself.

Providers that take structured API payloads (SendGrid, Postmark, Mailgun) and Amazon SES sign
with the keys set up in their own consoles, so only senders that emit these bytes as they are sign
(`Sender.signs`)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from engine.config.settings import Config
from engine.errors import ConfigError, Problem

# Signed when present, so that none of them can be altered or added on the way (List-Unsubscribe
# above all: a receiver only offers one-click unsubscribing on a signed one).
SIGNED = (
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-id",
    "feedback-id",
    "auto-submitted",
    "mime-version",
    "content-type",
)
MIN_RSA_BITS = 1024  # RFC 8301: shorter keys must not be used; 2048 is what to choose
WSP = re.compile(rb"[ \t]+")
SPACES = re.compile(rb"  +")
SIGNATURE_CHUNK = 72  # characters of b= a line: the DKIM-Signature field stays within 78
FOLD_AT = 78


@dataclass(frozen=True)
class Key:
    domain: str
    selector: str
    private: RSAPrivateKey | Ed25519PrivateKey

    @property
    def algorithm(self) -> str:
        return "rsa-sha256" if isinstance(self.private, RSAPrivateKey) else "ed25519-sha256"

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.private, RSAPrivateKey):
            return self.private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return self.private.sign(hashlib.sha256(data).digest())  # RFC 8463: Ed25519 over the SHA-256 hash


def load_keys(config: Config) -> tuple[list[Key], list[Problem]]:
    """Every `dkim:` entry's key from its environment variable, or a problem naming the entry."""
    keys, problems = [], []
    for index, entry in enumerate(config.dkim):
        where = ("dkim", index, "private_key_env")
        label = f"dkim[{index}].private_key_env"
        pem = os.environ.get(entry.private_key_env)
        if not pem:
            problems.append(
                config.problem(
                    where,
                    f"{label}: the environment variable {entry.private_key_env} is not set; it holds the "
                    f"private key (RSA or Ed25519, PEM) of selector {entry.selector} for {entry.domain}",
                )
            )
            continue
        try:
            private = load_pem_private_key(pem.encode(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            problems.append(
                config.problem(
                    where,
                    f"{label}: {entry.private_key_env} does not hold an unencrypted PEM private key ({reason}); "
                    "write one like `openssl genpkey -algorithm ed25519` prints",
                )
            )
            continue
        if not isinstance(private, (RSAPrivateKey, Ed25519PrivateKey)):
            problems.append(
                config.problem(
                    where, f"{label}: {entry.private_key_env} holds a key DKIM cannot use: use RSA or Ed25519"
                )
            )
        elif isinstance(private, RSAPrivateKey) and private.key_size < MIN_RSA_BITS:
            problems.append(
                config.problem(
                    where,
                    f"{label}: {entry.private_key_env} is a {private.key_size}-bit RSA key; receivers ignore "
                    f"signatures by keys under {MIN_RSA_BITS} bits: use 2048",
                )
            )
        else:
            keys.append(Key(entry.domain, entry.selector, private))
    return keys, problems


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4: runs of spaces and tabs as one space, none at a line's end, no empty lines at the end.
    Without tabs (quoted-printable and base64 parts have none) only runs of two spaces or more
    change, and a pattern that begins with two spaces is found five times faster than any space."""
    body = (WSP if b"\t" in body else SPACES).sub(b" ", body)
    body = body.replace(b" \r\n", b"\r\n").rstrip(b"\r\n").rstrip(b" ")
    return body + b"\r\n" if body else b""


def relaxed_fields(head: bytes) -> dict[str, bytes]:
    """RFC 6376 3.4.2, each field by its lower-cased name (the last one of a name, which a verifier takes first)."""
    fields: dict[str, bytes] = {}
    for field in re.split(rb"\r\n(?![ \t])", head):
        name, _, value = field.partition(b":")
        lowered = name.strip().lower()
        fields[lowered.decode("ascii", "replace")] = (
            lowered + b":" + WSP.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ") + b"\r\n"
        )
    return fields


class Signer:
    """Signs messages with every configured key; made once per sender."""

    def __init__(self, keys: list[Key]):
        self.keys = keys

    @classmethod
    def of(cls, config: Config) -> Signer | None:
        """The signer of `config.dkim`, None when there is none; a missing or bad key fails at start."""
        if not config.dkim:
            return None
        keys, problems = load_keys(config)
        if problems:
            raise ConfigError(problems)
        return cls(keys)

    def sign(self, raw: bytes) -> bytes:
        """The message with one DKIM-Signature field a key on top."""
        head, _, body = raw.partition(b"\r\n\r\n")
        body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode("ascii")
        fields = relaxed_fields(head)
        names = [name for name in SIGNED if name in fields]
        signed = b"".join(fields[name] for name in names)
        now = int(time.time())
        signatures = []
        for key in self.keys:
            tags = "\r\n ".join(
                [
                    f"v=1; a={key.algorithm}; c=relaxed/relaxed;",
                    f"d={key.domain}; s={key.selector}; t={now};",
                    *_folded_names(names),
                    f"bh={body_hash};",
                    "b=",
                ]
            )
            # The field as signed: relaxed, with b= empty (RFC 6376 3.7).
            canonical = b"dkim-signature:" + WSP.sub(b" ", tags.replace("\r\n", "").encode()).strip(b" ")
            value = base64.b64encode(key.sign(signed + canonical)).decode("ascii")
            chunks = [value[i : i + SIGNATURE_CHUNK] for i in range(0, len(value), SIGNATURE_CHUNK)]
            signatures.append("\r\n ".join([f"DKIM-Signature: {tags}", *chunks]).encode("ascii") + b"\r\n")
        return b"".join(signatures) + raw


def _folded_names(names: list[str]) -> list[str]:
    """`h=` over lines of at most 78 characters, folded after a colon (RFC 6376 allows FWS there)."""
    lines = ["h="]
    for name in names:
        if len(lines[-1]) + len(name) + 2 > FOLD_AT:
            lines.append("")
        lines[-1] += name + ":"
    lines[-1] = lines[-1].removesuffix(":") + ";"
    return lines
