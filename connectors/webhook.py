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

In the receiver's own format (`connectors.webhook_body`): `body` is a JSON template that
replaces the trigger object, `batch_body` wraps a request's items (`{"events": "{items}"}`,
even with `batch_size=1`), and placeholders in `url`'s path or query give each request its own
target (`/customers/{customer_id}/events`; then `batch_size` must be 1). The idempotency key
and the signature are as above: the signature is over the rendered body, as sent.

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
In the live engine the sink's relay calls `deliver`: one attempt per request, and a `Failure`
per trigger not delivered: transient for connection errors, timeouts, 5xx, 408 and 429 (with
the `Retry-After` seconds when given), permanent for other 4xx, 3xx and a certificate not
accepted. The relay retries the transient ones for as long as it takes and dead-letters the
permanent ones to `dead_letter_path`, pacing its retries with `backoff_base_s`/`backoff_max_s`.
`max_retries` below, and the sink writing that file itself, are this module's own policy for
standalone use (`write_batch`, e.g. `bench.webhook_client`).

Standalone, at least once. A request is retried on connection errors, timeouts, 5xx, 408 and 429, up to
`max_retries` times after the first attempt, with exponential backoff and full jitter capped
at `backoff_max_s`; a numeric `Retry-After` is honoured (capped at `backoff_max_s` as well, so
one receiver cannot stall the dataflow longer). Other 4xx (and 3xx: redirects are not
followed) are the receiver refusing the request, so they are not retried. A request that
still fails is written to the dead-letter file (`WebhookDeadLetter`, one JSON line each) as
soon as it has failed, while the rest of the batch is still being sent, and the file is
flushed after each line, so an operator tailing it sees a dead receiver within one request's
retries, not at the end of the batch. With no dead-letter file, `write_batch` raises
`SinkError` after the rest of the batch was sent. `write_batch` returns only when every
request was delivered or dead-lettered: the caller blocks, so the triggers waiting for a slow
receiver cannot pile up in memory.

The deadline of an attempt
--------------------------
`timeout_s` is the wall-clock budget of one attempt, all of it: connecting (TCP and TLS),
sending the request and reading the whole response. A receiver that trickles its headers or
body a byte at a time, or accepts the connection and never answers, costs one `timeout_s`
per attempt, and the attempt counts as a timeout (retried, logged at WARNING).

