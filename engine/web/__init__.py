"""The web service (`lifecycle serve`): preference centre, one-click unsubscribe, double opt-in,
ingest API, SendGrid Event Webhook, dashboard, health and metrics. It calls the core; the core
never imports it."""

import gc

from granian.utils.proxies import wrap_asgi_with_proxy_headers
from starlette.types import ASGIApp

from engine.config.settings import load_config
from engine.web.app import create_app


def behind_proxy() -> ASGIApp:
    """The app for `$LIFECYCLE_CONFIG`, what each server process builds for itself. A proxy on the
    same machine (TLS in front) is trusted for X-Forwarded-Proto and -For, so that cookies are
    marked Secure and HSTS is sent over https.

    What is built at start lives as long as the process, so it is frozen out of the cyclic garbage
    collector's reach: full collections walking it were the tail of the one-click POST under load
    (bench/web_latency.py: p99 from about 160 ms to 70 ms)."""
    app: ASGIApp = wrap_asgi_with_proxy_headers(create_app(load_config()), trusted_hosts="127.0.0.1")
    gc.freeze()
    return app


__all__ = ["behind_proxy", "create_app"]
