"""Webhook sink: triggers POSTed as JSON to a marketing-automation system's HTTP endpoint.

What a receiver gets
--------------------
With `batch_size=1` (the default) each request carries one trigger: the body is the trigger
object of SPEC §4 and the `Idempotency-Key` header is its `trigger_id`. With `batch_size=N`
the body is a JSON array of up to N triggers, each with its own `trigger_id`, and
`Idempotency-Key` is `batch_idempotency_key(ids)`: the hex BLAKE2b-128 digest (personalised
with ``b"trigger-batch"``) of the batch's trigger ids, sorted and joined by ``"\\n"``. The
same set of triggers always gets the same key, but a replay after a crash may cut batches
differently, so a receiver of batched bodies should de-duplicate per `trigger_id`.

Every request has `Content-Type: application/json`; headers from the config (for example
`Authorization`) are added, but cannot replace the idempotency and signature headers.

Signature (when `secret` is set)
--------------------------------
::

    X-Trigger-Timestamp: <milliseconds since the Unix epoch, when the request was sent>
    X-Trigger-Signature: sha256=<hex HMAC-SHA256(key=secret utf-8, msg=f"{timestamp}.".encode() + body)>

`body` is the exact request body bytes. Each attempt is signed anew, so a retry carries a
fresh timestamp. To verify, a receiver recomputes the HMAC over the timestamp header, a
``.`` and the raw body as received (before any JSON parsing), compares it with
`hmac.compare_digest`, and rejects timestamps too far from its clock (say 5 minutes), so a
captured request cannot be replayed later::

    expected = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    ok = hmac.compare_digest(f"sha256={expected}", signature_header) and abs(now_ms - int(ts)) < 300_000

Delivery
--------
At least once. A request is retried on connection errors, timeouts, 5xx, 408 and 429, up to
`max_retries` times after the first attempt, with exponential backoff and full jitter capped
at `backoff_max_s`; a numeric `Retry-After` is honoured (capped at `backoff_max_s` as well, so
one receiver cannot stall the dataflow longer). Other 4xx (and 3xx: redirects are not
followed) are the receiver refusing the request, so they are not retried. A request that
still fails is written to the dead-letter file (`WebhookDeadLetter`, one JSON line each); with
no dead-letter file, `write_batch` raises `SinkError` after the rest of the batch was sent.
`write_batch` returns only when every request was delivered or dead-lettered: the caller
blocks, so the triggers waiting for a slow receiver cannot pile up in memory.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import math
import queue
import ssl
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Annotated
from urllib.parse import urlsplit

import msgspec

from connectors import Sink, SinkError, backoff_delay
from connectors.file import FileSink, FileSinkConfig
from engine.triggers import Trigger

__all__ = ["WebhookSinkConfig", "WebhookSink", "WebhookDeadLetter", "batch_idempotency_key"]

log = logging.getLogger("connectors.webhook")

_RETRY_STATUSES = frozenset({408, 429})
_REASON_BODY_CHARS = 300
_MAX_READ = 64 * 1024  # a longer response body is not read to its end; the connection is dropped
_USER_AGENT = "trigger-engine-webhook/0.1"
_OWN_HEADERS = frozenset({"idempotency-key", "x-trigger-signature", "x-trigger-timestamp", "content-length"})

_Positive = Annotated[float, msgspec.Meta(gt=0)]
_NonNegative = Annotated[float, msgspec.Meta(ge=0)]


class WebhookSinkConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Where and how to POST triggers; see the module docstring for the wire contract.

    `timeout_s` bounds connecting and each socket read of one attempt. `max_retries` counts
    retries after the first attempt (6 means up to 7 attempts). `concurrency` is how many
    requests are in flight at once, each on its own keep-alive connection.
    `dead_letter_path` is a JSONL file, appended to, for requests that failed for good.
    """

    url: str
    batch_size: Annotated[int, msgspec.Meta(ge=1)] = 1
    timeout_s: _Positive = 5.0
    max_retries: Annotated[int, msgspec.Meta(ge=0)] = 6
    backoff_base_s: _NonNegative = 0.2
    backoff_max_s: _NonNegative = 10.0
    secret: str | None = None
    headers: dict[str, str] = {}
    concurrency: Annotated[int, msgspec.Meta(ge=1)] = 4
    dead_letter_path: str | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be an http:// or https:// URL with a host, got {self.url!r}")
        try:
            parts.port
        except ValueError:
            raise ValueError(f"url has an invalid port: {self.url!r}") from None
        clash = sorted(name for name in self.headers if name.lower() in _OWN_HEADERS)
        if clash:
            raise ValueError(f"headers {clash} are set by the sink itself and cannot be configured")


