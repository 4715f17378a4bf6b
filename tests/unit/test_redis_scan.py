"""`RedisStore.scan_states` over a fake client: batches of distinct customers, fetched through
the store's own `load_many_encoded` (the one read of states), no server needed."""

from __future__ import annotations

from engine.state.redis import RedisStore


class _FakeClient:
    """SCAN and MGET over a dict, as redis-py's single-node client answers them (bytes keys)."""

    def __init__(self, data: dict[str, bytes], scanned: list[str]) -> None:
        self.data, self.scanned, self.mgets = data, scanned, []

    def scan_iter(self, match: str, count: int):
        assert match == "te:s:{*"
        return (key.encode() for key in self.scanned)

    def mget(self, keys: list[str]) -> list[bytes | None]:
        self.mgets.append(keys)
        return [self.data.get(k) for k in keys]


def test_scan_states_batches_distinct_customers_through_load_many_encoded():
    store = RedisStore("redis://127.0.0.1:1/0")   # never connects: the client is replaced
    data = {f"te:s:{{c{i}}}": f"state {i}".encode() for i in range(5)}
    # SCAN may repeat a key (within a batch it is fetched once); c3 is deleted between SCAN and MGET
    scanned = ["te:s:{c0}", "te:s:{c0}", "te:s:{c1}", "te:s:{c2}", "te:s:{c3}", "te:s:{c4}"]
    del data["te:s:{c3}"]
    client = store.client = _FakeClient(data, scanned)
    batches = list(store.scan_states(batch=2))
    # one MGET per batch, of its distinct customers' keys (watched at the client: a compiled
    # store's methods cannot be patched)
    assert client.mgets == [["te:s:{c0}", "te:s:{c1}"], ["te:s:{c2}", "te:s:{c3}"], ["te:s:{c4}"]]
    assert batches == [[("c0", b"state 0"), ("c1", b"state 1")], [("c2", b"state 2")], [("c4", b"state 4")]]
