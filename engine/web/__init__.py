"""The web service (`lifecycle serve`): preference centre, one-click unsubscribe, double opt-in,
ingest API, SendGrid Event Webhook, health and metrics. It calls the core; the core never
imports it."""

from .app import create_app

__all__ = ["create_app"]
