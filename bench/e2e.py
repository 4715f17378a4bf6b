"""End-to-end throughput and latency of the engine, with its baseline and floor, in one run.

    python -m bench.e2e [--events 300000] [--customers 100000] [--rate 20000] [--out bench/results.json]
                        [--skip kafka,kafka2,...]

Measures, on one generated workload (bench.workload: views, carts, purchases, signups,
coupons, responses; 100,000 customers) and the bundled rules:

- backtest      the in-memory replay, decode included (`triggers backtest` without file I/O)
- live          the Bytewax dataflow with Redis state, from an in-process source, 1 worker
- kafka / kafka2  `triggers run` through Kafka (in and out), 1 and 2 processes
- naive         the baseline design: decode + evaluate with one Redis GET and one SET per event
- floor         Bytewax passing the same events through a no-op per-customer stateful step
- latency       event-to-trigger p50/p99/max at a fixed rate, in-process source and Kafka

Every figure is printed with its ratio to the naive baseline and the Bytewax floor measured
in the same run, and written to a JSON file. Needs the project's Redis and Kafka
(`scripts/services.sh start`).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from datetime import timedelta
from pathlib import Path

import orjson
import redis

from bench.workload import generate
from connectors.base import Sink
from engine.core.evaluate import Evaluator
from engine.core.times import format_ts
from engine.events.decode import EventDecoder
from engine.offline.backtest import Replay
from engine.operators.flow import build_flow
from engine.operators.settings import Settings
from engine.rules.compiler import load_and_compile
from engine.state.customer import decode_state, encode_state
from engine.state.redis import RedisStore
from engine.testing import MemoryLog

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT   # the tree whose `triggers run` the Kafka runs start (--engine-tree: another revision's)
RULES: Path | None = None   # the rules those runs evaluate (--engine-rules; default: the engine tree's own)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
BOOTSTRAP = os.environ.get("BENCH_KAFKA", "127.0.0.1:9092")
PARTITIONS = 4
WARMUP_S = 1.0


def workload(events: int, customers: int) -> list[bytes]:
    return [orjson.dumps(e) for e in generate(events=events, customers=customers, days=30, seed=42,
                                              start="2026-01-01")]


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    if not samples_ms:
        return {"n": 0}
    s = sorted(samples_ms)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]   # noqa: E731
    return {"n": len(s), "p50_ms": round(pick(0.50), 2), "p99_ms": round(pick(0.99), 2), "max_ms": round(s[-1], 2)}


# -- in-memory ----------------------------------------------------------------------------------

def bench_backtest(lines: list[bytes], rules) -> dict:
    decoder = EventDecoder()
    start = time.perf_counter()
    replay = Replay(rules, lambda out: None)
    for i in range(0, len(lines), 2000):
        events, _ = decoder.decode_batch((raw, "b") for raw in lines[i:i + 2000])
        replay.feed(events)
    replay.finish()
    elapsed = time.perf_counter() - start
    sizes = [len(encode_state(s)) for s in replay.store.states.values()]
    return {"events_per_s": len(lines) / elapsed, "seconds": elapsed,
            "state_bytes": {"mean": round(statistics.mean(sizes), 1), "p99": sorted(sizes)[int(0.99 * len(sizes))],
                            "max": max(sizes)}}


# -- baseline and floor ------------------------------------------------------------------------

def bench_naive(lines: list[bytes], rules) -> dict:
    """The design the engine avoids: one GET and one SET per event."""
    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"naive{uuid.uuid4().hex[:6]}:"
    decoder, evaluator, out = EventDecoder(), Evaluator(rules), []
    start = time.perf_counter()
    for raw in lines:
        ev = decoder.decode(raw, "b")
        key = prefix + ev.customer_id
        data = client.get(key)
        state = evaluator.on_event(decode_state(data) if data else None, ev, out)
        client.set(key, encode_state(state))
    elapsed = time.perf_counter() - start
    return {"events_per_s": len(lines) / elapsed, "events": len(lines)}


def bench_floor(lines: list[bytes]) -> dict:
    """Bytewax alone: the same events through key_on -> a no-op stateful step -> a null sink."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.testing import TestingSource, run_main

    keyed = [(orjson.loads(raw)["customer_id"], raw) for raw in lines]

    class NullPartition(StatelessSinkPartition):
        def write_batch(self, items) -> None:
            pass

    class Null(DynamicSink):
        def build(self, step_id, worker_index, worker_count) -> NullPartition:
            return NullPartition()

    flow = Dataflow("floor")
    s = op.input("in", flow, TestingSource(keyed, batch_size=1000))
    s = op.stateful_map("noop", s, lambda state, value: (None, value))
    op.output("out", s, Null())
    start = time.perf_counter()
    run_main(flow)
    elapsed = time.perf_counter() - start
    return {"events_per_s": len(lines) / elapsed}


