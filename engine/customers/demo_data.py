"""The sample store that `lifecycle demo` loads.

`lifecycle demo` lets a new user see the engine work at once: after it, `lifecycle tick`,
`preview` and `report` have a realistic store to act on, and every example campaign shipped in
`campaigns/` finds recipients at `now`. This module only builds that store as plain data, in the
shape of the JSONL import files (`lifecycle import customers` / `events`), so that the demo goes
through exactly the same import path as real data. It is pure and deterministic for a seed: no
database, no clock (the caller passes `now`), standard library only.

The mix, per 100 customers (about 30% Arabic-speaking, the rest English-speaking):

- prospects who never bought, current customers (1-4 purchases) and loyal ones (5+ purchases
  within 365 days), active within the last few weeks;
- signups within the last hour, some not yet confirmed (confirmation, welcome) and others in
  the last ten days (the welcome drip);
- purchases within the last day (thanks) and 3-6 days ago (feedback request), plus low feedback
  scores within the last day (feedback alert);
- customers whose last activity was 30-32 days ago (inactive nudge), 33-89 days ago, 90-92 days
  ago (win-back) and longer ago (lost);
- reward points, some expiring 11-13 days after `now` (the reward reminder, 14 days before);
- a few `complaint` events (red risk) and a few customers who opted out of a topic.
"""

from __future__ import annotations

import random
import re
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["sample_customers", "sample_events"]

# Profiles, with how many of every 100 customers follow each one.
_PROFILE_WEIGHTS = {
    "just_signed_up": 4,  # signed up within the last hour
    "new": 6,  # signed up 1-10 days ago
    "prospect": 12,  # active, never purchased
    "current": 24,  # active, 1-4 purchases
    "buyer_today": 4,  # a purchase within the last day
    "buyer_days_ago": 4,  # a purchase 3-6 days ago
    "unhappy": 2,  # a purchase some days ago and a low feedback score within the last day
    "loyal": 12,  # 5+ purchases within 365 days, active
    "nudge": 6,  # last activity 30-32 days ago
    "inactive": 8,  # last activity 33-89 days ago
    "winback": 4,  # last activity 90-92 days ago
    "lost": 14,  # last activity 93+ days ago
}


def _profile_table() -> list[str]:
    """The 100 profile slots, interleaved (smooth weighted round robin) so any prefix is mixed."""
    current = dict.fromkeys(_PROFILE_WEIGHTS, 0)
    total = sum(_PROFILE_WEIGHTS.values())
    table = []
    for _ in range(total):
        for name, weight in _PROFILE_WEIGHTS.items():
            current[name] += weight
        best = max(current, key=lambda name: current[name])
        current[best] -= total
        table.append(best)
    return table


_PROFILES = _profile_table()

