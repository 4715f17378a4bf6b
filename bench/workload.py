"""A deterministic, realistic webshop event stream in the native event format (SPEC §2).

Tests, benchmarks and the quick start replay it. The same arguments always give the same
bytes (everything is drawn from one seeded `random.Random`; nothing depends on hash order
or the clock). The stream is sorted by `ts`; `event_id`s are `e-1`, `e-2`, … in stream order.

What it contains, and which rules of SPEC §3 it exercises:

- customer activity skewed like the real data (log-normal weights: the 10% most active customers
  make about 35% of the events, most customers only a few sessions); sessions start at a
  local time of day in the customer's time zone (evening peak, quiet nights);
- `product_view` (sku, category, price) from 20 categories, each customer with a skewed
  category preference that shifts for some customers during the period (top-category change);
- `add_to_cart` (sku, category, price, cart_value): most carts are abandoned (no purchase
  within 30 min), many are bought within minutes, some after more than 30 min; some abandoned
  carts get an `email_opened` / `email_clicked` of campaign `cart-reminder` and a recovery;
- `purchase` (order_id, amount, and coupon when one was redeemed): heavy buyers reach 10
  purchases and a few customers pass a lifetime spend of 5000 in a 30-day period;
- `signup` (email) as the first event of new customers, followed by `identify` (traits as
  properties: email, first_name, birthday YYYY-MM-DD and timezone, each of the last two
  sometimes missing), `consent` (channel email|push, granted true|false), often a welcome
  `coupon_issued`, and `email_opened` / `email_clicked` of campaign `welcome-1`;
- `coupon_issued` (coupon), a minority followed by `coupon_redeemed` with the same code within
  7 days, a few redeemed later than that, most never;
- newsletter opens and clicks, consent changes and profile updates of existing customers;
- when the period is longer than 40 days, some customers go quiet for more than 30 days
  before its end (win-back).

Volume is exact: the stream has `events` events. They are generated one UTC day at a time
and sorted per day, so memory stays at about one day's events (plus follow-ups scheduled
for later days).

    python -m bench.workload --events 100000 --customers 10000 --days 30 --seed 7 \\
        --start 2026-01-01 --out events.jsonl
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from bisect import bisect
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from operator import itemgetter
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

import orjson

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000

#: Every event type the generator emits.
EVENT_TYPES = (
    "product_view",
    "add_to_cart",
    "purchase",
    "signup",
    "identify",
    "consent",
    "coupon_issued",
    "coupon_redeemed",
    "email_opened",
    "email_clicked",
)

# name, sku prefix, popularity weight, median price (EUR), log-normal price spread
CATEGORIES: tuple[tuple[str, str, float, float, float], ...] = (
    ("smartphones", "SP", 9, 420.0, 0.6),
    ("laptops", "LT", 5, 850.0, 0.45),
    ("headphones", "HP", 6, 90.0, 0.8),
    ("tv-audio", "TV", 4, 520.0, 0.6),
    ("cameras", "CA", 2, 480.0, 0.7),
    ("appliances", "AP", 5, 260.0, 0.8),
    ("kitchen", "KI", 6, 45.0, 0.8),
    ("furniture", "FU", 4, 310.0, 0.8),
    ("home-decor", "HD", 5, 35.0, 0.7),
    ("garden", "GA", 3, 60.0, 0.9),
    ("shoes", "SH", 8, 85.0, 0.5),
    ("womens-fashion", "WF", 9, 55.0, 0.6),
    ("mens-fashion", "MF", 6, 60.0, 0.6),
    ("kids", "KD", 4, 30.0, 0.6),
    ("toys", "TY", 4, 35.0, 0.8),
    ("beauty", "BE", 6, 28.0, 0.7),
    ("sports", "SO", 4, 70.0, 0.8),
    ("books", "BK", 3, 18.0, 0.4),
    ("pet-supplies", "PE", 3, 25.0, 0.7),
    ("jewelry-watches", "JW", 2, 190.0, 1.0),
)
SKUS_PER_CATEGORY = 400

# IANA zone, share of customers. The shop's home market is Germany.
TIMEZONES: tuple[tuple[str, float], ...] = (
    ("Europe/Berlin", 38),
    ("Europe/London", 9),
    ("Europe/Paris", 8),
    ("Europe/Madrid", 4),
    ("America/New_York", 12),
    ("America/Chicago", 4),
    ("America/Los_Angeles", 6),
    ("Asia/Tokyo", 7),
    ("Asia/Kolkata", 3),
    ("Australia/Sydney", 4),
    ("UTC", 5),
)
TIMEZONE_KNOWN = 0.8      # share of identify events that carry a timezone trait
BIRTHDAY_KNOWN = 0.7

# Relative session starts per local hour of day, 00..23: quiet nights, an evening peak.
HOUR_WEIGHTS = (
    1.0, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 2.2, 2.8, 3.0, 3.2,
    3.5, 3.3, 3.2, 3.3, 3.5, 3.8, 4.5, 5.2, 5.6, 5.0, 3.6, 2.0,
)
WEEKDAY_WEIGHTS = (1.0, 0.97, 1.0, 1.02, 1.05, 1.12, 1.18)   # Monday .. Sunday

FIRST_NAMES = (
    "Anna", "Lukas", "Mia", "Leon", "Emma", "Noah", "Sofia", "Paul", "Hannah", "Felix",
    "Olivia", "Liam", "Amelia", "Oliver", "Chloe", "Lucas", "Camille", "Hugo", "Lucia",
    "Mateo", "Yuki", "Haruto", "Sakura", "Ren", "Priya", "Arjun", "Aisha", "Omar", "Zoe",
    "Jack", "Isla", "Ethan", "Grace", "James", "Charlotte", "Mason", "Ava", "Elif", "Jonas",
    "Marie",
)
LAST_NAMES = (
    "mueller", "schmidt", "schneider", "fischer", "weber", "smith", "jones", "brown", "martin",
    "bernard", "garcia", "lopez", "tanaka", "suzuki", "sato", "sharma", "patel", "kowalski",
    "novak", "johnson", "williams", "nguyen", "rossi", "jansen",
)
EMAIL_DOMAINS = ("example.com", "example.org", "example.net")

# coupon prefix -> discount share; WELCOME10 is issued at signup, the others by campaigns
WELCOME_COUPON = "WELCOME10"
COUPONS = {"WELCOME10": 0.10, "SAVE10": 0.10, "SAVE15": 0.15, "FREESHIP": 0.0, "COMEBACK20": 0.20}
CAMPAIGN_COUPONS = ("SAVE10", "SAVE15", "FREESHIP", "COMEBACK20")

NEW_CUSTOMER_SHARE = 0.2        # of `customers`, capped at one signup per 50 events
QUIET_SHARE = 0.15              # of existing customers, when days > 40
BIG_SPENDER_RATE = 0.03         # x activity weight: favour expensive categories, buy more
QUIET_MIN_DAYS = 40


def check_arguments(events: int, customers: int, days: int, start: str) -> date:
    """The first day of the period; ValueError naming the bad argument and the accepted form."""
    if events < 1 or customers < 1 or days < 1:
        raise ValueError(
            f"events, customers and days must be at least 1 (got events={events}, "
            f"customers={customers}, days={days})"
        )
    try:
        return date.fromisoformat(start)
    except (TypeError, ValueError):
        raise ValueError(f"start {start!r} is not a date: write YYYY-MM-DD, e.g. 2026-01-01") from None


class _Customer:
    """One simulated customer: who they are and how they behave (not their event history)."""

    __slots__ = (
        "id", "weight", "signup_day", "last_day", "stop_ms", "tz", "prefs", "shift_day",
        "shift_prefs", "cart_p", "buy_p", "first_name", "email", "birthday", "seen",
    )

    id: str
    weight: float
    signup_day: int         # day index of the signup; -1 for customers who existed before
    last_day: int           # last day index with sessions (quiet customers stop early)
    stop_ms: int            # no event of this customer at or after this time
    tz: str
    prefs: tuple[int, int, int]       # favourite category indices, most preferred first
    shift_day: int                    # from this day on `shift_prefs` apply
    shift_prefs: tuple[int, int, int]
    cart_p: float           # chance a browse session ends with a cart
    buy_p: float            # chance a cart is bought within minutes
    first_name: str
    email: str
    birthday: str
    seen: bool              # had a session in the period already


class _Shop:
    """The simulation. `events()` yields the stream; call it once."""

    def __init__(self, events: int, customers: int, days: int, seed: int, start: str) -> None:
        start_date = check_arguments(events, customers, days, start)
        self.total = events
        self.days = days
        self.seed = seed
        self.rng = random.Random(seed)
        self.start_date = start_date
        self.start_ms = int(datetime(start_date.year, start_date.month, start_date.day,
                                     tzinfo=UTC).timestamp() * 1000)
        self.end_ms = self.start_ms + days * DAY_MS
        self.buckets: list[list[tuple[int, str, str, dict[str, Any]]] | None] = [[] for _ in range(days)]
        self.produced = 0           # in-period events put into a bucket so far
        self.order_seq = 100_000
        self.coupon_seq = 0
        self._offsets: dict[tuple[str, int], int] = {}
        self._hour_cum = list(accumulate(HOUR_WEIGHTS))
        self._tz_names = [name for name, _ in TIMEZONES]
        self._tz_cum = list(accumulate(w for _, w in TIMEZONES))
        self._cat_cum = list(accumulate(c[2] for c in CATEGORIES))
        self._catalog = self._make_catalog()
        self._customers = self._make_customers(customers)
        self._cust_cum = list(accumulate(c.weight for c in self._customers))
        self._signups: list[list[_Customer]] = [[] for _ in range(days)]
        for c in self._customers:
            if c.signup_day >= 0:
                self._signups[c.signup_day].append(c)
        self._day_targets = self._make_day_targets()

    # --- the world -------------------------------------------------------------------

    def _make_catalog(self) -> list[list[tuple[str, float]]]:
        """Per category the SKUs with a fixed price each (the same SKU always costs the same)."""
        rng = self.rng
        catalog = []
        for _, prefix, _, median, spread in CATEGORIES:
            skus = []
            for i in range(SKUS_PER_CATEGORY):
                price = median * math.exp(rng.gauss(0.0, spread))
                # shop prices: 89.99, 7.49
                price = round((round(price) if price >= 10 else round(price * 2) / 2) - 0.01, 2)
                skus.append((f"{prefix}-{1000 + i}", max(price, 1.99)))
            catalog.append(skus)
        return catalog

    def _make_customers(self, n: int) -> list[_Customer]:
        rng = self.rng
        days = self.days
        n_new = min(int(n * NEW_CUSTOMER_SHARE), max(1, self.total // 50))
        new = set(rng.sample(range(n), n_new))
        can_go_quiet = days > QUIET_MIN_DAYS
        customers = []
        for i in range(n):
            c = _Customer()
            c.id = f"c-{i + 1}"
            c.weight = rng.lognormvariate(0.0, 1.1)
            c.signup_day = rng.randrange(days) if i in new else -1
            c.last_day = days - 1
            c.stop_ms = self.end_ms
            if can_go_quiet and c.signup_day < 0 and rng.random() < QUIET_SHARE:
                # sessions up to last_day (spilling at most into the next day), then silence
                # for more than 30 days until the end of the period
                c.last_day = rng.randrange(days - 32)
                c.stop_ms = self.start_ms + (c.last_day + 2) * DAY_MS
            c.tz = self._tz_names[bisect(self._tz_cum, rng.random() * self._tz_cum[-1])]
            # frequent visitors are more often big spenders (about 5% of all customers)
            big_spender = rng.random() < min(0.5, BIG_SPENDER_RATE * c.weight)
            c.prefs = self._pick_prefs(big_spender)
            if rng.random() < 0.12:
                c.shift_day = rng.randrange(days)
                c.shift_prefs = self._pick_prefs(big_spender)
            else:
                c.shift_day = days
                c.shift_prefs = c.prefs
            # Frequent visitors convert better: conversion grows with the activity weight.
            loyalty = rng.lognormvariate(0.0, 0.4) * (0.6 + 0.4 * min(c.weight, 8.0))
            if big_spender:
                loyalty *= 1.5
            c.cart_p = min(0.85, 0.2 * loyalty)
            c.buy_p = min(0.8, 0.13 * loyalty)
            first = FIRST_NAMES[rng.randrange(len(FIRST_NAMES))]
            last = LAST_NAMES[rng.randrange(len(LAST_NAMES))]
            c.first_name = first
            c.email = f"{first.lower()}.{last}{i % 97}@{EMAIL_DOMAINS[i % 3]}"
            born = date(rng.randint(1950, 2006), 1, 1) + timedelta(days=rng.randrange(365))
            c.birthday = born.isoformat()
            c.seen = False
            customers.append(c)
        return customers

    def _pick_prefs(self, big_spender: bool) -> tuple[int, int, int]:
        picks: list[int] = []
        while len(picks) < 3:
            k = self._global_category()
            if big_spender and CATEGORIES[k][3] < 150 and len(picks) < 2:
                continue
            if k not in picks:
                picks.append(k)
        return (picks[0], picks[1], picks[2])

    def _make_day_targets(self) -> list[int]:
        """Cumulative event count to reach by the end of each day: weekends are busier."""
        weights = []
        for d in range(self.days):
            weekday = (self.start_date + timedelta(days=d)).weekday()
            weights.append(WEEKDAY_WEIGHTS[weekday] * (0.95 + 0.1 * self.rng.random()))
        cum = list(accumulate(weights))
        return [round(self.total * w / cum[-1]) for w in cum]

    # --- small draws -----------------------------------------------------------------

    def _global_category(self) -> int:
        return bisect(self._cat_cum, self.rng.random() * self._cat_cum[-1])

    def _category(self, c: _Customer, ts: int) -> int:
        prefs = c.prefs if ts < self.start_ms + c.shift_day * DAY_MS else c.shift_prefs
        r = self.rng.random()
        if r < 0.55:
            return prefs[0]
        if r < 0.75:
            return prefs[1]
        if r < 0.85:
            return prefs[2]
        return self._global_category()

    def _product(self, cat: int) -> tuple[str, float]:
        skus = self._catalog[cat]
        return skus[int(len(skus) * self.rng.random() ** 2.2)]   # a few bestsellers

    def _utc_offset_s(self, tz: str, day: int) -> int:
        key = (tz, day)
        offset = self._offsets.get(key)
        if offset is None:
            d = self.start_date + timedelta(days=day)
            local_noon = datetime(d.year, d.month, d.day, 12, tzinfo=ZoneInfo(tz))
            offset = int(local_noon.utcoffset().total_seconds())   # type: ignore[union-attr]
            self._offsets[key] = offset
        return offset

    def _session_start(self, c: _Customer, day: int) -> int:
        """A time on UTC day `day` whose local time in the customer's zone follows HOUR_WEIGHTS."""
        rnd = self.rng.random
        hour = bisect(self._hour_cum, rnd() * self._hour_cum[-1])
        local_s = hour * 3600 + int(rnd() * 3600)
        utc_s = (local_s - self._utc_offset_s(c.tz, day)) % 86_400
        return self.start_ms + day * DAY_MS + utc_s * 1000 + int(rnd() * 1000)

    def _gap(self, mean_s: float, min_s: float = 1.0) -> int:
        """A pause between two actions of one person, in ms."""
        return int((min_s + self.rng.expovariate(1.0 / mean_s)) * 1000)

    def _coupon_code(self, prefix: str) -> str:
        self.coupon_seq += 1
        # a bijection on 32 bits: unique codes that do not look sequential
        return f"{prefix}-{(self.coupon_seq * 2654435761 + self.seed) & 0xFFFFFFFF:08X}"

    def _order_id(self) -> str:
        self.order_seq += 1
        return f"o-{self.order_seq}"

    def _add(self, c: _Customer, ts: int, type_: str, props: dict[str, Any]) -> None:
        """Put one event in its day's bucket; events after the customer's stop are never made."""
        if ts >= c.stop_ms:
            return
        self.buckets[(ts - self.start_ms) // DAY_MS].append((ts, c.id, type_, props))  # type: ignore[union-attr]
        self.produced += 1

    # --- sessions --------------------------------------------------------------------

    def _identify(self, c: _Customer, ts: int) -> None:
        rnd = self.rng.random
        traits: dict[str, Any] = {"email": c.email, "first_name": c.first_name}
        if rnd() < BIRTHDAY_KNOWN:
            traits["birthday"] = c.birthday
        if rnd() < TIMEZONE_KNOWN:
            traits["timezone"] = c.tz
        self._add(c, ts, "identify", traits)

    def _signup(self, c: _Customer, day: int) -> None:
        rnd = self.rng.random
        ts = self._session_start(c, day)
        c.seen = True
        self._add(c, ts, "signup", {"email": c.email})
        ts += self._gap(20, 3)
        self._identify(c, ts)
        ts += self._gap(2)
        self._add(c, ts, "consent", {"channel": "email", "granted": rnd() < 0.85})
        if rnd() < 0.5:
            ts += self._gap(2)
            self._add(c, ts, "consent", {"channel": "push", "granted": rnd() < 0.6})
        if rnd() < 0.6:
            ts += self._gap(3)
            self._coupon(c, ts, WELCOME_COUPON)
        if rnd() < 0.55:
            # the welcome-1 mail is opened minutes to hours later, sometimes clicked
            opened = ts + MINUTE_MS + int(self.rng.expovariate(1 / 2.5) * HOUR_MS)
            self._add(c, opened, "email_opened", {"campaign": "welcome-1"})
            if rnd() < 0.4:
                clicked = opened + self._gap(60, 5)
                self._add(c, clicked, "email_clicked", {"campaign": "welcome-1"})
                self._browse(c, clicked + self._gap(10, 2))
        if rnd() < 0.7:
            self._browse(c, ts + self._gap(30, 5), allow_cart=rnd() < 0.5)

    def _coupon(self, c: _Customer, ts: int, prefix: str) -> None:
        """Issue a coupon; a minority redeem it within 7 days, a few later, most never."""
        code = self._coupon_code(prefix)
        self._add(c, ts, "coupon_issued", {"coupon": code})
        r = self.rng.random()
        if r < 0.27:
            wait = 10 * MINUTE_MS + int(min(self.rng.expovariate(1 / 1.8), 6.8) * DAY_MS)
        elif r < 0.32:
            wait = int((7.2 + 5 * self.rng.random()) * DAY_MS)
        else:
            return
        self._redeem(c, ts + wait, code, COUPONS[prefix])

    def _redeem(self, c: _Customer, ts: int, code: str, discount: float) -> None:
        cat = self._category(c, ts)
        sku, price = self._product(cat)
        cat_name = CATEGORIES[cat][0]
        self._add(c, ts, "product_view", {"sku": sku, "category": cat_name, "price": price})
        ts += self._gap(45, 3)
        self._add(c, ts, "add_to_cart", {"sku": sku, "category": cat_name, "price": price, "cart_value": price})
        ts += self._gap(60, 10)
        self._add(c, ts, "coupon_redeemed", {"coupon": code})
        ts += self._gap(20, 2)
        amount = round(price * (1 - discount), 2)
        self._add(c, ts, "purchase", {"order_id": self._order_id(), "amount": amount, "coupon": code})

    def _browse(self, c: _Customer, ts: int, allow_cart: bool = True) -> None:
        """Product views around a focus category; maybe a cart; bought, bought late or abandoned."""
        rng = self.rng
        rnd = rng.random
        product = self._product
        focus = self._category(c, ts)
        n_views = 1 + min(int(rng.expovariate(1 / 4.2)), 39)
        viewed: list[tuple[str, str, float]] = []
        for _ in range(n_views):
            cat = focus if rnd() < 0.75 else self._category(c, ts)
            sku, price = product(cat)
            cat_name = CATEGORIES[cat][0]
            self._add(c, ts, "product_view", {"sku": sku, "category": cat_name, "price": price})
            viewed.append((sku, cat_name, price))
            ts += self._gap(35, 2)
        if not allow_cart or rnd() >= c.cart_p:
            return
        r = rnd()
        n_items = 1 if r < 0.7 else 2 if r < 0.92 else 3
        cart_value = 0.0
        last_sku = viewed[-1][0]
        for i in range(n_items):
            sku, cat_name, price = viewed[-1] if i == 0 else viewed[int(rnd() * len(viewed))]
            cart_value = round(cart_value + price, 2)
            self._add(c, ts, "add_to_cart",
                      {"sku": sku, "category": cat_name, "price": price, "cart_value": cart_value})
            ts += self._gap(40, 5)
        r = rnd()
        if r < c.buy_p:                                   # checkout within minutes
            ts += self._gap(150, 30)
            self._add(c, ts, "purchase", {"order_id": self._order_id(), "amount": cart_value})
        elif r < c.buy_p + 0.07:                          # comes back after more than 30 min
            ts += 45 * MINUTE_MS + int(rng.expovariate(1 / 8) * HOUR_MS)
            self._add(c, ts, "product_view", {"sku": last_sku, "category": viewed[-1][1], "price": viewed[-1][2]})
            ts += self._gap(90, 20)
            self._add(c, ts, "purchase", {"order_id": self._order_id(), "amount": cart_value})
        elif rnd() < 0.22:                                # abandoned; the reminder gets opened
            ts += 31 * MINUTE_MS + int(rng.expovariate(1 / 1.5) * HOUR_MS)
            self._add(c, ts, "email_opened", {"campaign": "cart-reminder"})
            if rnd() < 0.35:
                ts += self._gap(40, 3)
                self._add(c, ts, "email_clicked", {"campaign": "cart-reminder"})
                ts += self._gap(5, 1)
                self._add(c, ts, "product_view", {"sku": last_sku, "category": viewed[-1][1], "price": viewed[-1][2]})
                if rnd() < 0.45:
                    ts += self._gap(120, 20)
                    self._add(c, ts, "purchase", {"order_id": self._order_id(), "amount": cart_value})

    def _session(self, c: _Customer, day: int) -> None:
        rnd = self.rng.random
        ts = self._session_start(c, day)
        if not c.seen:
            # first visit in the period of a customer who existed before: the shop's tag
            # often re-sends the profile and the stored consent
            c.seen = True
            if rnd() < 0.35:
                self._identify(c, ts)
                ts += self._gap(1)
            if rnd() < 0.3:
                self._add(c, ts, "consent", {"channel": "email", "granted": rnd() < 0.9})
                ts += self._gap(1)
        r = rnd()
        if r < 0.025:
            self._coupon(c, ts, CAMPAIGN_COUPONS[int(rnd() * len(CAMPAIGN_COUPONS))])
        elif r < 0.085:
            week = (self.start_date + timedelta(days=day)).isocalendar()
            campaign = f"newsletter-{week.year}-w{week.week:02d}"
            self._add(c, ts, "email_opened", {"campaign": campaign})
            if rnd() < 0.35:
                ts += self._gap(30, 3)
                self._add(c, ts, "email_clicked", {"campaign": campaign})
                self._browse(c, ts + self._gap(5, 1))
        elif r < 0.095:
            self._add(c, ts, "consent", {"channel": "email" if rnd() < 0.7 else "push", "granted": rnd() < 0.5})
        elif r < 0.11:
            self._identify(c, ts)
        else:
            self._browse(c, ts)

    def _pick_customer(self, day: int) -> _Customer | None:
        """A customer active on `day`, by activity weight (rejection sampling)."""
        rnd = self.rng.random
        customers = self._customers
        cum = self._cust_cum
        total = cum[-1]
        for _ in range(1000):
            c = customers[bisect(cum, rnd() * total)]
            if c.signup_day < day <= c.last_day:
                return c
        return None

    def _fill_day(self, day: int) -> None:
        for c in self._signups[day]:
            self._signup(c, day)
        target = self._day_targets[day] if day < self.days - 1 else self.total
        while self.produced < target:
            c = self._pick_customer(day)
            if c is None:
                break
            self._session(c, day)

    # --- the stream ------------------------------------------------------------------

    def events(self) -> Iterator[dict[str, Any]]:
        emitted = 0
        by_ts = itemgetter(0)
        for day in range(self.days):
            self._fill_day(day)
            bucket = self.buckets[day]
            self.buckets[day] = None        # nothing may be scheduled into the past
            assert bucket is not None
            bucket.sort(key=by_ts)          # stable: ties keep generation order
            prefix = (self.start_date + timedelta(days=day)).isoformat() + "T"
            day_ms = self.start_ms + day * DAY_MS
            for ts, customer_id, type_, props in bucket:
                emitted += 1
                ms = ts - day_ms
                yield {
                    "event_id": f"e-{emitted}",
                    "type": type_,
                    "customer_id": customer_id,
                    "ts": f"{prefix}{ms // HOUR_MS:02d}:{ms // MINUTE_MS % 60:02d}:"
                          f"{ms // 1000 % 60:02d}.{ms % 1000:03d}Z",
                    "properties": props,
                }
                if emitted == self.total:
                    return


def generate(
    events: int = 100_000,
    customers: int = 10_000,
    days: int = 30,
    seed: int = 7,
    start: str = "2026-01-01",
) -> Iterator[dict[str, Any]]:
    """Yield exactly `events` native events (SPEC §2) sorted by `ts`, deterministic for the arguments.

    `start` is a date (YYYY-MM-DD); the period is `days` whole UTC days from its midnight.
    Raises ValueError for a count below 1 or a bad date.
    """
    return _Shop(events, customers, days, seed, start).events()


def write(
    out: BinaryIO,
    events: int = 100_000,
    customers: int = 10_000,
    days: int = 30,
    seed: int = 7,
    start: str = "2026-01-01",
    batch: int = 10_000,
) -> int:
    """Write the stream of `generate()` to `out` as JSONL, in batches; returns the event count."""
    dumps = orjson.dumps
    newline = orjson.OPT_APPEND_NEWLINE
    lines: list[bytes] = []
    count = 0
    for event in generate(events, customers, days, seed, start):
        lines.append(dumps(event, option=newline))
        if len(lines) >= batch:
            out.write(b"".join(lines))
            count += len(lines)
            lines.clear()
    out.write(b"".join(lines))
    return count + len(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.workload",
        description="Generate a deterministic webshop event stream (native JSONL, sorted by ts).",
    )
    parser.add_argument("--events", type=int, default=100_000, help="number of events (default 100000)")
    parser.add_argument("--customers", type=int, default=10_000, help="number of customers (default 10000)")
    parser.add_argument("--days", type=int, default=30, help="length of the period in days (default 30)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--start", default="2026-01-01", help="first day, YYYY-MM-DD, UTC (default 2026-01-01)")
    parser.add_argument("--out", default="-", help="output JSONL file; - for stdout (default)")
    args = parser.parse_args(argv)
    try:
        check_arguments(args.events, args.customers, args.days, args.start)
    except ValueError as exc:
        parser.error(str(exc))
    began = time.perf_counter()
    if args.out == "-":
        count = write(sys.stdout.buffer, args.events, args.customers, args.days, args.seed, args.start)
        sys.stdout.buffer.flush()
    else:
        with open(args.out, "wb") as f:
            count = write(f, args.events, args.customers, args.days, args.seed, args.start)
    elapsed = time.perf_counter() - began
    print(
        f"wrote {count} events ({args.customers} customers, {args.days} days from {args.start}, "
        f"seed {args.seed}) to {args.out} in {elapsed:.1f} s ({count / elapsed:,.0f} events/s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