# -- live, in-process source -------------------------------------------------------------------

def split(lines: list[bytes]) -> dict[str, list[bytes]]:
    parts: dict[str, list[bytes]] = {f"bench-{p}": [] for p in range(PARTITIONS)}
    for raw in lines:
        cid = orjson.loads(raw)["customer_id"]
        parts[f"bench-{zlib.crc32(cid.encode()) % PARTITIONS}"].append(raw)
    return parts


class Pace:
    """The release clock the paced partitions share: it starts at the engine's first read, so
    that its start-up (Bytewax, Redis, the first look at each partition) is not counted as the
    events' wait, as the Kafka run waits for /healthz before it produces."""

    def __init__(self, start: float | None = None) -> None:
        self.start = start   # a fixed wall-clock start, or None: the first call starts it

    def now(self) -> float:
        """Seconds since the clock started (it starts at the first call)."""
        now = time.time()
        if self.start is None:
            self.start = now
        return now - self.start


class PacedLog(MemoryLog):
    """An in-process partition whose records become readable at a fixed rate: record i at
    `offsets[i]` seconds after the shared `pace` started."""

    def __init__(self, name: str, values: list[bytes], offsets: list[float], pace: Pace,
                 start: int | None) -> None:
        super().__init__(name, values, start)
        self.offsets = offsets
        self.pace = pace

    def read(self, max_records: int):
        now = self.pace.now()
        end = self._position
        limit = min(len(self._values), end + max_records)
        while end < limit and self.offsets[end] <= now:
            end += 1
        start, self._position = self._position, end
        return [(self._values[i], i, None) for i in range(start, end)]

    def caught_up(self) -> bool:   # live: the clock only follows the events
        return False

    def end_reached(self) -> bool:
        return self._position >= len(self._values)


class TimedSink(Sink):
    def __init__(self, into: list) -> None:
        super().__init__()
        self.into = into

    def write_batch(self, items) -> None:
        now = time.time()
        self.into.extend((now, t) for t in items)

    def deliver(self, items) -> list:
        self.write_batch(items)
        return []

    def settle(self) -> None:
        pass

    def close(self) -> None:
        pass


def restamp(lines: list[bytes], t0: float, rate: float) -> list[bytes]:
    """Give event i the time it is released at (t0 + i / rate): a live stream's events are
    current, so its deadlines lie in the future instead of all being overdue at once."""
    out = []
    for i, raw in enumerate(lines):
        e = orjson.loads(raw)
        e["ts"] = format_ts(int((t0 + i / rate) * 1000))
        out.append(orjson.dumps(e))
    return out


def run_inprocess(lines: list[bytes], rules, rate: float | None) -> tuple[float, list, dict, list[bytes]]:
    """(seconds, [(written at, trigger)], {event id: released at}, the events as replayed).

    With `rate`, the events are stamped with the time they are due at and released at that
    rate from the engine's first read on (`Pace`): the preparation here and the engine's start
    take about a second, which would otherwise be measured as every early event's wait."""
    from bytewax.testing import run_main

    released: dict[str, float] = {}
    pace = Pace()
    offsets: dict[str, list[float]] = {}
    ids: list[tuple[str, float]] = []
    if rate:
        t0 = time.time() + 1.0   # about when the engine starts reading: the events' time stamps
        lines = restamp(lines, t0, rate)
    parts = split(lines)
    if rate:
        offsets = {name: [] for name in parts}
        for i, raw in enumerate(lines):   # the global order at `rate`, each partition keeping its share
            event = orjson.loads(raw)
            offsets[f"bench-{zlib.crc32(event['customer_id'].encode()) % PARTITIONS}"].append(i / rate)
            ids.append((event["event_id"], i / rate))
        open_log = lambda name, start: PacedLog(name, parts[name], offsets[name], pace, start)   # noqa: E731
    else:
        open_log = lambda name, start: MemoryLog(name, parts[name], start)   # noqa: E731
    out: list = []
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    settings = Settings(exit_at_end=True, commit_interval_ms=200)
    flow = build_flow(settings, rules, partitions=sorted(parts), open_log=open_log,
                      store=lambda: RedisStore(REDIS_URL, prefix), sinks={"timed": lambda _w: TimedSink(out)},
                      dead_letters=lambda _w: TimedSink([]))
    start = time.perf_counter()
    run_main(flow, epoch_interval=timedelta(milliseconds=200))
    if rate and pace.start is not None:
        released = {event_id: pace.start + offset for event_id, offset in ids}
    return time.perf_counter() - start, out, released, lines