_EN_FIRST = [
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Amelia",
    "Oliver",
    "Sophia",
    "Elijah",
    "Isla",
    "James",
    "Ava",
    "William",
    "Mia",
    "Henry",
    "Grace",
    "Lucas",
    "Chloe",
    "Jack",
    "Ella",
    "Thomas",
    "Emily",
    "George",
    "Harper",
    "Samuel",
    "Lily",
    "Daniel",
    "Zoe",
    "Arthur",
    "Ruby",
    "Leo",
]
_EN_LAST = [
    "Smith",
    "Johnson",
    "Brown",
    "Taylor",
    "Wilson",
    "Davies",
    "Evans",
    "Walker",
    "Wright",
    "Thompson",
    "White",
    "Hughes",
    "Edwards",
    "Green",
    "Hall",
    "Wood",
    "Harris",
    "Clarke",
    "Jackson",
    "Turner",
    "Martin",
    "Cooper",
    "Hill",
    "Ward",
    "Morris",
    "Moore",
    "Clark",
    "Baker",
]
# (Arabic script, Latin transliteration used for the email address)
_AR_FIRST = [
    ("ليلى", "layla"),
    ("محمد", "mohammed"),
    ("فاطمة", "fatima"),
    ("أحمد", "ahmed"),
    ("نور", "nour"),
    ("يوسف", "youssef"),
    ("مريم", "maryam"),
    ("عمر", "omar"),
    ("سارة", "sara"),
    ("خالد", "khaled"),
    ("هدى", "huda"),
    ("علي", "ali"),
    ("ريم", "reem"),
    ("حسن", "hassan"),
    ("لينا", "lina"),
    ("طارق", "tariq"),
    ("دينا", "dina"),
    ("كريم", "karim"),
    ("سلمى", "salma"),
    ("زياد", "ziad"),
    ("أمل", "amal"),
    ("ياسر", "yasser"),
    ("رنا", "rana"),
    ("مصطفى", "mustafa"),
]
_AR_LAST = [
    ("حداد", "haddad"),
    ("الأحمد", "alahmad"),
    ("منصور", "mansour"),
    ("السيد", "elsayed"),
    ("الخطيب", "alkhatib"),
    ("عبد الله", "abdullah"),
    ("الشمري", "alshammari"),
    ("المصري", "almasri"),
    ("القحطاني", "alqahtani"),
    ("حسين", "hussein"),
    ("النجار", "alnajjar"),
    ("إبراهيم", "ibrahim"),
    ("العتيبي", "alotaibi"),
    ("سالم", "salem"),
    ("الزعبي", "alzoubi"),
    ("يوسف", "youssef"),
    ("الحربي", "alharbi"),
    ("عيسى", "issa"),
    ("فرح", "farah"),
]
_EN_TIMEZONES = [
    "Europe/London",
    "Europe/London",
    "America/New_York",
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "Europe/Dublin",
    "Australia/Sydney",
    "UTC",
    "UTC",
]
_AR_TIMEZONES = [
    "Asia/Riyadh",
    "Asia/Riyadh",
    "Asia/Dubai",
    "Asia/Dubai",
    "Africa/Cairo",
    "Africa/Cairo",
    "Asia/Amman",
    "Asia/Kuwait",
    "Asia/Qatar",
    "Africa/Casablanca",
]
# (English name, Arabic name) of the demo store's products
_PRODUCTS = [
    ("Espresso beans", "حبوب الإسبريسو"),
    ("Green tea", "الشاي الأخضر"),
    ("Ceramic mug", "الكوب الخزفي"),
    ("Pour-over kettle", "إبريق التقطير"),
    ("Coffee grinder", "مطحنة القهوة"),
    ("Cold brew kit", "عدة القهوة الباردة"),
    ("Dark chocolate", "الشوكولاتة الداكنة"),
    ("Travel tumbler", "كوب السفر"),
]
_PLANS = ["free"] * 6 + ["pro"] * 3 + ["business"]
_LOW_SCORE_COMMENTS = {
    "en": [
        "The parcel arrived two days late.",
        "The mug was chipped when it arrived.",
        "Hard to find the order status in my account.",
        "Good product, but the delivery cost too much.",
        "",
    ],
    "ar": [
        "وصل الطرد متأخراً يومين.",
        "وصل الكوب مكسوراً من الحافة.",
        "صعب أن أجد حالة الطلب في حسابي.",
        "منتج جيد لكن التوصيل كان مكلفاً.",
        "",
    ],
}
_HIGH_SCORE_COMMENTS = {
    "en": ["Great, thanks!", "Fast delivery.", "Lovely packaging.", ""],
    "ar": ["رائع، شكراً!", "توصيل سريع.", "تغليف جميل.", ""],
}


