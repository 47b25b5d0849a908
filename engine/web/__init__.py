"""The web service (`lifecycle serve`): preference centre, one-click unsubscribe, double opt-in,
ingest API, SendGrid Event Webhook, dashboard, health and metrics. It calls the core; the core
never imports it."""

from ..config import load_config
from .app import create_app


def from_environment():
    """The app for `$LIFECYCLE_CONFIG`: what each of several server processes builds for itself."""
    return create_app(load_config())


__all__ = ["create_app", "from_environment"]