def latencies(out: list[tuple[float, object]], released: dict[str, float], lines: list[bytes]) -> dict:
    """Percentiles of event -> trigger for the triggers an event fired (not a deadline), after
    the first WARMUP_S seconds of release (connections and caches warming up), whose largest
    wait is reported apart, as the Kafka run does."""
    ts_of = {}
    for raw in lines:
        e = orjson.loads(raw)
        ts_of[e["event_id"]] = e["ts"]
    first = min(released.values(), default=0.0)
    samples, warmup = [], []
    for written, t in out:
        when = released.get(t.cause_event_id)
        if when is not None and t.fired_at == format_ts(_ms(ts_of[t.cause_event_id])):
            (warmup if when < first + WARMUP_S else samples).append((written - when) * 1000)
    return {**percentiles(samples), "warmup_max_ms": round(max(warmup), 2) if warmup else None}


def _ms(ts: str) -> int:
    from engine.core.times import parse_ts
    return parse_ts(ts)


# -- Kafka --------------------------------------------------------------------------------------

def kafka_config(path: Path, topic: str, sink: str, prefix: str, exit_at_end: bool, metrics_port: int = 0,
                 statuses: str = "") -> Path:
    """`statuses`: the sink's (default: sent only, as a messaging system's)."""
    path.write_text(f"""
rules = "{RULES or ENGINE / 'rules'}"
exit_at_end = {str(exit_at_end).lower()}
metrics_port = {metrics_port}
log_level = "INFO"
[kafka]
brokers = ["{BOOTSTRAP}"]
topic = "{topic}"
[redis]
url = "{REDIS_URL}"
prefix = "{prefix}"
[sinks.kafka]
brokers = ["{BOOTSTRAP}"]
topic = "{sink}"
{statuses}
[dead_letters]
kafka_topic = "{sink}-dead"
""")
    return path


def engine_procs(config: Path, processes: int) -> list[subprocess.Popen]:
    cmd = [sys.executable, "-m", "engine.cli", "run", "--config", str(config)]
    pipe = {"cwd": ENGINE, "stderr": subprocess.PIPE, "text": True,
            "env": {**os.environ, "PYTHONPATH": str(ENGINE)}}
    if processes == 1:
        return [subprocess.Popen(cmd, **pipe)]
    base = 2300 + (os.getpid() % 500) * 4
    addresses = ";".join(f"127.0.0.1:{base + i}" for i in range(processes))
    return [subprocess.Popen(cmd + ["--process-id", str(i), "--addresses", addresses], **pipe)
            for i in range(processes)]


def bench_kafka(lines: list[bytes], processes: int, tmp: Path) -> dict:
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    from harness import create_topic, produce

    topic = create_topic(BOOTSTRAP, f"bench-events-{uuid.uuid4().hex[:8]}", PARTITIONS)
    produce(BOOTSTRAP, topic, lines)
    cfg = kafka_config(tmp / f"{topic}.toml", topic, f"bench-triggers-{uuid.uuid4().hex[:8]}",
                       f"k{uuid.uuid4().hex[:6]}", True)
    start = time.perf_counter()
    procs = engine_procs(cfg, processes)
    logs = []
    for p in procs:
        logs.append(p.communicate()[1])
        assert p.returncode == 0, logs[-1][-3000:]
    total = time.perf_counter() - start
    # The engine's own end-of-run lines: from the first record read to the last commit, over all
    # partitions of all processes (process start-up and Kafka metadata excluded).
    firsts, lasts = [], []
    for line in "".join(logs).splitlines():
        if ": done: " in line and "first record at " in line:   # not "engine: done: every partition ended"
            firsts.append(float(line.split("first record at ")[1].split(",")[0]))
            lasts.append(float(line.split("last commit at ")[1].split(" ")[0]))
    assert len(firsts) == PARTITIONS, "".join(logs)[-3000:]
    span = max(lasts) - min(firsts)
    return {"events_per_s": len(lines) / span, "seconds_processing": round(span, 2),
            "seconds_with_startup": round(total, 2), "processes": processes}


