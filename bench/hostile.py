"""A hostile event stream: what a careless producer, a broken tracker or an attacker sends.

Deterministic for a seed, so a failure found by the fuzz tests can be replayed. Each message is
`(value, key)`: the Kafka key a producer would set (None: no key; sometimes not the event's
customer id), ignored where there are no keys (a backtest file). About a third are real shop
events (from ../shared/data when present, else generated), so rules have states to work on; the
rest are the categories of the hardening issue plus random JSON in random fields.

    python -m bench.hostile --messages 6000 --out /tmp/hostile.jsonl   # a backtest file (values only)
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator
from pathlib import Path

from bench.workload import generate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
T0 = 1_767_225_600_000   # 2026-01-01T00:00:00Z
CUSTOMERS = [f"h-{i}" for i in range(40)]
TYPES = ["purchase", "add_to_cart", "product_view", "signup", "consent", "identify", "profile", "email_clicked",
         "email_opened", "coupon_issued", "coupon_redeemed", "page_view", "refund"]
PROPS = ["amount", "category", "sku", "cart_value", "coupon", "campaign", "channel", "granted", "birthday",
         "timezone", "first_name", "consent", "revenue", "price"]

Message = tuple[bytes | None, bytes | None]   # (value, key); a value None is a tombstone


def _real_events(rng: random.Random, n: int) -> list[dict]:
    lines: list[bytes] = []
    for name in ("online-retail-orders.jsonl", "rees46-clickstream-sample.jsonl"):
        path = DATA / name
        if path.is_file():
            with path.open("rb") as fh:
                lines += [line for _, line in zip(range(n), fh)]
    if lines:
        return [json.loads(line) for line in rng.sample(lines, min(n, len(lines)))]
    return [e for e in generate(events=n, customers=200, days=10, seed=rng.randrange(1 << 30), start="2026-01-01")]


def _json_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, -1, 7, 2**31, 2**53 + 1, 2**63, 2**64, -(2**64), 10**30])
    if kind == 3:
        return rng.choice([0.5, -1e308, 1e308, 5e-324, 12.5])
    if kind == 4:
        return rng.choice(["", "x", "5000", "5_000", "٥٠٠٠", "NaN", "inf", " 12", "\u202e", "a" * 300, "\x00"])
    if kind == 5:
        return rng.choice(["2026-02-30", "1990-05-05", "Europe/Berlin", "Mars/Olympus", "email", "{event.sku}"])
    if kind == 6:
        return [_json_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(PROPS): _json_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _deep(depth: int) -> str:
    opens = "".join('{"a": ' if i % 2 == 0 else "[" for i in range(depth))
    closes = "".join("}" if i % 2 == 0 else "]" for i in reversed(range(depth)))
    return f"{opens}1{closes}"


def _dumps(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _hostile(rng: random.Random, i: int, ts: int) -> Message:
    cid = rng.choice(CUSTOMERS)
    base = {"event_id": f"x-{i}", "type": rng.choice(TYPES), "customer_id": cid, "ts": ts}
    key = cid.encode()
    kind = rng.randrange(16)
    if kind == 0:   # nested far beyond any real event
        head = json.dumps(base)[:-1]
        return f'{head}, "properties": {_deep(rng.choice([20, 1_000, 3_000]))}}}'.encode(), key
    if kind == 1:   # a consent whose channel or grant is not what it must be
        base["type"] = "consent"
        base["properties"] = {"channel": rng.choice([["email"], {"email": True}, 3, None, "email"]),
                              "granted": rng.choice([True, "yes", 1, None])}
    elif kind == 2:   # integers no 64-bit field can hold, where state keeps them
        base["type"] = rng.choice(["purchase", "identify", "profile"])
        base["properties"] = {rng.choice(["amount", "first_name", "score", "birthday"]):
                              rng.choice([2**64, -(2**64) - 1, 10**30, 2**53 + 1])}
    elif kind == 3:   # amounts Python's float() would take
        base["type"] = "purchase"
        base["properties"] = {"amount": rng.choice([True, "5_000", "٥٠٠٠", "NaN", " 5000", "1e999", 1e308])}
    elif kind == 4:   # a required field missing, null or of the wrong type
        field = rng.choice(["event_id", "type", "customer_id", "ts"])
        if rng.random() < 0.5:
            del base[field]
        else:
            base[field] = rng.choice([None, True, 1.5, [], {}, "", "2026-01-01T00:00:00"])
    elif kind == 5:   # not JSON, not an object, or no value at all (a Kafka tombstone)
        return rng.choice([b"{", b"not json", b"[]", b"null", b'"text"', b"\xff\xfe\x00", b"{}", None]), None
    elif kind == 6:   # larger than a message may be
        base["properties"] = {"blob": "x" * (70 * 1024)}
    elif kind == 7:   # escapes no UTF-8 text can hold
        return (json.dumps(base)[:-1] + ', "properties": {"sku": "\\ud800"}}').encode(), key
    elif kind == 8:   # random JSON in every field
        for field in list(base):
            if rng.random() < 0.4:
                base[field] = _json_value(rng)
        base["properties"] = {rng.choice(PROPS): _json_value(rng) for _ in range(rng.randrange(5))}
        key = str(base.get("customer_id")).encode()
    elif kind == 9:   # a Segment message, more or less
        seg = {"type": rng.choice(["track", "identify", "page", "screen", 7]), "event": rng.choice(
            ["Order Completed", "Product Added", "", "!!!", None]), "userId": rng.choice([cid, None, "", 12]),
            "messageId": rng.choice([f"m-{i}", None]), "timestamp": rng.choice(["2026-01-02T00:00:00Z", None, 5]),
            "properties": rng.choice([{"revenue": rng.choice([10, "10", True])}, [], None])}
        return _dumps(seg), key
    elif kind == 10:   # a mis-keyed message: no key, or another customer's
        base["properties"] = {"amount": 100}
        base["type"] = "purchase"
        key = rng.choice([None, b"", rng.choice(CUSTOMERS).encode()])
        if key == cid.encode():
            key = None
    elif kind == 11:   # an event id re-used much later
        base["event_id"] = f"x-{rng.randrange(max(1, i))}"
        base["properties"] = {"amount": 10}
    elif kind == 12:   # a profile with odd values
        base["type"] = "identify"
        base["properties"] = {"birthday": rng.choice(["1990-02-29", "0000-01-01", 5, None]), "timezone":
                              rng.choice(["Europe/Berlin", ["x"], "", "../../etc/passwd"]),
                              "consent": rng.choice([{"email": True}, {"email": "yes"}, [], "all"])}
    elif kind == 13:   # control and bidi characters in ids and values
        base["event_id"] = f"x-{i}\u202e\x00"
        base["properties"] = {"sku": "\u2066A\u2069", "category": "\x07"}
    elif kind == 14:   # time at the edges
        base["ts"] = rng.choice([0, -1, 253402300799999, 10**15, "9999-12-31T23:59:59Z", "1970-01-01T00:00:00Z"])
    else:   # properties that are not an object
        base["properties"] = _json_value(rng)
    return _dumps(base), key


def hostile_stream(messages: int = 6000, seed: int = 1) -> Iterator[Message]:
    """`messages` messages, about a third of them real events, in roughly increasing time."""
    rng = random.Random(seed)
    real = iter(_real_events(rng, messages // 3 + 1))
    ts = T0
    for i in range(messages):
        ts += rng.randrange(1, 120_000)
        if i % 3 == 0:
            event = next(real, None)
            if event is not None:
                yield _dumps(event), str(event["customer_id"]).encode()
                continue
        yield _hostile(rng, i, ts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="-")
    args = parser.parse_args()
    values = b"\n".join(value.replace(b"\n", b" ") for value, _ in hostile_stream(args.messages, args.seed)
                        if value is not None) + b"\n"
    if args.out == "-":
        import sys

        sys.stdout.buffer.write(values)
    else:
        Path(args.out).write_bytes(values)


if __name__ == "__main__":
    main()
