"""Every status a send or an entry can have, and why a send was skipped or deferred: the values
stored in the database, so a member's value never changes (there is no data migration for it).

StrEnum members are plain strings too: they compare equal to what is read back from the database,
bind as text and format as their value."""

from __future__ import annotations

from enum import StrEnum


class SendStatus(StrEnum):
    """Where one send (one step of one entry) is: waiting, in flight, or what became of it."""

    SCHEDULED = "scheduled"
    DEFERRED = "deferred"  # waits again until `next_attempt_at`, with the DeferReason
    SENDING = "sending"  # claimed by a worker: committed before the message leaves
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"  # with the SkipReason
    EXPIRED = "expired"  # still waiting at due + expire_after
    HELD_OUT = "held_out"  # in the campaign's holdout: never sent, counted for the lift
    UNKNOWN = "unknown"  # in flight when its worker stopped: it may or may not have gone out


class EntryStatus(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"  # its last step was sent
    EXITED = "exited"  # an exit event
    STOPPED = "stopped"  # a step skipped for any other reason, or failed
    EXPIRED = "expired"
    HELD_OUT = "held_out"


class SkipReason(StrEnum):
    """Why a due send will never go out, in the order they are checked (campaigns.md)."""

    EXIT = "exit"
    SUPPRESSED = "suppressed"
    UNSUBSCRIBED = "unsubscribed"
    NOT_CONFIRMED = "not_confirmed"
    AUDIENCE = "audience"


class DeferReason(StrEnum):
    """Why a due send waits; a retry is stored as `retry: <the provider's error>`, and so are the
    sender's limits (engine/delivery/ratelimit.py): `rate_limit: <the window>`, `throttled: <error>`."""

    SEND_WINDOW = "send_window"
    QUIET_HOURS = "quiet_hours"
    FREQUENCY_CAP = "frequency_cap"
    RETRY = "retry"
    RATE_LIMIT = "rate_limit"  # sender.rate.per_hour or per_day reached: waits for the window to move on
    THROTTLED = "throttled"  # the provider said to slow down: waits, its try not counted


# Sends a worker may claim once due: never sent, or waiting again.
CLAIMABLE = (SendStatus.SCHEDULED, SendStatus.DEFERRED)
# Sends that have not gone out yet but may: the claimable ones and those in flight (the report's `waiting`).
NOT_YET_OUT = (*CLAIMABLE, SendStatus.SENDING)
# Sends that count towards a frequency cap: sent, or possibly sent.
COUNTED_FOR_CAP = (SendStatus.SENT, SendStatus.SENDING, SendStatus.UNKNOWN)