class WebhookDeadLetter(msgspec.Struct):
    """A request the receiver never accepted, with what is needed to replay it by hand.

    `reason` is the last failure in words; `status` the last HTTP status (null when there
    was no response: connection error, timeout); `attempts` how many times it was sent;
    `endpoint` the URL without credentials or query; `failed_at` RFC 3339 UTC.
    """

    reason: str
    status: int | None
    attempts: int
    endpoint: str
    idempotency_key: str
    failed_at: str
    triggers: list[Trigger]


def batch_idempotency_key(trigger_ids: Sequence[str]) -> str:
    """The `Idempotency-Key` of a batched body: the same set of ids always gives the same key."""
    h = hashlib.blake2b(digest_size=16, person=b"trigger-batch")
    h.update("\n".join(sorted(trigger_ids)).encode())
    return h.hexdigest()


class _Outcome(msgspec.Struct):
    """What became of one request, returned from the worker thread to the caller's thread,
    which alone updates counters and writes dead letters (no locks needed)."""

    triggers: Sequence[Trigger]
    key: str
    attempts: int
    retries: int
    ok: bool
    status: int | None = None
    reason: str = ""


class WebhookSink(Sink):
    """POSTs triggers, `concurrency` requests at a time, and blocks until each is delivered
    or dead-lettered.

    One sink per worker; `write_batch` is not meant to be called from several threads at
    once. Counters (triggers unless said otherwise): `sent` delivered with a 2xx, `retries`
    requests sent again, `failed` not delivered (dead-lettered or raised), `dead_lettered`
    written to the dead-letter file.
    """

    def __init__(self, config: WebhookSinkConfig) -> None:
        self.config = config
        parts = urlsplit(config.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_port = self._host if self._port is None else f"{self._host}:{self._port}"
        if ":" in self._host:  # an IPv6 literal
            host_port = f"[{self._host}]" + ("" if self._port is None else f":{self._port}")
        self.endpoint = f"{parts.scheme}://{host_port}{parts.path or '/'}"
        self.name = f"webhook sink ({self.endpoint})"
        self._ssl = ssl.create_default_context() if self._https else None
        self._secret = config.secret.encode() if config.secret is not None else None
        self._base_headers = {"Content-Type": "application/json", "User-Agent": _USER_AGENT, **config.headers}
        self._encoder = msgspec.json.Encoder()
        # Connections waiting for a request; at most `concurrency` exist, since at most that
        # many requests run at once. Created lazily, reused (keep-alive) across batches.
        self._idle: queue.SimpleQueue[http.client.HTTPConnection] = queue.SimpleQueue()
        self._all: list[http.client.HTTPConnection] = []
        self._all_lock = threading.Lock()
        self._pool = (
            ThreadPoolExecutor(config.concurrency, thread_name_prefix="webhook") if config.concurrency > 1 else None
        )
        self._dead_letters = (
            FileSink(FileSinkConfig(path=config.dead_letter_path, append=True))
            if config.dead_letter_path is not None
            else None
        )
        self._closed = False
        self.sent = 0
        self.retries = 0
        self.failed = 0
        self.dead_lettered = 0

    def write_batch(self, triggers: Sequence[Trigger]) -> None:
        """Send the triggers in requests of `batch_size`; return when each request was
        delivered or dead-lettered. Raises `SinkError` if some failed and there is no
        dead-letter file (after the others were sent)."""
        if self._closed:
            raise ValueError(f"write to a closed {self.name}")
        if not triggers:
            return
        size = self.config.batch_size
        chunks = [triggers[i : i + size] for i in range(0, len(triggers), size)]
        if self._pool is None or len(chunks) == 1:
            outcomes = [self._deliver(chunk) for chunk in chunks]
        else:
            outcomes = list(self._pool.map(self._deliver, chunks))
        failed = [o for o in outcomes if not o.ok]
        for outcome in outcomes:
            self.retries += outcome.retries
            if outcome.ok:
                self.sent += len(outcome.triggers)
        if not failed:
            return
        self.failed += sum(len(o.triggers) for o in failed)
        if self._dead_letters is None:
            first = failed[0]
            raise SinkError(
                self.name,
                sum(len(o.triggers) for o in failed),
                f"{first.reason} (after {first.attempts} attempt(s), idempotency key {first.key}); "
                "set dead_letter_path to keep such triggers instead of stopping",
            )
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        letters = [
            WebhookDeadLetter(o.reason, o.status, o.attempts, self.endpoint, o.key, now, list(o.triggers))
            for o in failed
        ]
        self._dead_letters.write_batch(letters)
        self._dead_letters.flush()  # the batch counts as handled once this returns
        self.dead_lettered += sum(len(o.triggers) for o in failed)

    def _deliver(self, chunk: Sequence[Trigger]) -> _Outcome:
        """One request, with its retries. Runs in a pool thread; never raises for what the
        network or the receiver does."""
        if self.config.batch_size == 1:
            trigger = chunk[0]
            body, key = self._encoder.encode(trigger), trigger.trigger_id
        else:
            body, key = self._encoder.encode(chunk), batch_idempotency_key([t.trigger_id for t in chunk])
        cfg = self.config
        conn = self._checkout()
        try:
            attempt = 0
            while True:
                attempt += 1
                status, reason, retry, retry_after = self._attempt(conn, body, key)
                if status is not None and 200 <= status < 300:
                    return _Outcome(chunk, key, attempt, attempt - 1, True, status)
                if not retry or attempt > cfg.max_retries:
                    log.error(
                        "%s: giving up on idempotency key %s after %d attempt(s): %s",
                        self.name, key, attempt, reason,
                    )
                    return _Outcome(chunk, key, attempt, attempt - 1, False, status, reason)
                delay = backoff_delay(attempt - 1, cfg.backoff_base_s, cfg.backoff_max_s)
                if retry_after is not None:
                    delay = min(retry_after, cfg.backoff_max_s)
                log.warning(
                    "%s: %s; retry %d/%d of idempotency key %s in %.2f s",
                    self.name, reason, attempt, cfg.max_retries, key, delay,
                )
                time.sleep(delay)
        finally:
            self._idle.put(conn)

    def _attempt(
        self, conn: http.client.HTTPConnection, body: bytes, key: str
    ) -> tuple[int | None, str, bool, float | None]:
        """One POST: (status or None, reason, whether to retry, Retry-After seconds or None)."""
        headers = dict(self._base_headers)
        headers["Idempotency-Key"] = key
        if self._secret is not None:
            ts = str(time.time_ns() // 1_000_000)
            digest = hmac.new(self._secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
            headers["X-Trigger-Timestamp"] = ts
            headers["X-Trigger-Signature"] = f"sha256={digest}"
        for fresh in (False, True):
            reused = conn.sock is not None
            try:
                conn.request("POST", self._path, body, headers)
                resp = conn.getresponse()
                data = resp.read(_MAX_READ)
                # Keep-alive needs the body read to its end; a longer one is not worth reading.
                if not resp.isclosed() and resp.read(1):
                    conn.close()
                status = resp.status
            except ssl.SSLCertVerificationError as exc:
                conn.close()
                return None, f"TLS certificate not accepted: {exc}", False, None
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                conn.close()
                if reused and not fresh:
                    # The receiver closed an idle keep-alive connection: not a failure of the
                    # request, so reconnect and send again without counting an attempt.
                    continue
                return None, f"{type(exc).__name__}: {exc}", True, None
            except TimeoutError:
                conn.close()
                return None, f"timed out after {self.config.timeout_s} s", True, None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                return None, f"{type(exc).__name__}: {exc}", True, None
            if 200 <= status < 300:
                return status, "", False, None
            text = data[:_REASON_BODY_CHARS].decode("utf-8", errors="replace").strip()
            reason = f"HTTP {status} {resp.reason}" + (f": {text}" if text else "")
            retry = status >= 500 or status in _RETRY_STATUSES
            return status, reason, retry, _retry_after(resp.getheader("Retry-After")) if retry else None
        raise AssertionError("unreachable")  # the loop returns on its second pass

    def _checkout(self) -> http.client.HTTPConnection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        conn: http.client.HTTPConnection
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.config.timeout_s, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.config.timeout_s)
        with self._all_lock:
            self._all.append(conn)
        return conn

    def close(self) -> None:
        """Close the keep-alive connections and the dead-letter file. Nothing is pending:
        `write_batch` only returns once its requests are done."""
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        if self._dead_letters is not None:
            self._dead_letters.close()



def _retry_after(value: str | None) -> float | None:
    """Seconds from a numeric `Retry-After`; an HTTP-date or garbage falls back to backoff."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