Neither `http.client` nor httpx has such a deadline: their timeouts apply to each socket
operation, so a byte every 3 s resets a 5 s timeout forever (httpx's timeouts are per phase
and per read, encode/httpx#1450 is the open request for a total one). Here each blocking
socket call of an attempt (connect per address, TLS handshake, each send, each receive) is
given what is left of the attempt's deadline as its timeout, so their sum cannot exceed it;
past the deadline the next call raises `TimeoutError` before it blocks. The sockets are
`socket.socket` / `ssl.SSLSocket` subclasses that do this in `send`/`sendall`/`recv_into`,
the calls `http.client` makes (the TLS one through `SSLContext.sslsocket_class`). That was
chosen over a watchdog thread that shuts a late socket down: no second thread touches a
socket, so there is no race between a deadline firing and a connection going back to the
pool, and no TLS object is torn down under a reader. Not covered: name resolution
(`getaddrinfo` has no timeout; a receiver given by IP address or a cached name does not wait
on it).

Why `http.client` and not httpx
-------------------------------
Measured with `python -m bench.webhook_client` (this sink and the same sink on one
`httpx.Client`, interleaved rounds in one run, a raw asyncio receiver in its own process that
answers at once, batch_size=1, 2-core VM, Python 3.11, httpx 0.28.1): at concurrency 1,
5,050 vs 1,640 requests/s (httpx 0.32x), p50 0.18 vs 0.56 ms, p99 0.44 vs 1.9 ms, client CPU
155 vs 533 µs per request (3.4x); at concurrency 4, 3,560 vs 1,080 requests/s (0.30x), p99
2.7 vs 7.7 ms, CPU 288 vs 912 µs (3.2x). Two runs agreed within 10% on the ratios. Against a
receiver that answers in 2 ms, httpx still used 2.5x the CPU and gave 0.72-0.83x the
requests/s. The CPU is the figure that matters: the sink's threads share the GIL with the
evaluation core, so what a request costs is taken from event processing. httpx would not give
the total deadline either: its timeouts are per phase and per read, and doing what the sockets
here do would mean a network backend of our own under httpcore's connection pool, and so a
transport of our own too (`httpx.HTTPTransport` takes no backend). What it would remove is
small here: the pool is a queue of at most `concurrency` connections, TLS is
`ssl.create_default_context()`, and reconnecting a stale keep-alive connection is one loop.
HTTP/2 (httpx with h2) multiplexes requests on one connection, which pays against a distant
receiver with many requests in flight, not at `concurrency` 4 on keep-alive connections.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import math
import queue
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from typing import Annotated, Any, cast
from urllib.parse import urlsplit

import msgspec

from connectors.base import DEFAULT_STATUSES, Backoff, Failure, Sink, SinkError, Status
from connectors.file import FileSink, FileSinkConfig
from connectors.webhook_body import BatchTemplate, BodyTemplate, UrlTemplate, has_placeholder
from engine.actions.trigger import Trigger

__all__ = ["WebhookSinkConfig", "WebhookSink", "WebhookDeadLetter", "batch_idempotency_key"]

log = logging.getLogger("connectors.webhook")

_RETRY_STATUSES = frozenset({408, 429})
_REASON_BODY_CHARS = 300
_MAX_READ = 64 * 1024  # a longer response body is not read to its end; the connection is dropped
_USER_AGENT = "trigger-engine-webhook/0.1"
_OWN_HEADERS = frozenset({"idempotency-key", "x-trigger-signature", "x-trigger-timestamp", "content-length"})



def _doc(text: str) -> msgspec.Meta:
    """A setting's one-line description: `triggers run --help` prints it (engine.cli.settings_help)."""
    return msgspec.Meta(description=text)



class WebhookSinkConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Where and how to POST triggers; see the module docstring for the wire contract.

    `timeout_s` is the wall-clock deadline of one attempt: connecting, sending and reading the
    whole response (see "The deadline of an attempt" in the module docstring). `max_retries`
    counts retries after the first attempt (6 means up to 7 attempts) when the sink is used
    standalone (`write_batch`); a live run's relay retries transient failures for as long as they
    last instead. `concurrency` is how many requests are in flight at once, each on its own
    keep-alive connection. `dead_letter_path` is a JSONL file, appended to, for triggers refused
    for good (a live run's relay writes it; None there: webhook-dead-letters.jsonl).
    `statuses`: which triggers a live run sends here (SPEC §4: only `sent` unless asked).
    """

    url: Annotated[str, _doc(
        "the receiver, http:// or https://; placeholders in its path or query (/customers/{customer_id}/events, "
        "percent-encoded) give each request its own, with batch_size 1; credentials in it are never logged")]
    batch_size: Annotated[int, msgspec.Meta(ge=1), _doc(
        "most triggers per request (a request holds at most relay.batch_size too): 1 posts one JSON object, "
        "more post a JSON array or batch_body")] = 1
    timeout_s: Annotated[float, msgspec.Meta(gt=0), _doc(
        "deadline of one whole attempt, connect to last byte (a hanging receiver costs one timeout, then "
        "a retry)")] = 5.0
    max_retries: Annotated[int, msgspec.Meta(ge=0), _doc(
        "retries of the sink used on its own; a live run's relay retries transient failures for as long as "
        "they last")] = 6
    backoff_base_s: Annotated[float, msgspec.Meta(ge=0), _doc(
        "first wait before a failed request is tried again (doubling, with jitter)")] = 0.2
    backoff_max_s: Annotated[float, msgspec.Meta(ge=0), _doc("longest wait between two tries")] = 10.0
    secret: Annotated[str | None, _doc(
        "HMAC-SHA256 key: X-Trigger-Signature sha256=<hex> over \"<X-Trigger-Timestamp>.<body>\"; best set "
        "by its variable (never logged)")] = None
    headers: Annotated[dict[str, str], _doc(
        "extra request headers, e.g. Authorization (masked in logs); not Idempotency-Key, Content-Length or "
        "the X-Trigger-* signature headers, which the sink sets")] = {}
    concurrency: Annotated[int, msgspec.Meta(ge=1), _doc(
        "requests of a batch in flight at once, each on its own keep-alive connection")] = 4
    dead_letter_path: Annotated[str | None, _doc(
        "where triggers the receiver refuses for good (4xx other than 408/429) go, JSONL, appended; unset: "
        "webhook-dead-letters.jsonl")] = None
    statuses: Annotated[tuple[Status, ...], _doc(
        "which triggers go here: sent only unless it lists held_out, suppressed")] = DEFAULT_STATUSES
    body: Annotated[str | None, _doc(
        "the receiver's body for one trigger: JSON text with \"{field}\" placeholders (trigger_id, "
        "customer_id, action, fired_at, fired_at_unix, payload, payload.KEY, ...; a whole-string one keeps "
        "the value's JSON type; {{ }} are literal braces); unset: the trigger object (connectors/webhook_body.py)"
        )] = None
    batch_body: Annotated[str | None, _doc(
        "the body of a request around its items (body, or trigger objects), e.g. '{\"events\": \"{items}\"}'; "
        "unset: one item per request, or a JSON array with batch_size > 1")] = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if has_placeholder(parts.netloc) or has_placeholder(parts.scheme):
            raise ValueError(f"url: a placeholder may only be in the path or query, not the host: {self.url!r}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be an http:// or https:// URL with a host, got {self.url!r}")
        url = UrlTemplate(_target(parts))   # raises on a placeholder that is not a field
        if url.names and self.batch_size > 1:
            raise ValueError(f"url has {', '.join('{' + n + '}' for n in url.names)}, so a request is one "
                             f"trigger's: batch_size must be 1, not {self.batch_size}")
        if self.body is not None:
            BodyTemplate(self.body)
        if self.batch_body is not None:
            BatchTemplate(self.batch_body)
        try:
            _ = parts.port   # raises on a port that is not a number
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
    which alone updates counters and writes dead letters (no locks needed). `start`: the
    position of its first trigger in the batch; `permanent`: refused, not worth sending again."""

    triggers: Sequence[Trigger]
    key: str
    attempts: int
    retries: int
    ok: bool
    status: int | None = None
    reason: str = ""
    start: int = 0
    permanent: bool = False
    retry_after_s: float | None = None


class WebhookSink(Sink):
    """POSTs triggers, `concurrency` requests at a time, and blocks until each is delivered
    or dead-lettered.

    One sink per worker; `write_batch` is not meant to be called from several threads at
    once. `stats` counts triggers unless said otherwise, updated by the thread that calls
    `write_batch` as each request ends: `delivered` with a 2xx, `retries` requests sent
    again, `failed` not delivered (dead-lettered or raised), `dead_lettered` written to the
    dead-letter file. `write_batch` returns only once each request is done, so `settle` only
    makes the dead letters written since the last one durable.

    For health reports, in `stats` too, readable from any thread at any time (the delivery
    threads write them under a lock):

    - `waiting_since`: `time.time()` of the first failed attempt since the receiver last gave
      a final answer, None while it answers. A failed attempt is one with no usable answer
      (connection error, timeout, TLS failure) or a retryable status (5xx, 408, 429); a final
      answer is a 2xx or a refusal (other 4xx, 3xx: the receiver is up and judged the
      request). It stays set across batches, after the failing requests were dead-lettered,
      until such an answer comes: a receiver that is down is reported down for as long as it
      is, not for one batch at a time.
    - `last_error`: while `waiting_since` is set, the reason of the last failed attempt, as
      logged; None with it. (A refusal is not an outage: it is logged at ERROR, written to the
      dead-letter file and counted in `dead_lettered`.)

    Both mean what they mean on every sink (`SinkStats`), so a health report reads any sink alike.
    """

    def __init__(self, config: WebhookSinkConfig) -> None:
        super().__init__()
        self.config = config
        parts = urlsplit(config.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port if parts.port is not None else (443 if self._https else 80)
        self._url = UrlTemplate(_target(parts))
        self._path = self._url.path(_NO_TRIGGER) if not self._url.names else ""   # constant, or per request
        self._body = BodyTemplate(config.body) if config.body is not None else None
        self._batch = BatchTemplate(config.batch_body) if config.batch_body is not None else None
        host_port = self._host if parts.port is None else f"{self._host}:{parts.port}"
        if ":" in self._host:  # an IPv6 literal
            host_port = f"[{self._host}]" + ("" if parts.port is None else f":{parts.port}")
        self.endpoint = f"{parts.scheme}://{host_port}{parts.path or '/'}"
        self.name = f"webhook sink ({self.endpoint})"
        self._tls: ssl.SSLContext | None = None
        if self._https:
            self._tls = ssl.create_default_context()
            self._tls.sslsocket_class = _DeadlineSSLSocket
        self._secret = config.secret.encode() if config.secret is not None else None
        self._base_headers = {"Content-Type": "application/json", "User-Agent": _USER_AGENT, **config.headers}
        self._encoder = msgspec.json.Encoder()
        # Connections waiting for a request; at most `concurrency` exist, since at most that
        # many requests run at once. Created lazily, reused (keep-alive) across batches.
        self._idle: queue.SimpleQueue[_Connection] = queue.SimpleQueue()
        self._all: list[_Connection] = []
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
        self._unsettled_dead_letters = False
        self._health_lock = threading.Lock()

    def deliver(self, triggers: Sequence[Trigger]) -> list[Failure]:
        """One attempt per request of `batch_size` triggers, `concurrency` at a time; a
        `Failure` for each trigger of a request that failed (see "Delivery")."""
        if self._closed:
            raise ValueError(f"write to a closed {self.name}")
        size = self.config.batch_size
        starts = range(0, len(triggers), size)
        if self._pool is None or len(starts) <= 1:
            outcomes = [self._deliver(triggers[i : i + size], 0, i) for i in starts]
        else:
            outcomes = list(self._pool.map(lambda i: self._deliver(triggers[i : i + size], 0, i), starts))
        failures: list[Failure] = []
        stats = self.stats
        for outcome in outcomes:
            if outcome.ok:
                stats.delivered += len(outcome.triggers)
                continue
            failures += [Failure(outcome.start + j, outcome.reason, outcome.permanent, outcome.retry_after_s)
                         for j in range(len(outcome.triggers))]
        return failures

    def write_batch(self, triggers: Sequence[Trigger]) -> None:
        """Send the triggers in requests of `batch_size`; return when each request was
        delivered or dead-lettered. A request that fails for good is dead-lettered at once,
        while the others are still in flight. Raises `SinkError` if some failed and there is
        no dead-letter file (after the others were sent)."""
        if self._closed:
            raise ValueError(f"write to a closed {self.name}")
        if not triggers:
            return
        size = self.config.batch_size
        chunks = [triggers[i : i + size] for i in range(0, len(triggers), size)]
        undelivered: list[_Outcome] = []  # only kept without a dead-letter file
        retries = self.config.max_retries
        if self._pool is None or len(chunks) == 1:
            for chunk in chunks:
                self._account(self._deliver(chunk, retries), undelivered)
        else:
            futures: list[Future[_Outcome]] = [self._pool.submit(self._deliver, chunk, retries) for chunk in chunks]
            try:
                for future in as_completed(futures):
                    self._account(future.result(), undelivered)
            except BaseException:
                # Writing a dead letter failed (disk full?): nothing more is started; the
                # requests in flight finish in the pool (`close` waits for them), unaccounted:
                # the batch is not acknowledged, so it is replayed.
                for future in futures:
                    future.cancel()
                raise
        if undelivered:
            first = undelivered[0]
            raise SinkError(
                self.name,
                sum(len(o.triggers) for o in undelivered),
                f"{first.reason} (after {first.attempts} attempt(s), idempotency key {first.key}); "
                "set dead_letter_path to keep such triggers instead of stopping",
            )

    def _account(self, outcome: _Outcome, undelivered: list[_Outcome]) -> None:
        """Account for one finished request, in the caller's thread: counters, and the dead
        letter written and flushed now, not when the batch is done."""
        stats = self.stats
        stats.retries += outcome.retries
        n = len(outcome.triggers)
        if outcome.ok:
            stats.delivered += n
            return
        stats.failed += n
        if self._dead_letters is None:
            undelivered.append(outcome)
            return
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        letter = WebhookDeadLetter(
            outcome.reason, outcome.status, outcome.attempts, self.endpoint, outcome.key, now, list(outcome.triggers)
        )
        self._dead_letters.write_batch([letter])
        self._dead_letters.flush()
        self._unsettled_dead_letters = True
        stats.dead_lettered += n

    def _deliver(self, chunk: Sequence[Trigger], max_retries: int, start: int = 0) -> _Outcome:
        """One request, with up to `max_retries` retries. Runs in a pool thread; never raises
        for what the network or the receiver does."""
        one = self.config.batch_size == 1
        key = chunk[0].trigger_id if one else batch_idempotency_key([t.trigger_id for t in chunk])
        try:
            body, path = self._request(chunk, one)
        except Exception as exc:   # a value the template cannot render: this request can never be sent
            reason = f"body template: {type(exc).__name__}: {exc}"
            log.error("%s: idempotency key %s not sent: %s", self.name, key, reason)
            return _Outcome(chunk, key, 0, 0, False, None, reason, start, permanent=True)
        cfg = self.config
        conn = self._checkout()
        backoff = Backoff(cfg.backoff_base_s, cfg.backoff_max_s)
        try:
            attempt = 0
            while True:
                attempt += 1
                status, reason, retry, retry_after = (
                    self._attempt(conn, body, key) if path == self._path else self._attempt(conn, body, key, path))
                if status is not None and 200 <= status < 300:
                    self._answered()
                    return _Outcome(chunk, key, attempt, attempt - 1, True, status, start=start)
                if status is not None and not retry:
                    self._answered()  # refused: the receiver is up, and judged the request
                else:
                    self._failed_attempt(reason)
                if not retry or attempt > max_retries:
                    if max_retries or not retry:   # a single attempt that may be retried is the relay's to log
                        log.error(
                            "%s: giving up on idempotency key %s after %d attempt(s): %s",
                            self.name, key, attempt, reason,
                        )
                    return _Outcome(chunk, key, attempt, attempt - 1, False, status, reason, start,
                                    permanent=not retry, retry_after_s=retry_after)
                delay = backoff.next_delay()
                if retry_after is not None:
                    delay = min(retry_after, cfg.backoff_max_s)
                log.warning(
                    "%s: %s; retry %d/%d of idempotency key %s in %.2f s",
                    self.name, reason, attempt, max_retries, key, delay,
                )
                time.sleep(delay)
        finally:
            self._idle.put(conn)

    def _request(self, chunk: Sequence[Trigger], one: bool) -> tuple[bytes, str]:
        """The body as sent (what the signature covers) and the request target."""
        items: Sequence[Any] = chunk if self._body is None else [self._body.render(t) for t in chunk]
        if self._batch is not None:
            payload: Any = self._batch.wrap(list(items))
        else:
            payload = items[0] if one else items
        path = self._path or self._url.path(chunk[0])   # per request: batch_size is 1 then
        return self._encoder.encode(payload), path

    def _answered(self) -> None:
        """The receiver gave a final answer (a 2xx or a refusal): it is not waited for."""
        if self.stats.waiting_since is None:
            return  # the common case: no lock per delivered request
        with self._health_lock:
            self.stats.recovered()

    def _failed_attempt(self, reason: str) -> None:
        with self._health_lock:
            self.stats.failing(reason)

    def _attempt(self, conn: _Connection, body: bytes, key: str,
                 path: str | None = None) -> tuple[int | None, str, bool, float | None]:
        """One POST within one deadline (to `path`, else the url's): (status or None, reason,
        whether to retry, Retry-After seconds or None). `bench.webhook_client` overrides it with
        the first three arguments, which is all it is given for a url without placeholders."""
        headers = dict(self._base_headers)
        headers["Idempotency-Key"] = key
        if self._secret is not None:
            ts = str(time.time_ns() // 1_000_000)
            digest = hmac.new(self._secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
            headers["X-Trigger-Timestamp"] = ts
            headers["X-Trigger-Signature"] = f"sha256={digest}"
        conn.set_deadline(time.monotonic() + self.config.timeout_s)
        for fresh in (False, True):
            reused = conn.sock is not None
            try:
                conn.request("POST", path or self._path, body, headers)
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
                    # request, so reconnect and send again (within the same deadline) without
                    # counting an attempt.
                    continue
                return None, f"{type(exc).__name__}: {exc}", True, None
            except TimeoutError:
                conn.close()
                return None, f"timed out: no complete response within {self.config.timeout_s} s", True, None
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

    def _checkout(self) -> _Connection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        conn = _Connection(self._host, self._port, self._tls)
        with self._all_lock:
            self._all.append(conn)
        return conn

    def settle(self) -> None:
        """Make the dead letters written since the last call durable (fsync): once the engine
        commits, they are the only record of those triggers. Deliveries need no wait."""
        if self._unsettled_dead_letters and self._dead_letters is not None:
            self._dead_letters.settle()
            self._unsettled_dead_letters = False

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


def _target(parts: Any) -> str:
    """A URL's request target: its path (`/` when empty) and query."""
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


_NO_TRIGGER = cast(Trigger, None)   # for a URL without placeholders, which reads no field


def _remaining(deadline: float) -> float:
    """Seconds left until `deadline` (`time.monotonic()`); `TimeoutError` once it has passed
    (a timeout of 0 would make the socket non-blocking instead of timing out)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the attempt's deadline passed")
    return left


class _DeadlineSocket(socket.socket):
    """A TCP socket whose sends and receives each wait at most until `deadline`
    (`time.monotonic()`), so that a receiver pacing its bytes cannot stretch an attempt past
    it. Outside an attempt the deadline is past: I/O on an idle socket times out at once."""

    deadline = 0.0

    def sendall(self, data: Any, flags: int = 0) -> None:
        self.settimeout(_remaining(self.deadline))  # sendall's timeout covers the whole call
        return super().sendall(data, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self.settimeout(_remaining(self.deadline))
        return super().recv_into(buffer, nbytes, flags)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """The TLS counterpart (`SSLContext.sslsocket_class`); its `sendall` loops over `send`."""

    deadline = 0.0

    def send(self, data: Any, flags: int = 0) -> int:
        self.settimeout(_remaining(self.deadline))
        return super().send(data, flags)

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        self.settimeout(_remaining(self.deadline))
        return super().recv_into(buffer, nbytes, flags)


class _Connection(http.client.HTTPConnection):
    """A keep-alive HTTP/1.1 connection (TLS when given a context) whose every socket
    operation ends by the deadline of the current attempt (`set_deadline`)."""

    sock: _DeadlineSocket | _DeadlineSSLSocket | None  # what `connect` sets (None when closed)

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        super().__init__(host, port)
        self.default_port = 443 if tls is not None else 80  # Host: without the default port
        self._tls = tls
        self._deadline = 0.0  # set by each attempt

    def set_deadline(self, deadline: float) -> None:
        self._deadline = deadline
        if self.sock is not None:
            self.sock.deadline = deadline

    def connect(self) -> None:
        """Like `socket.create_connection` + TLS, each address and the handshake given only
        what is left of the deadline."""
        tcp = self._open_tcp()
        sock: _DeadlineSocket | _DeadlineSSLSocket = tcp
        try:
            tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                tcp.settimeout(_remaining(self._deadline))  # the handshake's total timeout
                # a _DeadlineSSLSocket: the context's sslsocket_class (see WebhookSink.__init__)
                sock = cast(_DeadlineSSLSocket, self._tls.wrap_socket(tcp, server_hostname=self.host))
        except BaseException:
            tcp.close()
            raise
        sock.deadline = self._deadline
        self.sock = sock

    def _open_tcp(self) -> _DeadlineSocket:
        error: OSError | None = None
        for family, kind, proto, _, address in socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM):
            sock = _DeadlineSocket(family, kind, proto)
            try:
                sock.settimeout(_remaining(self._deadline))
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error if error is not None else OSError(f"no address found for {self.host}")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a numeric `Retry-After`; an HTTP-date or garbage falls back to backoff."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