def wait_healthy(port: int, partitions: int, timeout_s: float = 60.0) -> None:
    import urllib.request
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            report = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read())
            if report.get("status") == "ok" and len(report.get("partitions", {})) == partitions:
                time.sleep(0.5)
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the engine did not become healthy")


def settled(topic: str, quiet_s: float = 3.0, limit_s: float = 180.0) -> None:
    """Wait until the topic has stopped growing for `quiet_s` (the engine delivered everything)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": uuid.uuid4().hex})
    last, since, deadline = -1, time.monotonic(), time.monotonic() + limit_s
    try:
        while time.monotonic() < deadline:
            try:
                parts = c.list_topics(topic, timeout=5).topics[topic].partitions
                total = sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in parts)
            except (KafkaException, KeyError):
                total = -1   # not created yet: the first trigger creates it
            if total != last:
                last, since = total, time.monotonic()
            elif time.monotonic() - since >= quiet_s and total >= 0:
                return
            time.sleep(0.5)
    finally:
        c.close()


def bench_kafka_latency(lines: list[bytes], rate: float, tmp: Path) -> dict:
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    from harness import create_topic

    topic = create_topic(BOOTSTRAP, f"lat-events-{uuid.uuid4().hex[:8]}", PARTITIONS)
    sink = f"lat-triggers-{uuid.uuid4().hex[:8]}"
    port = 9700 + os.getpid() % 200
    # Every status: the latency of a trigger does not depend on its status, and with the bundled
    # rules' consent policy most of a generated workload's immediate triggers are suppressed.
    cfg = kafka_config(tmp / "lat.toml", topic, sink, f"l{uuid.uuid4().hex[:6]}", False, metrics_port=port,
                       statuses='statuses = ["sent", "held_out", "suppressed"]')
    procs = engine_procs(cfg, 1)
    threading.Thread(target=procs[0].communicate, daemon=True).start()   # drain its log
    wait_healthy(port, PARTITIONS)   # measure the running engine, not its start-up
    # A webshop's producer as librdkafka (since 1.5) and Kafka's Java client (since 4.0) set it up
    # by default: linger.ms 5. At 1 ms this load generator sent about five times the requests,
    # and the broker on this 2-core machine spent most of a core on them, which the engine then
    # lacked: a queue of 1-2 s that measured the shared machine, not the engine.
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 5})
    t0 = time.time() + 2.0            # everything below is prepared before the first send
    lines = restamp(lines, t0, rate)
    keys = [orjson.loads(raw)["customer_id"].encode() for raw in lines]
    # Released in ticks of a millisecond, everything due by then at once: sleeping before each
    # message (50 µs apart at 20,000/s) cost the load generator a third of a core, which this
    # 2-core machine's engine and broker then lacked.
    i, n = 0, len(lines)
    while i < n:
        due = min(n, int((time.time() - t0) * rate) + 1)
        while i < due:
            producer.produce(topic, key=keys[i], value=lines[i])
            i += 1
        producer.poll(0)
        if i < n:
            time.sleep(max(0.0, min(0.001, t0 + i / rate - time.time())))
    producer.flush(30)
    settled(sink)   # every trigger delivered (relays may trail the commits): the slowest count too
    for p in procs:
        p.terminate()
        p.wait(timeout=30)

    def read(t: str) -> list:
        c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": uuid.uuid4().hex, "enable.partition.eof": True})
        parts = c.list_topics(t, timeout=30).topics[t].partitions
        c.assign([TopicPartition(t, p, 0) for p in parts])
        msgs, eof = [], set()
        while len(eof) < len(parts):
            for m in c.consume(1000, timeout=2):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        eof.add(m.partition())
                else:
                    msgs.append(m)
        c.close()
        return msgs

    created = {orjson.loads(m.value())["event_id"]: (m.timestamp()[1], orjson.loads(m.value())["ts"]) for m in read(topic)}
    samples, warmup = [], []
    for m in read(sink):
        t = orjson.loads(m.value())
        cause = created.get(t["cause_event_id"])
        if cause and t["fired_at"] == format_ts(_ms(cause[1])):
            # The first second warms up connections (the sink's producer connects on its first
            # trigger, consumers settle their fetch sessions): reported apart from the steady state.
            (warmup if cause[0] / 1000 < t0 + WARMUP_S else samples).append(m.timestamp()[1] - cause[0])
    return {"rate": rate, **percentiles(samples), "warmup_max_ms": max(warmup, default=None)}


# -- main ---------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--naive-events", type=int, default=30_000, help="the naive baseline is slow: a prefix")
    parser.add_argument("--rate", type=float, default=20_000, help="events/s for the latency runs")
    parser.add_argument("--latency-events", type=int, default=100_000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    parser.add_argument("--skip", default="", help="comma-separated: backtest,live,kafka,kafka2,naive,floor,"
                                                    "latency,kafka_latency")
    parser.add_argument("--engine-tree", help="run the Kafka steps on this source tree's engine (another revision, "
                        "e.g. extracted by bench.revisions), with this harness")
    parser.add_argument("--engine-rules", help="the rules directory the Kafka steps' engine runs (default: its "
                        "tree's rules/)")
    args = parser.parse_args()
    global ENGINE, RULES
    if args.engine_tree:
        ENGINE = Path(args.engine_tree).resolve()
    if args.engine_rules:
        RULES = Path(args.engine_rules).resolve()
    skip = set(filter(None, args.skip.split(",")))
    rules = load_and_compile(ROOT / "rules")
    print(f"generating {args.events:,} events for {args.customers:,} customers ...", flush=True)
    lines = workload(args.events, args.customers)
    results: dict = {"events": len(lines), "customers": args.customers, "rules": len(rules.rules),
                     "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                                f"Python {platform.python_version()}"}
    tmp = Path(tempfile.mkdtemp())

    def step(name: str, fn) -> None:
        if name in skip:
            return
        gc.collect()   # what earlier steps left behind must not cost this one collector pauses
        gc.freeze()
        print(f"-- {name} ...", flush=True)
        results[name] = fn()
        print(f"   {json.dumps(results[name])}", flush=True)

    step("floor", lambda: bench_floor(lines))
    step("naive", lambda: bench_naive(lines[:args.naive_events], rules))
    step("backtest", lambda: bench_backtest(lines, rules))

    def live() -> dict:
        elapsed, out, _, _ = run_inprocess(lines, rules, None)
        return {"events_per_s": len(lines) / elapsed, "seconds": round(elapsed, 2), "triggers": len(out)}

    step("live", live)
    step("kafka", lambda: bench_kafka(lines, 1, tmp))
    step("kafka2", lambda: bench_kafka(lines, 2, tmp))

    def latency() -> dict:
        _, out, released, replayed = run_inprocess(lines[:args.latency_events], rules, args.rate)
        return {"rate": args.rate, **latencies(out, released, replayed)}

    step("latency", latency)
    step("kafka_latency", lambda: bench_kafka_latency(lines[:args.latency_events], args.rate, tmp))

    naive = results.get("naive", {}).get("events_per_s")
    floor = results.get("floor", {}).get("events_per_s")
    print("\nresult                    events/s   x naive   / floor")
    for name in ("backtest", "live", "kafka", "kafka2", "naive", "floor"):
        r = results.get(name)
        if not r:
            continue
        eps = r["events_per_s"]
        r["x_naive"] = round(eps / naive, 1) if naive else None
        r["of_floor"] = round(eps / floor, 3) if floor else None
        print(f"{name:20s} {eps:>12,.0f} {r['x_naive'] or '-':>9} {r['of_floor'] or '-':>9}")
    for name in ("latency", "kafka_latency"):
        if name in results:
            r = results[name]
            print(f"{name:20s} at {r['rate']:,.0f} events/s: p50 {r.get('p50_ms')} ms, p99 {r.get('p99_ms')} ms, "
                  f"max {r.get('max_ms')} ms (n={r.get('n')})")
    if "backtest" in results:
        print(f"state size in Redis: {results['backtest']['state_bytes']}")
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
