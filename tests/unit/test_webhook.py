"""Webhook sink against a real HTTP receiver on 127.0.0.1: what arrives, retries, dead letters.

The receiver is a `ThreadingHTTPServer` speaking HTTP/1.1 (so keep-alive is exercised),
driven per test by a `respond(n, request)` function; backoff is shortened so every test stays
well under a second or two.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import shutil
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

from connectors import SinkError
from connectors.webhook import WebhookDeadLetter, WebhookSink, WebhookSinkConfig, batch_idempotency_key
from engine.triggers import SENT, Trigger, trigger_id


class Request(msgspec.Struct):
    n: int  # 0-based arrival order
    headers: dict[str, str]  # names lower-cased
    body: bytes
    client_port: int


class Reply(msgspec.Struct):
    status: int = 200
    headers: dict[str, str] = {}
    body: bytes = b"ok"
    sleep_s: float = 0.0  # before answering
    drop_connection: bool = False  # close the connection after replying, without saying so


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
    assert (sink.sent, sink.retries, sink.failed, sink.dead_lettered) == (5, 0, 0, 0)


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
    assert sink.retries == server_errors >= 5
    assert (sink.sent, sink.failed, sink.dead_lettered) == (10, 0, 0)
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
    assert sink.retries == 1 and sink.sent == 1


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
    assert (sink.sent, sink.retries, sink.failed, sink.dead_lettered) == (1, 0, 1, 1)


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
    assert (sink.sent, sink.retries, sink.failed, sink.dead_lettered) == (0, 3, 1, 1)
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
    assert sink.sent == 2 and sink.failed == 1


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
    assert sink.retries == 2 and sink.dead_lettered == 1


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
    assert sink.sent == 7


def test_concurrency_overlaps_requests_up_to_the_limit(receiver: Receiver) -> None:
    receiver.respond = lambda n, req: Reply(sleep_s=0.2)
    with WebhookSink(_config(receiver.url, concurrency=4)) as sink:
        started = time.monotonic()
        sink.write_batch([_trigger(n) for n in range(8)])
        elapsed = time.monotonic() - started
    assert receiver.max_in_flight == 4
    assert elapsed < 8 * 0.2 * 0.75  # sequential would take 1.6 s; four at a time about 0.4 s
    assert len({req.client_port for req in receiver.requests}) == 4  # one connection per slot
    assert sink.sent == 8


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
    assert sink.retries == 0 and sink.sent == 3


def test_https_receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A self-signed certificate for 127.0.0.1, trusted through SSL_CERT_FILE (which the
    default TLS context honours): the sink verifies the certificate and posts over TLS."""
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
        assert sink.sent == 2
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
