"""Webhook sink against a real HTTP receiver on 127.0.0.1: what arrives, retries, dead letters.

The receiver is a `ThreadingHTTPServer` speaking HTTP/1.1 (so keep-alive is exercised),
driven per test by a `respond(n, request)` function; backoff is shortened so every test stays
well under a second or two, except the deadline tests, which wait out a few one-second
attempts against receivers that trickle their answer or never give one.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import pytest

from connectors.base import SinkError
from connectors.webhook import WebhookDeadLetter, WebhookSink, WebhookSinkConfig, batch_idempotency_key
from engine.actions.trigger import SENT, Trigger, trigger_id


class Request(msgspec.Struct):
    n: int  # 0-based arrival order
    headers: dict[str, str]  # names lower-cased
    body: bytes
    client_port: int
    at: float  # time.monotonic() when the whole request had arrived
    path: str = ""  # the request target, path and query


class Reply(msgspec.Struct):
    status: int = 200
    headers: dict[str, str] = {}
    body: bytes = b"ok"
    sleep_s: float = 0.0  # before answering
    drop_connection: bool = False  # close the connection after replying, without saying so
    trickle_s: float = 0.0  # if set: send `trickle` one byte at a time, this long apart
    trickle: str = "body"  # "headers" (the status line and headers) or "body"


Respond = Callable[[int, Request], Reply]


class Receiver:
    """A real HTTP server in a thread that records every request it gets."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.respond: Respond = lambda n, req: Reply()
        self.requests: list[Request] = []
        self.replies: list[Reply] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go in two writes; do not wait for delayed ACKs

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    req = Request(
                        len(receiver.requests),
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                        self.client_address[1],
                        time.monotonic(),
                        self.path,
                    )
                    receiver.requests.append(req)
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                try:
                    reply = receiver.respond(req.n, req)
                    with receiver._lock:
                        receiver.replies.append(reply)
                    if reply.sleep_s:
                        time.sleep(reply.sleep_s)
                    if reply.trickle_s:
                        self._trickle(reply)
                        return
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                    if reply.drop_connection:
                        self.close_connection = True
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1

            def _trickle(self, reply: Reply) -> None:
                head = f"HTTP/1.1 {reply.status} OK\r\nContent-Length: {len(reply.body)}\r\n\r\n".encode()
                slow = head if reply.trickle == "headers" else reply.body
                try:
                    if reply.trickle == "body":
                        self.wfile.write(head)
                    for i in range(len(slow)):
                        time.sleep(reply.trickle_s)
                        self.wfile.write(slow[i : i + 1])
                    if reply.trickle == "headers":
                        self.wfile.write(reply.body)
                except OSError:  # the client gave up: what the deadline tests expect
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the client gave up on a slow reply: expected in the timeout tests

        self.server = Server(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/hooks/triggers?src=engine"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def successes(self) -> list[Request]:
        return [req for req, rep in zip(self.requests, self.replies) if 200 <= rep.status < 300]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.stop()


def _trigger(n: int) -> Trigger:
    return Trigger(
        trigger_id=trigger_id("cart-abandoned", f"c-{n}", f"e-{n}"),
        rule_id="cart-abandoned",
        customer_id=f"c-{n}",
        action="cart-reminder",
        channel="email",
        status=SENT,
        reason=None,
        fired_at="2026-11-20T14:33:11.250Z",
        cause_event_id=f"e-{n}",
        payload={"sku": "A-77", "value": 129.8},
    )


def _config(url: str, **overrides: Any) -> WebhookSinkConfig:
    fast: dict[str, Any] = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 2.0}
    return WebhookSinkConfig(url=url, **{**fast, **overrides})


def _dead_letters(path: Path) -> list[WebhookDeadLetter]:
    decoder = msgspec.json.Decoder(WebhookDeadLetter)
    return [decoder.decode(line) for line in path.read_bytes().splitlines()]


def test_each_trigger_is_one_request_keyed_by_its_trigger_id(receiver: Receiver) -> None:
    triggers = [_trigger(n) for n in range(5)]
    with WebhookSink(_config(receiver.url, concurrency=1, headers={"Authorization": "Bearer t0k"})) as sink:
        sink.write_batch(triggers)
        sink.write_batch([])
    assert len(receiver.requests) == 5
    got = {req.headers["idempotency-key"]: req for req in receiver.requests}
    assert set(got) == {t.trigger_id for t in triggers}
    for t in triggers:
        req = got[t.trigger_id]
        assert msgspec.json.decode(req.body, type=Trigger) == t  # the body is the trigger itself
        assert req.headers["content-type"] == "application/json"
        assert req.headers["authorization"] == "Bearer t0k"
        assert "x-trigger-signature" not in req.headers
    # one keep-alive connection carried all five requests
    assert len({req.client_port for req in receiver.requests}) == 1
    assert (sink.stats.delivered, sink.stats.retries, sink.stats.failed, sink.stats.dead_lettered) == (5, 0, 0, 0)


