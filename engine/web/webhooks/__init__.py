"""Providers' event webhooks, one module a provider. Each says how to tell that a post is really
the provider's and how to parse it into provider-neutral events (engine/delivery/events.py);
`flow.endpoint` does the rest the same way for all: verify, parse, record. Replaying a post changes
nothing."""

from starlette.routing import Route

from engine.web.webhooks import mailgun, postmark, sendgrid, ses
from engine.web.webhooks.flow import endpoint

routes = [
    Route("/webhooks/sendgrid", endpoint("SendGrid", sendgrid.verify, sendgrid.parse), methods=["POST"]),
    Route("/webhooks/postmark", endpoint("Postmark", postmark.verify, postmark.parse), methods=["POST"]),
    Route("/webhooks/ses", endpoint("SNS", ses.verify, ses.parse), methods=["POST"]),
    Route("/webhooks/mailgun", endpoint("Mailgun", mailgun.verify, mailgun.parse), methods=["POST"]),
]
