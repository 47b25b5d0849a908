"""The rule for `public_url` (interfaces.md): links in marketing email, the one-click unsubscribe
above all (RFC 8058), must reach the web service over https on a host the recipient can reach.
For local demos and tests, `LIFECYCLE_INSECURE_PUBLIC_URL=1` in the environment lets an http or
loopback URL through, with a warning."""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

from engine.config.settings import Config
from engine.errors import Problem

INSECURE_ENV = "LIFECYCLE_INSECURE_PUBLIC_URL"


def insecure_reason(url: str) -> str | None:
    """Why a URL is no place for a recipient's links, or None when it is https on a public host."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        return "is not https://"
    host = (parts.hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost") or "." not in host.strip("[]"):
        return f"is on {host or 'no host'}, which no recipient can reach"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return None if address.is_global else f"is on {host}, which is not a public address"


def insecure_allowed() -> bool:
    return os.environ.get(INSECURE_ENV) == "1"


def public_url_problems(config: Config, marketing: bool) -> list[Problem]:
    """The problem `validate` reports when marketing campaigns exist and public_url fails the rule."""
    reason = insecure_reason(config.public_url) if marketing else None
    if reason is None or insecure_allowed():
        return []
    message = (
        f"public_url: '{config.public_url}' {reason}; marketing email needs an https:// address on a public host "
        f"for its unsubscribe links (RFC 8058). For a local demo or tests, set {INSECURE_ENV}=1 in the environment"
    )
    return [config.problem(("public_url",), message)]


def public_url_warning(config: Config, marketing: bool) -> str | None:
    """What `validate` says when the escape hatch let an insecure public_url through."""
    reason = insecure_reason(config.public_url) if marketing else None
    if reason is None or not insecure_allowed():
        return None
    return (
        f"warning: public_url '{config.public_url}' {reason}; allowed because {INSECURE_ENV}=1: "
        "the links in marketing email will not work for real recipients"
    )
