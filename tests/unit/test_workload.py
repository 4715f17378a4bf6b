"""The workload generator: deterministic, sorted, unique ids, SPEC §2 fields, every event type."""

from __future__ import annotations

import io
from collections import Counter
from datetime import datetime

import orjson
import pytest

from bench.workload import EVENT_TYPES, generate, main, write

SAMPLE = dict(events=20_000, customers=2_000, days=30, seed=7, start="2026-01-01")


def _bytes(**kwargs) -> bytes:
    out = io.BytesIO()
    write(out, **kwargs)
    return out.getvalue()


@pytest.fixture(scope="module")
def sample() -> list[dict]:
    return [orjson.loads(line) for line in _bytes(**SAMPLE).splitlines()]


def _ms(ts: str) -> int:
    return int(datetime.fromisoformat(ts).timestamp() * 1000)


def test_same_seed_same_bytes():
    args = dict(events=3_000, customers=300, days=45, seed=11, start="2026-03-01")
    assert _bytes(**args) == _bytes(**args)


def test_another_seed_another_stream():
    a = _bytes(events=1_000, customers=100, days=10, seed=1, start="2026-01-01")
    b = _bytes(events=1_000, customers=100, days=10, seed=2, start="2026-01-01")
    assert a != b


def test_exact_count_and_every_line_is_json(sample):
    # the fixture already decoded every line; a line that is not JSON would have raised
    assert len(sample) == SAMPLE["events"]


def test_sorted_by_ts_inside_the_period(sample):
    times = [_ms(e["ts"]) for e in sample]
    assert times == sorted(times)
    assert times[0] >= _ms("2026-01-01T00:00:00Z")
    assert times[-1] < _ms("2026-01-31T00:00:00Z")


def test_event_ids_unique(sample):
    ids = [e["event_id"] for e in sample]
    assert len(set(ids)) == len(ids)


def test_spec_required_fields(sample):
    for e in sample:
        assert list(e) == ["event_id", "type", "customer_id", "ts", "properties"]
        assert isinstance(e["event_id"], str) and e["event_id"]
        assert isinstance(e["customer_id"], str) and e["customer_id"]
        assert isinstance(e["properties"], dict)
        ts = e["ts"]
        # RFC 3339, UTC, milliseconds: 2026-01-01T14:03:11.250Z
        assert len(ts) == 24 and ts[10] == "T" and ts[19] == "." and ts.endswith("Z"), ts
        datetime.fromisoformat(ts)


def test_every_event_type_present(sample):
    counts = Counter(e["type"] for e in sample)
    assert set(counts) == set(EVENT_TYPES)
    assert counts.most_common(1)[0][0] == "product_view"


def test_event_properties(sample):
    for e in sample:
        p, t = e["properties"], e["type"]
        if t == "product_view":
            assert {"sku", "category", "price"} <= p.keys()
        elif t == "add_to_cart":
            assert {"sku", "category", "price", "cart_value"} <= p.keys()
            assert p["cart_value"] >= p["price"]
        elif t == "purchase":
            assert isinstance(p["order_id"], str) and p["amount"] > 0
        elif t == "signup":
            assert "@" in p["email"]
        elif t == "identify":
            assert {"email", "first_name"} <= p.keys()
            if "birthday" in p:
                datetime.strptime(p["birthday"], "%Y-%m-%d")
        elif t == "consent":
            assert p["channel"] in ("email", "push") and isinstance(p["granted"], bool)
        elif t in ("coupon_issued", "coupon_redeemed"):
            assert p["coupon"]
        elif t in ("email_opened", "email_clicked"):
            assert p["campaign"]


def test_signup_is_a_new_customers_first_event(sample):
    first: dict[str, str] = {}
    for e in sample:
        first.setdefault(e["customer_id"], e["type"])
    signed_up = {e["customer_id"] for e in sample if e["type"] == "signup"}
    assert signed_up and all(first[c] == "signup" for c in signed_up)


def test_coupons_redeemed_with_the_issued_code_mostly_within_7_days(sample):
    issued = {(e["customer_id"], e["properties"]["coupon"]): _ms(e["ts"])
              for e in sample if e["type"] == "coupon_issued"}
    waits = [_ms(e["ts"]) - issued[(e["customer_id"], e["properties"]["coupon"])]
             for e in sample if e["type"] == "coupon_redeemed"]
    assert waits and all(w > 0 for w in waits)
    within_7d = sum(w <= 7 * 86_400_000 for w in waits)
    assert within_7d > len(waits) / 2
    assert len(waits) < len(issued) / 2          # most coupons are never redeemed


def test_carts_often_abandoned_and_often_bought_within_minutes(sample):
    purchases: dict[str, list[int]] = {}
    for e in sample:
        if e["type"] == "purchase":
            purchases.setdefault(e["customer_id"], []).append(_ms(e["ts"]))
    abandoned = bought = 0
    for e in sample:
        if e["type"] == "add_to_cart":
            t = _ms(e["ts"])
            if any(0 <= p - t <= 30 * 60_000 for p in purchases.get(e["customer_id"], ())):
                bought += 1
            else:
                abandoned += 1
    total = abandoned + bought
    assert 0.3 < abandoned / total < 0.8 and bought / total > 0.15


def test_cli_writes_the_same_bytes(tmp_path, capsys):
    out = tmp_path / "events.jsonl"
    args = dict(events=500, customers=50, days=3, seed=5, start="2026-02-01")
    assert main([f"--{k}={v}" for k, v in args.items()] + [f"--out={out}"]) == 0
    assert out.read_bytes() == _bytes(**args)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        list(generate(10, 10, 1, 7, "01/01/2026"))
    with pytest.raises(ValueError, match="at least 1"):
        list(generate(0, 10, 1, 7, "2026-01-01"))
