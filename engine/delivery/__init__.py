"""From entries to delivered messages, and what became of them: evaluation (who enters a campaign),
the ledger (every status change), the tick (evaluate, decide, claim, render, send, record),
outcomes reported by providers, bounces read from the bounce mailbox, the workers registry and
the daemon that runs ticks; and why a customer does or does not get a campaign now (`why`), read
from the same rules.

May import: every core package above it (`config`, `store`, `campaigns`, `customers`, `mail`,
`senders`); never `engine.web` or `engine.cli`."""
