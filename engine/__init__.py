"""lifecycle: an automated lifecycle email engine.

Follow a message from `campaigns/*.yaml` to a delivered email, one package a step:

    config/     config.yaml as typed settings; YAML with positions; durations
    store/      the tables, the differences between SQLite and PostgreSQL, migrations, tallies
    campaigns/  the campaign language and what it means in SQL (conditions, measures, A/B shares)
    customers/  importing customers and events, their own choices, suppressions, sample data
    mail/       templates rendered per recipient, the message built, signed links, previews, checks
    senders/    one small base class; one module a provider
    delivery/   statuses, evaluation, the ledger, the send-time policy, the tick, outcomes,
                workers and the daemon; why a customer gets a campaign or not
    insights/   the report: its queries, table and HTML; one customer's timeline
    web/        the HTTP service
    cli.py      the command line

Imports point down this list and never up: `web` and `cli` call the core; nothing in the core
imports them. `errors`, `clock` and `metrics` are used by every layer.
"""