def test_signature_verifies_with_the_documented_scheme(receiver: Receiver) -> None:
    secret = "s3cr3t-ünicode"
    with WebhookSink(_config(receiver.url, secret=secret)) as sink:
        sink.write_batch([_trigger(1)])
    (req,) = receiver.requests
    ts = req.headers["x-trigger-timestamp"]
    assert abs(int(ts) - time.time() * 1000) < 5_000  # milliseconds, now
    expected = hmac.new(secret.encode(), ts.encode() + b"." + req.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(req.headers["x-trigger-signature"], f"sha256={expected}")
    # a wrong secret or a tampered body does not verify
    wrong = hmac.new(b"other", ts.encode() + b"." + req.body, hashlib.sha256).hexdigest()
    assert req.headers["x-trigger-signature"] != f"sha256={wrong}"
    tampered = hmac.new(secret.encode(), ts.encode() + b"." + req.body + b" ", hashlib.sha256).hexdigest()
    assert req.headers["x-trigger-signature"] != f"sha256={tampered}"


@pytest.mark.parametrize("concurrency", [1, 4])
def test_every_other_request_failing_still_delivers_each_trigger_once(
    receiver: Receiver, caplog: pytest.LogCaptureFixture, concurrency: int
) -> None:
    receiver.respond = lambda n, req: Reply(500, body=b"boom") if n % 2 == 0 else Reply()
    triggers = [_trigger(n) for n in range(10)]
    with caplog.at_level(logging.WARNING, logger="connectors.webhook"):
        with WebhookSink(_config(receiver.url, concurrency=concurrency)) as sink:
            sink.write_batch(triggers)
    delivered = Counter(req.headers["idempotency-key"] for req in receiver.successes())
    assert delivered == Counter({t.trigger_id: 1 for t in triggers})
    server_errors = sum(1 for rep in receiver.replies if rep.status == 500)
    if concurrency == 1:  # strictly alternating: each trigger fails once, then succeeds
        assert server_errors == 10
    assert sink.stats.retries == server_errors >= 5
    assert (sink.stats.delivered, sink.stats.failed, sink.stats.dead_lettered) == (10, 0, 0)
    retry_logs = [r for r in caplog.records if r.name == "connectors.webhook" and r.levelno == logging.WARNING]
    assert len(retry_logs) == server_errors
    assert all("HTTP 500" in r.getMessage() and "boom" in r.getMessage() for r in retry_logs)
    if concurrency == 1:
        assert all("retry 1/6" in r.getMessage() for r in retry_logs)


def test_503_with_retry_after_waits_as_asked(receiver: Receiver) -> None:
    receiver.respond = lambda n, req: Reply(503, headers={"Retry-After": "1"}) if n == 0 else Reply()
    with WebhookSink(_config(receiver.url, backoff_max_s=5.0)) as sink:
        started = time.monotonic()
        sink.write_batch([_trigger(1)])
        elapsed = time.monotonic() - started
    assert [rep.status for rep in receiver.replies] == [503, 200]
    assert 0.95 <= elapsed < 3.0
    assert sink.stats.retries == 1 and sink.stats.delivered == 1


def test_retry_after_is_capped_at_backoff_max(receiver: Receiver) -> None:
    receiver.respond = lambda n, req: Reply(429, headers={"Retry-After": "3600"}) if n == 0 else Reply()
    with WebhookSink(_config(receiver.url, backoff_max_s=0.1)) as sink:
        started = time.monotonic()
        sink.write_batch([_trigger(1)])
        assert time.monotonic() - started < 1.0
    assert [rep.status for rep in receiver.replies] == [429, 200]


def test_400_goes_straight_to_the_dead_letter_file(receiver: Receiver, tmp_path: Path) -> None:
    dead = tmp_path / "webhook-dead.jsonl"
    dead.write_bytes(b'{"from": "the previous run"}\n')  # appended to, never truncated
    receiver.respond = lambda n, req: Reply(400, body=b'{"error": "unknown action"}') if n == 0 else Reply()
    with WebhookSink(_config(receiver.url, dead_letter_path=str(dead), concurrency=1)) as sink:
        sink.write_batch([_trigger(1), _trigger(2)])
    assert len(receiver.requests) == 2  # the 400 was not retried
    lines = dead.read_bytes().splitlines()
    assert lines[0] == b'{"from": "the previous run"}'
    (letter,) = _dead_letters_from(lines[1:])
    assert letter.triggers == [_trigger(1)]
    assert letter.status == 400 and letter.attempts == 1
    assert "HTTP 400" in letter.reason and "unknown action" in letter.reason
    assert letter.idempotency_key == _trigger(1).trigger_id
    assert letter.endpoint == receiver.url.split("?")[0]
    assert (sink.stats.delivered, sink.stats.retries, sink.stats.failed, sink.stats.dead_lettered) == (1, 0, 1, 1)


def test_settle_makes_new_dead_letters_durable_before_a_commit(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    receiver.respond = lambda n, req: Reply(400) if n == 0 else Reply()
    with WebhookSink(_config(receiver.url, dead_letter_path=str(tmp_path / "dead.jsonl"), concurrency=1)) as sink:
        sink.settle()
        assert synced == []                      # nothing dead-lettered yet: no fsync
        sink.write_batch([_trigger(1), _trigger(2)])
        sink.settle()
        assert len(synced) == 1                  # the dead letter is on disk before the state commits
        sink.settle()
        assert len(synced) == 1                  # and only new ones cost an fsync


def _dead_letters_from(lines: list[bytes]) -> list[WebhookDeadLetter]:
    decoder = msgspec.json.Decoder(WebhookDeadLetter)
    return [decoder.decode(line) for line in lines]


def test_always_failing_receiver_is_dead_lettered_after_max_retries(
    receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = tmp_path / "dead.jsonl"
    receiver.respond = lambda n, req: Reply(502, body=b"bad gateway")
    with caplog.at_level(logging.WARNING, logger="connectors.webhook"):
        with WebhookSink(_config(receiver.url, max_retries=3, dead_letter_path=str(dead))) as sink:
            sink.write_batch([_trigger(1)])
    assert len(receiver.requests) == 4  # the first attempt and three retries
    (letter,) = _dead_letters(dead)
    assert letter.triggers == [_trigger(1)]
    assert letter.status == 502 and letter.attempts == 4
    assert "HTTP 502" in letter.reason and "bad gateway" in letter.reason
    assert (sink.stats.delivered, sink.stats.retries, sink.stats.failed, sink.stats.dead_lettered) == (0, 3, 1, 1)
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 3
    assert any(r.levelno == logging.ERROR and "giving up" in r.getMessage() for r in caplog.records)


def test_without_a_dead_letter_file_a_failure_raises(receiver: Receiver) -> None:
    receiver.respond = lambda n, req: Reply(422) if req.headers["idempotency-key"] == _trigger(2).trigger_id else Reply()
    with WebhookSink(_config(receiver.url)) as sink:
        with pytest.raises(SinkError) as info:
            sink.write_batch([_trigger(1), _trigger(2), _trigger(3)])
    assert info.value.count == 1
    assert "HTTP 422" in info.value.first_error and _trigger(2).trigger_id in info.value.first_error
    # the others were still delivered before the error was raised
    assert {req.headers["idempotency-key"] for req in receiver.successes()} == {
        _trigger(1).trigger_id,
        _trigger(3).trigger_id,
    }
    assert sink.stats.delivered == 2 and sink.stats.failed == 1


def test_slow_receiver_times_out_is_retried_then_dead_lettered(receiver: Receiver, tmp_path: Path) -> None:
    dead = tmp_path / "dead.jsonl"
    receiver.respond = lambda n, req: Reply(sleep_s=0.6)
    config = _config(receiver.url, timeout_s=0.15, max_retries=2, dead_letter_path=str(dead))
    with WebhookSink(config) as sink:
        started = time.monotonic()
        sink.write_batch([_trigger(1)])
        elapsed = time.monotonic() - started
    assert len(receiver.requests) == 3
    assert elapsed < 1.5  # three timeouts of 0.15 s and short backoffs, not three 0.6 s waits
    (letter,) = _dead_letters(dead)
    assert letter.status is None and letter.attempts == 3
    assert "timed out" in letter.reason
    assert letter.triggers == [_trigger(1)]
    assert sink.stats.retries == 2 and sink.stats.dead_lettered == 1


def test_connection_refused_is_retried_then_dead_lettered(tmp_path: Path) -> None:
    dead = tmp_path / "dead.jsonl"
    closed = Receiver()
    url = closed.url
    closed.stop()  # nothing listens on that port any more
    with WebhookSink(_config(url, max_retries=2, dead_letter_path=str(dead))) as sink:
        sink.write_batch([_trigger(1)])
    (letter,) = _dead_letters(dead)
    assert letter.status is None and letter.attempts == 3
    assert "ConnectionRefusedError" in letter.reason


def test_batch_size_sends_arrays_with_a_stable_key(receiver: Receiver) -> None:
    triggers = [_trigger(n) for n in range(7)]
    with WebhookSink(_config(receiver.url, batch_size=3)) as sink:
        sink.write_batch(triggers)
    bodies = {req.headers["idempotency-key"]: msgspec.json.decode(req.body, type=list[Trigger]) for req in receiver.requests}
    assert sorted(len(b) for b in bodies.values()) == [1, 3, 3]
    assert sorted((t for b in bodies.values() for t in b), key=lambda t: t.customer_id) == sorted(
        triggers, key=lambda t: t.customer_id
    )
    for key, body in bodies.items():
        assert key == batch_idempotency_key([t.trigger_id for t in body])
        assert key == batch_idempotency_key([t.trigger_id for t in reversed(body)])  # order-independent
    assert sink.stats.delivered == 7


def test_concurrency_overlaps_requests_up_to_the_limit(receiver: Receiver) -> None:
    receiver.respond = lambda n, req: Reply(sleep_s=0.2)
    with WebhookSink(_config(receiver.url, concurrency=4)) as sink:
        started = time.monotonic()
        sink.write_batch([_trigger(n) for n in range(8)])
        elapsed = time.monotonic() - started
    assert receiver.max_in_flight == 4
    assert elapsed < 8 * 0.2 * 0.75  # sequential would take 1.6 s; four at a time about 0.4 s
    assert len({req.client_port for req in receiver.requests}) == 4  # one connection per slot
    assert sink.stats.delivered == 8


def test_idle_connection_closed_by_the_receiver_is_reopened_without_a_retry(receiver: Receiver) -> None:
    with WebhookSink(_config(receiver.url, concurrency=1)) as sink:
        sink.write_batch([_trigger(1)])
        receiver.respond = lambda n, req: Reply(drop_connection=True)
        sink.write_batch([_trigger(2)])  # the receiver closes the connection after this reply
        time.sleep(0.05)
        receiver.respond = lambda n, req: Reply()
        sink.write_batch([_trigger(3)])
    assert [req.headers["idempotency-key"] for req in receiver.successes()] == [
        _trigger(n).trigger_id for n in (1, 2, 3)
    ]
    assert sink.stats.retries == 0 and sink.stats.delivered == 3


@pytest.fixture
def tls_server(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1 (its PEM file) and a server context using it."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    return cert, tls


def test_https_receiver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tls_server: tuple[Path, ssl.SSLContext]
) -> None:
    """The certificate trusted through SSL_CERT_FILE (which the default TLS context honours):
    the sink verifies the certificate and posts over TLS."""
    cert, tls = tls_server
    receiver = Receiver(tls)
    try:
        # not trusted yet: a certificate error is final, not retried
        dead = tmp_path / "dead.jsonl"
        with WebhookSink(_config(receiver.url, dead_letter_path=str(dead))) as sink:
            sink.write_batch([_trigger(1)])
        (letter,) = _dead_letters(dead)
        assert letter.attempts == 1 and "certificate" in letter.reason
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        with WebhookSink(_config(receiver.url, secret="k")) as sink:
            sink.write_batch([_trigger(1), _trigger(2)])
        assert {req.headers["idempotency-key"] for req in receiver.successes()} == {
            _trigger(1).trigger_id,
            _trigger(2).trigger_id,
        }
        assert sink.stats.delivered == 2
    finally:
        receiver.stop()


def test_config_is_validated_when_loaded() -> None:
    with pytest.raises(msgspec.ValidationError, match="http"):
        msgspec.convert({"url": "ftp://example.com/x"}, WebhookSinkConfig)
    with pytest.raises(msgspec.ValidationError, match="concurrency"):
        msgspec.convert({"url": "http://h/x", "concurrency": 0}, WebhookSinkConfig)
    with pytest.raises(msgspec.ValidationError, match="Idempotency-Key"):
        msgspec.convert({"url": "http://h/x", "headers": {"Idempotency-Key": "x"}}, WebhookSinkConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"url": "http://h/x", "batchsize": 3}, WebhookSinkConfig)
    https = msgspec.convert({"url": "https://hooks.example.com/t"}, WebhookSinkConfig)
    assert WebhookSink(https).endpoint == "https://hooks.example.com/t"


# --- The deadline of an attempt, dead letters at once, and what the sink reports -----------------
#
# The old sink's timeout applied to each socket read, so these receivers, which send a byte
# more often than `timeout_s`, held an attempt for as long as they liked (and then delivered).


class Sampler:
    """Reads `sink.stats.waiting_since` and `sink.stats.last_error` every few ms from another thread while
    the test runs, as a health endpoint would."""

    def __init__(self, sink: WebhookSink) -> None:
        self.samples: list[tuple[float, float | None, str | None]] = []  # (time.time(), waiting_since, last_error)
        self._stop = threading.Event()

        def run() -> None:
            while not self._stop.wait(0.005):
                self.samples.append((time.time(), sink.stats.waiting_since, sink.stats.last_error))

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def first_waiting(self) -> float | None:
        return next((since for _, since, _ in self.samples if since is not None), None)


@pytest.mark.parametrize("trickle", ["headers", "body"])
@pytest.mark.parametrize("every_s", [0.3, 3.0], ids=["byte-every-0.3s", "byte-every-3s"])
def test_a_trickling_receiver_costs_one_timeout_per_attempt(
    receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture, trickle: str, every_s: float
) -> None:
    dead = tmp_path / "dead.jsonl"
    receiver.respond = lambda n, req: Reply(body=b"x" * 40, trickle_s=every_s, trickle=trickle)
    config = _config(receiver.url, timeout_s=1.0, max_retries=1, dead_letter_path=str(dead))
    with caplog.at_level(logging.WARNING, logger="connectors.webhook"):
        with WebhookSink(config) as sink:
            sink.write_batch([_trigger(1)])
            ended = time.monotonic()
    first, second = receiver.requests
    # each attempt ends about timeout_s after it started (the first includes a backoff <= 0.05 s)
    assert 0.9 < second.at - first.at < 2.5
    assert 0.9 < ended - second.at < 2.5
    (letter,) = _dead_letters(dead)
    assert letter.status is None and letter.attempts == 2 and letter.triggers == [_trigger(1)]
    assert "timed out" in letter.reason
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "timed out" in warnings[0] and "retry 1/1" in warnings[0]
    assert (sink.stats.delivered, sink.stats.retries, sink.stats.failed, sink.stats.dead_lettered) == (0, 1, 1, 1)
    assert sink.stats.last_error is not None and "timed out" in sink.stats.last_error


def test_a_receiver_that_accepts_and_never_answers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The connection is accepted, the request is never read nor answered; while the sink
    retries, `waiting_since` says since when, and it stays set after the dead letter."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: [held.append(server.accept()[0]) for _ in range(3)], daemon=True).start()
    dead = tmp_path / "dead.jsonl"
    url = f"http://127.0.0.1:{server.getsockname()[1]}/hooks"
    try:
        with caplog.at_level(logging.WARNING, logger="connectors.webhook"):
            with WebhookSink(_config(url, timeout_s=0.5, max_retries=2, dead_letter_path=str(dead))) as sink:
                assert sink.stats.waiting_since is None
                sampler = Sampler(sink)
                started = time.time()
                sink.write_batch([_trigger(1)])
                elapsed = time.time() - started
                sampler.stop()
                assert 1.4 < elapsed < 3 * 2.5  # three attempts of about 0.5 s
                first = sampler.first_waiting()
                assert first is not None and started + 0.4 < first < started + 1.0  # the first timeout
                assert sink.stats.waiting_since == first  # the receiver has not answered since
                assert sink.stats.last_error is not None and "timed out" in sink.stats.last_error
        assert len(held) == 3  # each attempt on a new connection
        (letter,) = _dead_letters(dead)
        assert letter.status is None and letter.attempts == 3 and "timed out" in letter.reason
        assert sum(r.levelno == logging.WARNING and "timed out" in r.getMessage() for r in caplog.records) == 2
    finally:
        for conn in held:
            conn.close()
        server.close()


def test_a_trickling_tls_receiver_is_cut_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tls_server: tuple[Path, ssl.SSLContext]
) -> None:
    cert, tls = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    receiver = Receiver(tls)
    receiver.respond = lambda n, req: Reply(body=b"x" * 40, trickle_s=0.2)
    dead = tmp_path / "dead.jsonl"
    try:
        with WebhookSink(_config(receiver.url, timeout_s=0.8, max_retries=0, dead_letter_path=str(dead))) as sink:
            started = time.monotonic()
            sink.write_batch([_trigger(1)])
            assert time.monotonic() - started < 2.0
        (letter,) = _dead_letters(dead)
        assert letter.attempts == 1 and "timed out" in letter.reason
    finally:
        receiver.stop()


def test_dead_letters_are_written_as_requests_fail_not_when_the_batch_is_done(
    receiver: Receiver, tmp_path: Path
) -> None:
    """Concurrency 4, 8 triggers: two are answered slowly (1.5 s), the six others are refused
    (400) or fail and are retried once (503). Each of the six is in the dead-letter file,
    readable by someone tailing it, while the slow ones are still in flight."""
    dead = tmp_path / "dead.jsonl"
    triggers = [_trigger(n) for n in range(8)]
    index = {t.trigger_id: n for n, t in enumerate(triggers)}

    def respond(n: int, req: Request) -> Reply:
        i = index[req.headers["idempotency-key"]]
        if i < 2:
            return Reply(sleep_s=1.5)
        return Reply(400, body=b"no such action") if i % 2 == 0 else Reply(503)

    receiver.respond = respond
    seen: list[tuple[float, int]] = []  # (time.monotonic(), dead letters in the file)
    done = threading.Event()

    def tail() -> None:
        while not done.wait(0.01):
            seen.append((time.monotonic(), len(dead.read_bytes().splitlines()) if dead.exists() else 0))

    config = _config(receiver.url, concurrency=4, max_retries=1, dead_letter_path=str(dead))
    with WebhookSink(config) as sink:
        watcher = threading.Thread(target=tail, daemon=True)
        watcher.start()
        started = time.monotonic()
        sink.write_batch(triggers)
        returned = time.monotonic()
        done.set()
        watcher.join()
    assert returned - started >= 1.5
    first_seen = next((t for t, count in seen if count >= 1), returned)
    all_seen = next((t for t, count in seen if count >= 6), returned)
    assert first_seen - started < 0.5
    assert all_seen - started < 1.2  # well before the slow ones were answered
    letters = _dead_letters(dead)
    assert sorted(index[l.idempotency_key] for l in letters) == [2, 3, 4, 5, 6, 7]
    assert {index[l.idempotency_key]: l.attempts for l in letters} == {2: 1, 3: 2, 4: 1, 5: 2, 6: 1, 7: 2}
    assert (sink.stats.delivered, sink.stats.retries, sink.stats.failed, sink.stats.dead_lettered) == (2, 3, 6, 6)


def test_waiting_since_and_last_error_follow_the_receiver(receiver: Receiver, tmp_path: Path) -> None:
    dead = tmp_path / "dead.jsonl"
    config = _config(receiver.url, concurrency=1, max_retries=2, backoff_max_s=0.2, dead_letter_path=str(dead))
    with WebhookSink(config) as sink:
        assert (sink.stats.waiting_since, sink.stats.last_error) == (None, None)
        sink.write_batch([_trigger(0)])
        assert (sink.stats.waiting_since, sink.stats.last_error) == (None, None)

        # two failures (each followed by a 0.1 s wait), then delivered: waiting while retrying, not after
        busy = Reply(503, headers={"Retry-After": "0.1"}, body=b"busy")
        receiver.respond = lambda n, req: busy if n in (1, 2) else Reply()
        sampler = Sampler(sink)
        started = time.time()
        sink.write_batch([_trigger(1)])
        time.sleep(0.02)
        sampler.stop()
        first = sampler.first_waiting()
        assert first is not None and started <= first <= time.time()
        errors = {error for _, _, error in sampler.samples if error is not None}
        assert errors and all("HTTP 503" in e and "busy" in e for e in errors)
        assert (sink.stats.waiting_since, sink.stats.last_error) == (None, None)
        assert sink.stats.delivered == 2 and sink.stats.retries == 2

        # a receiver that is down: still waiting after the batch was dead-lettered, and after the next
        receiver.respond = lambda n, req: Reply(502, body=b"bad gateway")
        sink.write_batch([_trigger(2)])
        down_since = sink.stats.waiting_since
        assert down_since is not None and "HTTP 502" in (sink.stats.last_error or "")
        sink.write_batch([_trigger(3)])
        assert sink.stats.waiting_since == down_since
        assert sink.stats.dead_lettered == 2

        # back up: the next delivery clears both
        receiver.respond = lambda n, req: Reply()
        sink.write_batch([_trigger(4)])
        assert (sink.stats.waiting_since, sink.stats.last_error) == (None, None)

        # a refusal is an answer: the receiver is up, and not waited for (the trigger is
        # dead-lettered, and counted): a 502, then the retry refused
        answers = iter([Reply(502), Reply(409, body=b"duplicate")])
        receiver.respond = lambda n, req: next(answers)
        sink.write_batch([_trigger(5)])
        assert (sink.stats.waiting_since, sink.stats.last_error) == (None, None)
        assert sink.stats.dead_lettered == 3


@pytest.mark.parametrize("batch_size", [1, 2])
def test_deliver_makes_one_attempt_and_classifies_each_trigger(receiver: Receiver, tmp_path: Path,
                                                              batch_size: int) -> None:
    """The relay's call: no retry, no dead-letter file; a Failure per trigger not delivered."""
    answers = {"e-1": Reply(400, body=b"unknown action"), "e-2": Reply(503, headers={"Retry-After": "7"}),
               "e-4": Reply(429)}

    def respond(n: int, req: Request) -> Reply:   # a request answers for the first of its triggers that has an answer
        body = msgspec.json.decode(req.body)
        events = [t["cause_event_id"] for t in (body if isinstance(body, list) else [body])]
        return next((answers[e] for e in events if e in answers), Reply())

    receiver.respond = respond
    triggers = [_trigger(n) for n in range(6)] if batch_size == 1 else [_trigger(n) for n in (0, 1, 3, 2, 5)]
    dead = tmp_path / "dead.jsonl"
    with WebhookSink(_config(receiver.url, batch_size=batch_size, dead_letter_path=str(dead))) as sink:
        failures = sink.deliver(triggers)
    by_event = {triggers[f.index].cause_event_id: f for f in failures}
    if batch_size == 1:
        assert sorted(by_event) == ["e-1", "e-2", "e-4"] and len(receiver.requests) == 6   # one attempt each
        assert by_event["e-1"].permanent and "HTTP 400" in by_event["e-1"].reason
        assert not by_event["e-2"].permanent and by_event["e-2"].retry_after_s == 7.0
        assert not by_event["e-4"].permanent and by_event["e-4"].retry_after_s is None
        assert sink.stats.delivered == 3
    else:   # requests [0, 1] refused and [3, 2] retryable: each trigger of a request shares its answer
        assert sorted(by_event) == ["e-0", "e-1", "e-2", "e-3"] and len(receiver.requests) == 3
        assert by_event["e-0"].permanent and not by_event["e-3"].permanent
        assert sink.stats.delivered == 1
    assert not dead.exists() or dead.read_bytes() == b""     # dead-lettering is the relay's


def test_deliver_to_a_receiver_that_never_answers_is_a_transient_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:   # accepts (backlog), never reads or answers
        url = f"http://127.0.0.1:{server.getsockname()[1]}/hook"
        with WebhookSink(_config(url, timeout_s=0.3)) as sink:
            started = time.monotonic()
            (failure,) = sink.deliver([_trigger(1)])
            assert time.monotonic() - started < 1.0
    assert not failure.permanent and "timed out" in failure.reason
    assert sink.stats.waiting_since is not None and "timed out" in (sink.stats.last_error or "")


# --- Bodies in the receiver's own format (connectors.webhook_body) ---------------------------------

CIO_BODY = '{"name": "{action}", "timestamp": "{fired_at_unix}", "data": {"rule": "{rule_id}", "sku": "{payload.sku}"}}'


def test_a_body_template_is_what_arrives_signed_over_the_body_as_sent(receiver: Receiver) -> None:
    """Per-trigger requests to a URL per customer; the signature verifies over the rendered bytes."""
    secret = "s3cr3t"
    triggers = [_trigger(n) for n in range(3)] + [msgspec.structs.replace(_trigger(3), customer_id="a/b c")]
    url = receiver.url.split("/hook")[0] + "/api/v1/customers/{customer_id}/events?src=engine"
    with WebhookSink(_config(url, secret=secret, body=CIO_BODY, concurrency=2)) as sink:
        sink.write_batch(triggers)
    assert sorted(r.path for r in receiver.requests) == sorted(
        [f"/api/v1/customers/c-{n}/events?src=engine" for n in range(3)] + ["/api/v1/customers/a%2Fb%20c/events?src=engine"])
    by_key = {r.headers["idempotency-key"]: r for r in receiver.requests}
    assert set(by_key) == {t.trigger_id for t in triggers}
    for req in receiver.requests:
        assert msgspec.json.decode(req.body) == {"name": "cart-reminder", "timestamp": 1795185191,
                                                 "data": {"rule": "cart-abandoned", "sku": "A-77"}}
        ts = req.headers["x-trigger-timestamp"]
        expected = hmac.new(secret.encode(), ts.encode() + b"." + req.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(req.headers["x-trigger-signature"], f"sha256={expected}")
    assert sink.endpoint.endswith("/api/v1/customers/{customer_id}/events")   # no customer id in logs


def test_a_batch_body_wraps_up_to_batch_size_items(receiver: Receiver) -> None:
    triggers = [_trigger(n) for n in range(7)]
    cfg = _config(receiver.url, batch_size=3, body='{"external_id": "{customer_id}", "name": "{action}"}',
                  batch_body='{"events": "{items}"}')
    with WebhookSink(cfg) as sink:
        sink.write_batch(triggers)
    bodies = [msgspec.json.decode(r.body) for r in receiver.requests]
    assert sorted(len(b["events"]) for b in bodies) == [1, 3, 3] and all(list(b) == ["events"] for b in bodies)
    assert sorted(e["external_id"] for b in bodies for e in b["events"]) == sorted(f"c-{n}" for n in range(7))
    for req, body in zip(receiver.requests, bodies, strict=True):
        ids = [t.trigger_id for t in triggers if t.customer_id in {e["external_id"] for e in body["events"]}]
        assert req.headers["idempotency-key"] == batch_idempotency_key(ids)


def test_a_batch_body_alone_wraps_trigger_objects(receiver: Receiver) -> None:
    with WebhookSink(_config(receiver.url, batch_body='{"triggers": "{items}", "source": "engine"}')) as sink:
        sink.write_batch([_trigger(1)])
    (req,) = receiver.requests
    assert msgspec.json.decode(req.body) == {"triggers": [msgspec.to_builtins(_trigger(1))], "source": "engine"}
    assert req.headers["idempotency-key"] == _trigger(1).trigger_id


def test_templated_requests_are_retried_and_dead_lettered_as_triggers(receiver: Receiver, tmp_path: Path) -> None:
    """A receiver refusing a rendered body: the dead letter keeps the triggers (resend renders again)."""
    receiver.respond = lambda n, req: Reply(503) if n == 0 else Reply(400, body=b"bad event")
    dead = tmp_path / "dead.jsonl"
    with WebhookSink(_config(receiver.url, body=CIO_BODY, dead_letter_path=str(dead), max_retries=2)) as sink:
        sink.write_batch([_trigger(1)])
    assert len(receiver.requests) == 2 and receiver.requests[0].body == receiver.requests[1].body
    (letter,) = _dead_letters(dead)
    assert letter.triggers == [_trigger(1)] and letter.status == 400 and letter.attempts == 2
    assert (sink.stats.retries, sink.stats.dead_lettered) == (1, 1)


def test_a_value_the_template_cannot_render_is_refused_not_raised(receiver: Receiver) -> None:
    bad = msgspec.structs.replace(_trigger(1), fired_at="not a time")
    with WebhookSink(_config(receiver.url, body=CIO_BODY)) as sink:
        (failure,) = sink.deliver([bad])
    assert failure.permanent and failure.reason.startswith("body template:") and receiver.requests == []


@pytest.mark.parametrize(("settings", "message"), [
    ({"body": '{"name": "{acton}"}'}, "body at $.name, character 1: unknown field '{acton}' (did you mean 'action'?)"),
    ({"body": '{"name": '}, "body is not JSON: Expecting value at line 1, column 10"),
    ({"batch_body": '{"events": "{customer_id}"}'}, "batch_body at $.events, character 1: '{customer_id}' is a "
                                                     "trigger's field"),
    ({"batch_body": '{"events": []}'}, 'batch_body must hold "{items}" exactly once'),
    ({"url": "http://h/customers/{customer_id}/events", "batch_size": 75},
     "url has {customer_id}, so a request is one trigger's: batch_size must be 1, not 75"),
    ({"url": "http://{customer_id}.example.com/x"}, "url: a placeholder may only be in the path or query"),
    ({"url": "http://h/customers/{customerid}"}, "url, character 12: unknown field '{customerid}'"),
])
def test_templates_are_validated_when_the_config_is_loaded(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.convert({"url": "http://h/x", **settings}, WebhookSinkConfig)
    assert message in str(info.value)
