"""Helpers for tests that run `triggers run` as a real process against the real services."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import redis
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def create_topic(bootstrap: str, name: str, partitions: int = 4) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
        f.result(timeout=30)
    return name


def produce(bootstrap: str, topic: str, lines: Iterable[bytes]) -> int:
    """Produce JSON lines keyed by their customer_id, as a shop's tracking pipeline would."""
    errors: list = []
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    n = 0
    for line in lines:
        try:
            key = str(orjson.loads(line)["customer_id"]).encode()
        except (orjson.JSONDecodeError, KeyError, TypeError):
            key = None
        while True:
            try:
                producer.produce(topic, key=key, value=line, on_delivery=lambda err, _m: err and errors.append(err))
                break
            except BufferError:   # the local queue is full: let deliveries drain it
                producer.poll(0.1)
        n += 1
        if n % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0 and not errors, errors
    return n


def json_value(message: Message) -> Any:
    return json.loads(message.value())


def read_topic(bootstrap: str, topic: str, decode: Callable[[Message], Any] = json_value,
               isolation: str = "read_committed", timeout_s: float = 60) -> list:
    """Every message of a topic, from the beginning to its current end, each as `decode` makes
    it (default: its value as decoded JSON); `isolation`: the consumer's isolation.level. Fails
    when the end is not reached within `timeout_s`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("reader"), "enable.auto.commit": False,
                         "enable.partition.eof": True, "isolation.level": isolation})
    meta = consumer.list_topics(topic, timeout=30).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    out, eof, deadline = [], set(), time.monotonic() + timeout_s
    while len(eof) < len(meta.partitions) and time.monotonic() < deadline:
        for m in consumer.consume(1000, timeout=1):
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                eof.add(m.partition())
            else:
                out.append(decode(m))
    consumer.close()
    assert len(eof) == len(meta.partitions), f"{topic} not read to its end in {timeout_s:g} s"
    return out


ALL_STATUSES = 'statuses = ["sent", "held_out", "suppressed"]'


def write_config(path: Path, *, topic: str, redis_url: str, prefix: str, sink_topic: str,
                 dead_topic: str, webhook: str | None = None, extra: str = "", all_statuses: bool = True,
                 rules: Path | None = None, extra_redis: str = "") -> Path:
    """A settings file for one test run. `all_statuses`: the sinks get every trigger (as an
    analytics sink would), so they can be compared with the backtest's output; False keeps
    the sinks' default (sent only)."""
    statuses = ALL_STATUSES if all_statuses else ""
    webhook_section = ""
    if webhook:
        webhook_section = (f'[sinks.webhook]\nurl = "{webhook}"\nbackoff_base_s = 0.02\nbackoff_max_s = 0.5\n'
                           f'max_retries = 12\nsecret = "s3cret"\n{statuses}\n'
                           f'dead_letter_path = "{path.parent / "webhook-dead-letters.jsonl"}"\n')
    path.write_text(f"""
rules = "{rules or ROOT / 'rules'}"
exit_at_end = true
commit_interval_ms = 100
{extra}
[kafka]
topic = "{topic}"
[redis]
url = "{redis_url}"
prefix = "{prefix}"
{extra_redis}
[sinks.kafka]
brokers = ["127.0.0.1:9092"]
topic = "{sink_topic}"
{statuses}
{webhook_section}
[dead_letters]
kafka_topic = "{dead_topic}"
""")
    return path


def engine_cmd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli", "run", "--config", str(config), *args]


