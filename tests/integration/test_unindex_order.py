"""A commit that unindexes a customer (the index scan found it without a state) and writes its
new state with a deadline in the same commit: the deadline stays indexed, in every store. The
Redis commit script removed after it added (the in-memory store does the reverse), so such a
customer's deadline was lost once it left the cache (found in review)."""

from __future__ import annotations

import uuid

import pytest

from engine.state.customer import CustomerState, encode_state
from engine.state.redis import RedisStore
from engine.testing import InMemoryStore


@pytest.mark.parametrize("kind", ["memory", "redis", "cluster"])
def test_a_customer_unindexed_and_written_in_one_commit_keeps_its_deadline(kind, request):
    if kind == "memory":
        store = InMemoryStore()
    else:
        url = request.getfixturevalue("redis_url" if kind == "redis" else "redis_cluster_url")
        store = RedisStore(url, f"unindex{uuid.uuid4().hex[:6]}", cluster=kind == "cluster")
    image = encode_state(CustomerState(last_ts=1000))
    store.commit("p-0", {"gone": image}, 1, {"gone": 4000})   # indexed; then its state is lost
    store.commit("p-0", {"x": image}, 2, {"x": 5000}, unindex=["x", "gone"], expected_offset=1)
    assert store.due_customers("p-0", 10_000) == ["x"]   # before, on Redis: [] ("gone" rightly removed)
