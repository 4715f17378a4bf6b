"""Redis stream sink: triggers appended to a Redis stream, for consumers that read with
XREAD / XREADGROUP.

Each item becomes one entry with the fields `trigger_id` (when the item has one, so a
consumer can de-duplicate without parsing) and `data` (the item as JSON). A batch is one
MULTI/EXEC pipeline of XADDs, one round trip: a connection lost mid-batch leaves none of it
or all of it in the stream, so a retry duplicates at most a whole batch whose reply was
lost, never a part of it. Delivery is at least once.

The stream is trimmed approximately (`MAXLEN ~`) on every XADD, so it cannot grow without
bound; approximate trimming lets Redis drop whole macro nodes, which is far cheaper than
exact trimming. A consumer that falls more than `maxlen` entries behind loses the oldest.

Redis unavailable (connection refused or lost, timeout, still loading): the whole batch is
sent again with exponential backoff and full jitter, each retry logged at WARNING, for up to
`retry_for_s`; then `SinkError`. The caller blocks meanwhile, so nothing piles up in memory.
Errors Redis itself answers (wrong key type, out of memory) are not retried.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from connectors.base import DEFAULT_STATUSES, Backoff, Failure, Sink, SinkError, Status

__all__ = ["RedisStreamSinkConfig", "RedisStreamSink"]

log = logging.getLogger("connectors.redis_stream")

_BACKOFF_BASE_S = 0.05
_BACKOFF_CAP_S = 5.0
_SOCKET_TIMEOUT_S = 10.0
_CONNECT_TIMEOUT_S = 5.0
_RETRYABLE = (redis.ConnectionError, redis.TimeoutError)  # BusyLoadingError is a ConnectionError
# Answers of a server that will take the batch later: out of memory (until something is freed or
# trimmed), busy with a script, a replica that is being promoted.
_PASSING_ANSWERS = ("OOM", "BUSY", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN")


class RedisStreamSinkConfig(msgspec.Struct, forbid_unknown_fields=True):
    """`url` is a redis-py URL (``redis://host:6379/0``, ``rediss://`` for TLS); `stream` the
    stream key; `maxlen` the approximate length the stream is trimmed to (None: never
    trimmed); `retry_for_s` how long one batch keeps retrying while Redis is unreachable."""

    url: Annotated[str, msgspec.Meta(description="redis:// or rediss:// (TLS); a password in it is never logged")]
    stream: Annotated[str, msgspec.Meta(description="the stream key")] = "triggers"
    maxlen: Annotated[Annotated[int, msgspec.Meta(ge=1)] | None, msgspec.Meta(
        description="the approximate length the stream is trimmed to (unset: never trimmed)")] = 1_000_000
    retry_for_s: Annotated[float, msgspec.Meta(
        ge=0, description="how long one batch keeps retrying while Redis is unreachable")] = 300.0
    statuses: Annotated[tuple[Status, ...], msgspec.Meta(
        description="which triggers go here: sent only unless it lists held_out, suppressed")] = DEFAULT_STATUSES
    dead_letter_path: Annotated[str | None, msgspec.Meta(
        description="where a live run writes the triggers this stream refuses for good (an error Redis "
                    "answers); unset: redis_stream-dead-letters.jsonl")] = None


class RedisStreamSink(Sink):
    """Appends structs to a Redis stream, one round trip per batch.

    One sink per worker. `stats`: `delivered` (entries added), `retries` (batches sent again
    after a connection error or timeout), `failed` (entries of batches that raised),
    `waiting_since`/`last_error` while Redis is unreachable. `write_batch` returns once the
    batch is in the stream, so `settle` has nothing to wait for.
    """

    def __init__(self, config: RedisStreamSinkConfig) -> None:
        super().__init__()
        self.config = config
        self.name = f"redis stream sink (stream {config.stream!r})"
        # redis-py's own retries are off: this sink owns the retry policy, so `retry_for_s`
        # is the whole story and every retry is logged. Timeouts are bounded so that a hung
        # server shows up as a TimeoutError, not as a worker blocked for ever.
        self._client: Any = redis.Redis.from_url(
            config.url,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=_SOCKET_TIMEOUT_S,
            socket_connect_timeout=_CONNECT_TIMEOUT_S,
        )
        self._encoder = msgspec.json.Encoder()

    def deliver(self, items: Sequence[msgspec.Struct]) -> list[Failure]:
        """One MULTI/EXEC of XADDs: all delivered, or all failed alike. Unreachable, timing out,
        or answering that it cannot take writes now (`_PASSING_ANSWERS`): transient; any other
        error Redis answers (a key of another type, a command refused): permanent."""
        if not items:
            return []
        pipe = self._client.pipeline(transaction=True)
        for fields in self._entries(items):
            pipe.xadd(self.config.stream, fields, maxlen=self.config.maxlen, approximate=True)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            why = f"{type(exc).__name__}: {exc}"
            passing = isinstance(exc, _RETRYABLE) or str(exc).startswith(_PASSING_ANSWERS)
            if passing:
                self.stats.failing(why)
            return [Failure(i, why, permanent=not passing) for i in range(len(items))]
        finally:
            pipe.reset()
        self.stats.delivered += len(items)
        self.stats.recovered()
        return []

    def _entries(self, items: Sequence[msgspec.Struct]) -> list[dict[str, bytes]]:
        encode = self._encoder.encode
        entries: list[dict[str, bytes]] = []
        for item in items:
            tid = getattr(item, "trigger_id", None)
            data = encode(item)
            entries.append({"trigger_id": tid.encode(), "data": data} if isinstance(tid, str) else {"data": data})
        return entries

    def write_batch(self, items: Sequence[msgspec.Struct]) -> None:
        """XADD every item in one MULTI/EXEC; retry the whole batch while Redis is
        unreachable, then raise `SinkError`."""
        if not items:
            return
        entries = self._entries(items)
        stream, maxlen = self.config.stream, self.config.maxlen
        deadline = time.monotonic() + self.config.retry_for_s
        backoff = Backoff(_BACKOFF_BASE_S, _BACKOFF_CAP_S)
        stats = self.stats
        while True:
            pipe = self._client.pipeline(transaction=True)
            for fields in entries:
                pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)
            try:
                pipe.execute()
            except _RETRYABLE as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    first = f"{type(exc).__name__}: {exc} (retried for {self.config.retry_for_s} s)"
                    stats.failed += len(entries)
                    raise SinkError(self.name, len(entries), first) from exc
                delay = min(remaining, backoff.next_delay())
                log.warning(
                    "%s: %s: %s; retry %d of a batch of %d in %.2f s",
                    self.name, type(exc).__name__, exc, backoff.attempt, len(entries), delay,
                )
                stats.retries += 1
                stats.failing(f"{type(exc).__name__}: {exc}")
                time.sleep(delay)
                continue
            except redis.RedisError as exc:
                stats.failed += len(entries)
                raise SinkError(self.name, len(entries), f"{type(exc).__name__}: {exc}") from exc
            finally:
                pipe.reset()
            stats.delivered += len(entries)
            stats.recovered()
            return

    def settle(self) -> None:
        """Nothing to wait for: `write_batch` returned only once its batch was in the stream."""

    def close(self) -> None:
        """Release the connections."""
        self._client.close()