def run_engine(config: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    res = subprocess.run(engine_cmd(config, *args), capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert res.returncode == 0, f"triggers run failed ({res.returncode}):\n{res.stderr[-4000:]}"
    return res


class Receiver:
    """A webhook receiver on 127.0.0.1: records every request it accepts; can fail every other
    one, or every one (`fail_all`: a receiver that is down behind its load balancer, answering
    503), refuse some triggers for good (`refuse`: trigger ids answered 400), or hang (`hang()`
    until `answer()`: it takes the connection and the request and never answers, as a receiver
    stuck on its database does)."""

    def __init__(self, fail_every_other: bool = False, fail_all: bool = False,
                 refuse: set[str] | None = None) -> None:
        self.fail_every_other = fail_every_other
        self.fail_all = fail_all
        self.refuse = refuse if refuse is not None else set()
        self.requests: list[tuple[str, dict]] = []     # successful: (Idempotency-Key, body)
        self.received: list[tuple[str, dict[str, str], bytes]] = []   # successful: (path, headers, raw body)
        self.failed = 0
        self.refused = 0
        self.hung = 0                                  # requests held without an answer
        self._answering = threading.Event()
        self._answering.set()
        self._count = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if not receiver._answering.is_set():
                    with receiver._lock:
                        receiver.hung += 1
                    receiver._answering.wait()
                    self.close_connection = True   # the client gave up on this one long ago
                    return
                decoded = json.loads(body)
                with receiver._lock:
                    receiver._count += 1
                    fail = receiver.fail_all or (receiver.fail_every_other and receiver._count % 2 == 0)
                    refused = not fail and isinstance(decoded, dict) and decoded.get("trigger_id") in receiver.refuse
                    if fail:
                        receiver.failed += 1
                    elif refused:
                        receiver.refused += 1
                    else:
                        receiver.requests.append((self.headers["Idempotency-Key"], decoded))
                        receiver.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status = (503 if receiver.fail_all else 500) if fail else 400 if refused else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/triggers"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def hang(self) -> None:
        self._answering.clear()

    def answer(self) -> None:
        self._answering.set()

    def close(self) -> None:
        self._answering.set()
        self.server.shutdown()
        self.server.server_close()


def run_against_backtest(kafka_bootstrap: str, redis_url: str, tmp_path: Path, name: str, rules_yaml: str,
                         lines: list[bytes], kafka_extra: str = "") -> tuple[list[dict], list[dict], str, str, Any]:
    """`rules_yaml` as the rules, `lines` produced to a new 4-partition topic, one bounded
    `triggers run` with Redis state (`kafka_extra`: lines added to its [kafka] table), and a
    backtest of the same lines up to now. Returns (triggers in the sink topic, the backtest's as
    dicts, the Redis prefix, the topic, the backtest's `Replay`)."""
    import msgspec

    from engine.core.times import now_ms
    from engine.events.decode import EventDecoder
    from engine.offline.backtest import Replay
    from engine.rules.compiler import load_and_compile

    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "rules.yaml").write_text(rules_yaml)
    topic = create_topic(kafka_bootstrap, unique(f"{name}-events"))
    produce(kafka_bootstrap, topic, lines)
    prefix, sink, dead = unique(name), unique(f"{name}-triggers"), unique(f"{name}-dead")
    config = write_config(tmp_path / "c.toml", topic=topic, redis_url=redis_url, prefix=prefix, sink_topic=sink,
                          dead_topic=dead, rules=rules_dir)
    if kafka_extra:
        config.write_text(config.read_text().replace("[kafka]\n", f"[kafka]\n{kafka_extra}\n"))
    run_engine(config)
    expected: list = []
    replay = Replay(load_and_compile(rules_dir), expected.extend, until=now_ms())
    replay.feed(EventDecoder().decode_batch((raw, "test") for raw in lines)[0])
    replay.finish()
    return read_topic(kafka_bootstrap, sink), [msgspec.to_builtins(t) for t in expected], prefix, topic, replay


def trigger_key(t: dict) -> bytes:
    return orjson.dumps(t, option=orjson.OPT_SORT_KEYS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnRedis:
    """A redis-server of the test's own, to stop, wipe or restart without disturbing others.

    `persistent`: an fsync'ed append-only file, so a restart keeps the data (an outage, not a
    wipe); without it a restart loses everything, as an unconfigured production Redis would.
    `password`: `requirepass`, for credential tests.
    """

    def __init__(self, directory: Path, persistent: bool = True, password: str | None = None) -> None:
        self.port = free_port()
        self.dir = directory
        self.persistent = persistent
        self.password = password
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password)

    def start(self) -> OwnRedis:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
                "--appendonly", "yes" if self.persistent else "no", "--appendfsync", "always"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        for _ in range(100):
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        try:
            self.client().shutdown(nosave=not self.persistent)   # with AOF: written; the process exits
        except redis.ConnectionError:
            pass
        self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class LateProxy:
    """A TCP forwarder to `target` ("host:port") that refuses connections until it starts
    listening, after `delay_s` or at `open()`: a broker that is down, then comes back."""

    def __init__(self, target: str, delay_s: float | None = None) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.port = free_port()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(delay_s, self.open) if delay_s is not None else None
        if self._timer is not None:
            self._timer.start()

    def open(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port))
        server.settimeout(0.1)
        self._sockets.append(server)
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            self._forward(client, upstream)

    def _forward(self, client: socket.socket, upstream: socket.socket) -> None:
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            LateProxy._shut(src, dst)

    @staticmethod
    def _shut(*sockets: socket.socket) -> None:
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._stop.set()
        for s in self._sockets:
            s.close()


class ReplyLosingProxy(LateProxy):
    """A `LateProxy`, open at once, that on `lose_reply_to(marker)` forwards the next request
    holding `marker` and then closes that connection instead of passing the reply on: the
    command ran on the server, the client saw a connection error (a network blip mid-reply)."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self._marker: bytes | None = None
        self._close = True
        self._losing: dict[int, bool] = {}   # upstream socket id -> close it (else: silent) at its next reply
        self._lock = threading.Lock()
        self.lost = 0
        self.open()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def lose_reply_to(self, marker: bytes, close: bool = True) -> None:
        """`close=False`: the connection stays open and no reply comes back on it any more (a
        partition after the request, a stalled server: no reset); new connections are forwarded."""
        with self._lock:
            self._marker, self._close = marker, close

    def _forward(self, client: socket.socket, upstream: socket.socket) -> None:
        threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
        threading.Thread(target=self._replies, args=(upstream, client), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                with self._lock:
                    if self._marker is not None and self._marker in data:
                        self._marker = None
                        self._losing[id(upstream)] = self._close
                upstream.sendall(data)
        except OSError:
            pass

    def _replies(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while data := upstream.recv(65536):
                close = self._losing.pop(id(upstream), None)
                if close is not None:
                    self.lost += 1
                    if not close:
                        return   # both stay open, nothing more is passed on
                    break
                client.sendall(data)
        except OSError:
            pass
        self._shut(upstream, client)
