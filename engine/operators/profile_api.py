"""The real-time profile API: `GET /customers/{id}` on the engine's HTTP port (beside /metrics
and /healthz, one server) answers the customer's state as the rules read it now
(`engine.offline.profile`), as JSON.

Where the state comes from: the partition worker of this process that has the customer in its
cache (it holds every event evaluated so far, committed or not), else Redis (the last commit;
a customer of another process's partitions, or not touched since start-up). 404 when neither
has the customer.

Thread safety: the server answers in its own threads while the dataflow's worker mutates the
cached states in place. Reading Redis only would be race-free but up to a commit interval
behind the cache; so the reader takes the worker's lock (`PartitionWorker.lock`, held by the
worker for each batch and each commit) only long enough to encode the customer's state to
bytes, and decodes and reads the copy after releasing it. The worker pays one uncontended lock
per batch; a request waits at most for the batch in hand.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import msgspec

from engine.core.times import now_ms
from engine.offline.profile import Source, customer_profile, encode_profile
from engine.state.customer import decode_state, encode_state
from engine.state.redis import REDIS_ERRORS

if TYPE_CHECKING:
    from engine.operators.partition import PartitionWorker
    from engine.rules.reload import LiveRules
    from engine.state.store import PartitionStore

log = logging.getLogger("engine.profile_api")

PATH = "/customers/"
JSON = "application/json"

Answer = tuple[int, bytes, dict[str, str]]   # status, JSON body, extra headers


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
    return status, msgspec.json.encode({"error": message}), headers or {}


LOCK_WAIT_S = 0.5   # the longest a request waits for a worker busy with a batch (or stuck retrying Redis)

class LiveCustomers:
    """What this process can answer about customers: its workers' caches, then the store."""

    def __init__(self) -> None:
        self._workers: list[PartitionWorker] = []
        self._lock = threading.Lock()
        self._rules: LiveRules | None = None
        self._open_store: Callable[[], PartitionStore] | None = None
        self._store: PartitionStore | None = None
        self.token: str | None = None

    def configure(self, rules: LiveRules, open_store: Callable[[], PartitionStore], token: str | None) -> None:
        """A new dataflow (`build_flow`): its rules, its store and the bearer token asked (None: none)."""
        with self._lock:
            self._rules, self._open_store, self._store, self.token = rules, open_store, None, token
            self._workers = []

    def watch(self, worker: PartitionWorker) -> None:
        """A worker that now owns its partition here; one watched before for that partition no
        longer does (its cache would answer an old state of the partition's customers)."""
        with self._lock:
            self._workers = [w for w in self._workers if w.name != worker.name]
            self._workers.append(worker)

    def forget(self, worker: PartitionWorker) -> None:
        """A worker that ended (its partition done here, stopped or failed): its cache is read no more."""
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)

    def _cached(self, customer_id: str) -> bytes | None:
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            # See the module docstring: a copy, under the worker's lock. The worker holds it for a
            # batch, Redis retries included: a request does not wait out an outage behind it, but
            # asks Redis (whose own error then answers 503) after LOCK_WAIT_S.
            if not worker.lock.acquire(timeout=LOCK_WAIT_S):
                continue
            try:
                state = worker.cache.get(customer_id)
                if state is not None:
                    return encode_state(state)
            finally:
                worker.lock.release()
        return None

    def _stored(self, customer_id: str) -> bytes | None:
        with self._lock:
            if self._store is None and self._open_store is not None:
                self._store = self._open_store()
            store = self._store
        if store is None:
            return None
        return store.load_many_encoded([customer_id]).get(customer_id)

    def answer(self, path: str, headers: Mapping[str, str]) -> Answer:
        """The HTTP answer to `GET path` (`/customers/<url-encoded id>`)."""
        token = self.token
        if token is not None:
            given = headers.get("Authorization") or ""
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
                return _error(401, "a bearer token is required (Authorization: Bearer <profile_api_token>)",
                              {"WWW-Authenticate": 'Bearer realm="customers"'})
        customer_id = unquote(urlsplit(path).path[len(PATH):])
        if not customer_id:
            return _error(404, "no customer id: GET /customers/<id>")
        rules = self._rules
        if rules is None:
            return _error(503, "the engine is starting: no rules loaded yet")
        source = Source.CACHE
        image = self._cached(customer_id)
        if image is None:
            source = Source.REDIS
            try:
                image = self._stored(customer_id)
            except REDIS_ERRORS as e:
                return _error(503, f"Redis is unavailable: {type(e).__name__}: {e}")
        if image is None:
            return _error(404, f"unknown customer {customer_id!r}: no state in this engine's cache or in Redis")
        try:
            state = decode_state(image)
        except msgspec.DecodeError as e:
            return _error(500, f"the stored state of {customer_id!r} is not an engine state: {e}")
        profile = customer_profile(rules.rules, customer_id, state, now_ms(), source)
        return 200, encode_profile(profile), {}


CUSTOMERS = LiveCustomers()