def _utc(now: datetime) -> datetime:
    """`now` in UTC, to the second; a naive `now` is taken as UTC."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.astimezone(UTC).replace(microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _index(customer_id: str) -> int:
    digits = re.sub(r"\D", "", customer_id)
    return int(digits) if digits else zlib.crc32(customer_id.encode())


def _rng(seed: int, customer_id: str, purpose: str) -> random.Random:
    return random.Random(f"lifecycle-demo:{seed}:{customer_id}:{purpose}")


def _between(rng: random.Random, start: datetime, end: datetime) -> datetime:
    """A whole second in [start, end]."""
    span = max(0, int((end - start).total_seconds()))
    return start + timedelta(seconds=rng.randint(0, span))


def _ago(rng: random.Random, now: datetime, low: timedelta, high: timedelta) -> datetime:
    return _between(rng, now - high, now - low)


DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


class _Plan:
    """Everything about one sample customer, derived from (seed, id, now) alone."""

    def __init__(self, customer_id: str, now: datetime, seed: int):
        index = _index(customer_id)
        self.id = customer_id
        self.profile = _PROFILES[(index - 1 + seed) % len(_PROFILES)]
        rng = _rng(seed, customer_id, "plan")
        self.locale = "ar" if rng.random() < 0.3 else "en"
        # Times: signup, the last activity, the purchases and logins in between.
        self.created_at, self.last_activity, purchases, recent_purchase = self._timeline(rng, now)
        self.confirmed_at = self._confirmation(rng, now)
        product_names = [pair[1] if self.locale == "ar" else pair[0] for pair in _PRODUCTS]
        self.favourite_product = rng.choice(product_names)
        self.purchases = []  # (at, order_id, total, product)
        for number, at in enumerate(sorted(purchases), start=1):
            product = self.favourite_product if rng.random() < 0.6 else rng.choice(product_names)
            total = round(rng.uniform(9, 160) * (1.3 if self.profile == "loyal" else 1.0), 2)
            self.purchases.append((at, f"{customer_id.upper()}-{number:02d}", total, product))
        self.recent_purchase = recent_purchase

    def _timeline(self, rng: random.Random, now: datetime) -> tuple[datetime, datetime, list[datetime], bool]:
        """(created_at, last activity, purchase times, fresh): `fresh` when the last purchase is
        the recent one this profile exists for (it gets no survey answer yet)."""
        profile = self.profile
        purchases: list[datetime] = []
        if profile == "just_signed_up":
            created = _ago(rng, now, 3 * MINUTE, 55 * MINUTE)
            return created, created, purchases, False
        if profile == "new":
            created = _ago(rng, now, DAY, 10 * DAY)
            last = _ago(rng, now, HOUR, max(2 * HOUR, now - created - 7 * HOUR))
            if rng.random() < 0.3:
                purchases.append(last)
            return created, last, purchases, False
        if profile in ("buyer_today", "buyer_days_ago", "unhappy"):
            created = _ago(rng, now, 30 * DAY, 500 * DAY)
            if profile == "buyer_today":
                last = _ago(rng, now, 70 * MINUTE, 22 * HOUR)
            else:
                low, high = (3 * DAY + 2 * HOUR, 5 * DAY + 12 * HOUR)
                if profile == "unhappy":
                    low, high = 4 * DAY, 6 * DAY
                last = _ago(rng, now, low, high)
            earlier = rng.randint(0, 3)
            purchases += [_between(rng, created + HOUR, last - HOUR) for _ in range(earlier)]
            purchases.append(last)
            return created, last, purchases, True
        if profile == "loyal":
            created = _ago(rng, now, 200 * DAY, 500 * DAY)
            last = _ago(rng, now, HOUR, 20 * DAY)
            window_start = max(created + HOUR, now - 360 * DAY)
            purchases += [_between(rng, window_start, last) for _ in range(rng.randint(5, 12))]
            purchases += [_between(rng, created + HOUR, window_start) for _ in range(rng.randint(0, 3))]
            return created, last, purchases, False
        ranges = {
            "prospect": (HOUR, 25 * DAY),
            "current": (HOUR, 25 * DAY),
            "nudge": (30 * DAY + HOUR, 31 * DAY + 16 * HOUR),
            "inactive": (33 * DAY, 89 * DAY),
            "winback": (90 * DAY + HOUR, 91 * DAY + 16 * HOUR),
            "lost": (93 * DAY, 430 * DAY),
        }
        low, high = ranges[profile]
        last = _ago(rng, now, low, high)
        created = _between(rng, min(now - 500 * DAY, last - DAY), last - DAY)
        buys = {
            "prospect": 0,
            "current": rng.randint(1, 4),
            "nudge": rng.choice([0, 0, 1, 2]),
            "inactive": rng.choice([0, 1, 1, 2, 3]),
            "winback": rng.choice([0, 1, 2, 3]),
            "lost": rng.choice([0, 0, 1, 1, 2, 3, 6]),
        }[profile]
        if buys:
            purchases += [_between(rng, created + HOUR, last - HOUR) for _ in range(buys - 1)]
            purchases.append(last if rng.random() < 0.5 else _between(rng, created + HOUR, last - HOUR))
        return created, last, purchases, False

    def _confirmation(self, rng: random.Random, now: datetime) -> datetime | None:
        if self.profile == "just_signed_up":
            if rng.random() < 0.5 or self.created_at > now - 5 * MINUTE:
                return None
            return self.created_at + timedelta(seconds=rng.randint(30, 4 * 60))
        if rng.random() < 0.12:
            return None
        limit = min(6 * HOUR, self.last_activity - self.created_at)
        if limit < timedelta(seconds=30):
            return self.created_at + timedelta(seconds=30)
        return self.created_at + timedelta(seconds=rng.randint(30, int(limit.total_seconds())))


def sample_customers(now: datetime, count: int = 400, seed: int = 7) -> list[dict[str, Any]]:
    """`count` customers in the JSONL import shape: core fields, `confirmed_at`, `topics`, and the
    attributes `points`, `points_expire_at`, `favourite_product`, `plan`, `last_order_total` as
    top-level fields (any field the import does not know becomes an attribute)."""
    now = _utc(now)
    customers = []
    for number in range(1, count + 1):
        customer_id = f"c{number:04d}"
        plan = _Plan(customer_id, now, seed)
        rng = _rng(seed, customer_id, "profile")
        if plan.locale == "ar":
            (first, first_latin), (last, last_latin) = rng.choice(_AR_FIRST), rng.choice(_AR_LAST)
            tz = rng.choice(_AR_TIMEZONES)
        else:
            first, last = rng.choice(_EN_FIRST), rng.choice(_EN_LAST)
            first_latin, last_latin = first.lower(), last.lower()
            tz = rng.choice(_EN_TIMEZONES)
        local_part = f"{first_latin}.{last_latin}".replace(" ", "")
        domain = "example.com" if rng.random() < 0.6 else "example.org"
        customer: dict[str, Any] = {
            "id": customer_id,
            "email": f"{local_part}{number}@{domain}",
            "first_name": first,
            "last_name": last,
            "locale": plan.locale,
            "timezone": tz,
            "created_at": _iso(plan.created_at),
        }
        if plan.confirmed_at is not None:
            customer["confirmed_at"] = _iso(plan.confirmed_at)
        topics = {}
        if rng.random() < 0.06:
            topics["offers"] = False
        if rng.random() < 0.05:
            topics["product_news"] = False
        if rng.random() < 0.03:
            topics["feedback"] = False
        if topics:
            customer["topics"] = topics
        # Reward points: one per dollar spent; a signup bonus for some; spent by a few.
        points = int(sum(total for _, _, total, _ in plan.purchases))
        if not plan.purchases:
            points = 50 if rng.random() < 0.35 else 0
        elif rng.random() < 0.12:
            points = 0
        customer["points"] = points
        if points > 0:
            draw = rng.random()
            if draw < 0.14:
                expires = now + timedelta(days=rng.randint(11, 13))  # the reminder is due now
            elif draw < 0.22:
                expires = now + timedelta(days=rng.randint(1, 10))
            else:
                expires = now + timedelta(days=rng.randint(15, 330))
            customer["points_expire_at"] = expires.date().isoformat()
        customer["favourite_product"] = plan.favourite_product
        customer["plan"] = rng.choice(_PLANS)
        if plan.purchases:
            customer["last_order_total"] = plan.purchases[-1][2]
        customers.append(customer)
    return customers


def sample_events(customers: list[dict[str, Any]], now: datetime, seed: int = 7) -> list[dict[str, Any]]:
    """The history of `customers` (from `sample_customers` with the same `now` and `seed`), in the
    JSONL import shape, oldest first: signups, confirmations, purchases, logins, feedback and
    complaints. Every event is before `now`; every `id` is unique."""
    now = _utc(now)
    events = []
    for customer in customers:
        customer_id = str(customer["id"])
        plan = _Plan(customer_id, now, seed)
        rng = _rng(seed, customer_id, "events")
        created = _parse(customer["created_at"]) if customer.get("created_at") else plan.created_at
        locale = customer.get("locale") or plan.locale
        mine: list[tuple[datetime, str, dict[str, Any]]] = []
        mine.append((created, "signed_up", {"source": rng.choice(["web", "web", "app", "store"])}))
        if customer.get("confirmed_at"):
            mine.append((_parse(customer["confirmed_at"]), "confirmed", {}))
        last = plan.last_activity
        for at, order_id, total, product in plan.purchases:
            mine.append((at, "purchase", {"order_id": order_id, "total": total, "product": product}))
            # Now and then a survey answer a few days later (never after the last activity).
            answered = at + timedelta(seconds=rng.randint(86400, 5 * 86400))
            is_trigger = plan.recent_purchase and at == plan.purchases[-1][0]
            if not is_trigger and answered < last and rng.random() < 0.2:
                score = rng.choice([2, 4, 5, 6, 7, 8, 8, 9, 9, 10, 10])
                comments = _LOW_SCORE_COMMENTS if score <= 6 else _HIGH_SCORE_COMMENTS
                mine.append(
                    (
                        answered,
                        "feedback_submitted",
                        {
                            "score": score,
                            "comment": rng.choice(comments[locale]),
                            "order_id": order_id,
                        },
                    )
                )
        if plan.profile == "unhappy":
            at, order_id, _, _ = plan.purchases[-1]
            answered = _ago(rng, now, 2 * HOUR, 30 * HOUR)
            mine.append(
                (
                    answered,
                    "feedback_submitted",
                    {
                        "score": rng.randint(2, 6),
                        "comment": rng.choice(_LOW_SCORE_COMMENTS[locale][:4]),
                        "order_id": order_id,
                    },
                )
            )
        if plan.profile != "just_signed_up":
            # Logins between signup and the last activity; the last activity itself is a login
            # unless it is a purchase.
            for _ in range(rng.randint(0, 8)):
                device = rng.choice(["web", "ios", "android"])
                mine.append((_between(rng, created + MINUTE, last), "login", {"device": device}))
            if not any(at == last for at, _, _ in mine):
                mine.append((last, "login", {"device": rng.choice(["web", "ios", "android"])}))
            complainers = ("current", "prospect", "inactive", "nudge", "loyal")
            if plan.profile in complainers and rng.random() < 0.05:
                mine.append(
                    (
                        _between(rng, created + HOUR, last),
                        "complaint",
                        {
                            "channel": rng.choice(["email", "phone", "chat"]),
                            "subject": rng.choice(["late delivery", "damaged item", "refund"]),
                        },
                    )
                )
        mine.sort(key=lambda item: item[0])
        for number, (at, name, properties) in enumerate(mine, start=1):
            if not created <= at < now:
                continue
            events.append(
                {
                    "id": f"demo{seed}-{customer_id}-{number:03d}",
                    "customer": customer_id,
                    "event": name,
                    "at": _iso(at),
                    "properties": properties,
                }
            )
    events.sort(key=lambda event: (event["at"], event["id"]))
    return events
