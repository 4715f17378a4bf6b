"""`triggers produce`: send an event file to the engine's Kafka topic, keyed by customer id.

The key is what makes the live engine right: each partition's worker owns its customers' states,
so every event of a customer must land in one partition (a mis-keyed message is a dead letter,
README "The live engine"). The customer id is found by the engine's own decoder, so native and
Segment lines are keyed exactly as the engine will read them; a line the engine would refuse is
reported at its `file:line`, counted and not sent. Each line goes out as it is (the engine
decodes it again), in file order, with an idempotent producer: a retried send is not doubled
and a customer's events keep their order.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from engine.cli.common import CommandError, check_events_file, exit_status, read_settings

EXIT_STATUS = {
    0: "every event of FILE was delivered to the topic",
    1: "every event was delivered, but some lines are not events (each shown as file:line, none sent)",
    2: "bad usage or settings, Kafka unreachable within --timeout or refusing the producer, or some events "
       "not delivered (the count says how many)",
    130: "interrupted (Ctrl-C): what was handed to Kafka by then is delivered, the count says how much",
}

EPILOG = """examples:
  triggers produce --events examples/sample-events.jsonl --topic customer-events
  triggers produce --events segment-export.jsonl --topic customer-events --brokers 10.0.0.5:9092
  zcat events.jsonl.gz | triggers produce --events - --config triggers.toml

""" + exit_status(EXIT_STATUS)

SHOWN = 20                 # lines that are not events shown one by one; the rest are counted
DEFAULT_TIMEOUT_S = 30.0
_SECURITY_PREFIXES = ("security.", "sasl.", "ssl.")   # of kafka.extra: a producer takes these too


class ProduceCounts(msgspec.Struct):
    """What a run of `produce` did with the lines of its file."""

    lines: int = 0             # non-blank lines read
    sent: int = 0              # events acknowledged by Kafka
    not_events: int = 0        # lines the engine would dead-letter: reported, not sent
    failed: int = 0            # events Kafka did not take (after librdkafka's retries)
    partitions: int = 0        # of the topic, at the end


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "produce", help="send an event file to the engine's Kafka topic, keyed by customer id",
        description="Send every event of FILE (JSONL, native or Segment form; '-' = stdin) to a Kafka topic, "
                    "each keyed by its customer_id as the engine reads it, in file order. Lines that are not "
                    "events (not JSON, a missing field, too large) are reported as file:line with the reason, "
                    "counted and not sent. A progress line on stderr for runs over a second; the counts at the "
                    "end on stdout. Brokers, topic and Kafka's security settings (kafka.extra: "
                    "security.protocol, sasl.*, ssl.*) come from --config and TRIGGERS_* variables as for "
                    "`triggers run`; the flags override them.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", required=True, metavar="FILE", help="JSONL events, native or Segment form ('-' = stdin)")
    p.add_argument("--topic", help="the topic (default: kafka.topic of the settings, customer-events)")
    p.add_argument("--brokers", metavar="HOST:PORT,...", help="Kafka bootstrap servers (kafka.brokers)")
    p.add_argument("--config", metavar="FILE", help="settings file (TOML), as for `triggers run`")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"how long to wait for the broker at start, and for each event's delivery (default "
                        f"{DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.set_defaults(handler=run_produce)


def run_produce(args: argparse.Namespace) -> int:
    from engine.operators.logs import setup_logging

    overrides = {"kafka.brokers": args.brokers.split(",") if args.brokers else None, "kafka.topic": args.topic}
    settings = read_settings(args.config, overrides)
    if args.timeout <= 0:
        raise CommandError(f"--timeout must be positive, got {args.timeout:g}")
    check_events_file(args.events)
    setup_logging("WARNING", settings.log_format)   # librdkafka's own lines only, de-duplicated
    k = settings.kafka
    security = {key: value for key, value in k.extra.items() if key.startswith(_SECURITY_PREFIXES)}
    producer = EventProducer(",".join(k.brokers), k.topic, security, args.timeout)
    started = time.monotonic()
    counts = ProduceCounts()
    try:
        producer.connect()
        producer.send_file(args.events, counts, progress=not args.no_progress)
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
    counts.failed += producer.finish(args.timeout)
    counts.sent = producer.delivered
    counts.partitions = producer.partitions()
    print(_summary(args.events, k.topic, ",".join(k.brokers), counts, time.monotonic() - started,
                   interrupted))
    if interrupted:
        return 130
    if counts.failed:
        return 2
    return 1 if counts.not_events else 0


def _summary(path: str, topic: str, brokers: str, c: ProduceCounts, seconds: float, interrupted: bool) -> str:
    where = "<stdin>" if path == "-" else path
    parts = f" ({c.partitions} partitions)" if c.partitions else ""
    line = (f"{where}: {c.sent:,} events sent to {topic}{parts} on {brokers}, keyed by customer_id, in "
            f"{seconds:.1f} s ({c.sent / max(seconds, 1e-9):,.0f}/s); {c.lines:,} lines read")
    if c.not_events:
        line += f", {c.not_events:,} not events (not sent)"
    if c.failed:
        line += f", {c.failed:,} not delivered"
    return line + ("; interrupted" if interrupted else "")


class EventProducer:
    """The lines of an event file into one topic, keyed by their customer id.

    Delivery reports are counted as they come (`delivered`, `failed`); `finish` waits for the
    outstanding ones. librdkafka retries a send within `timeout_s` (its `message.timeout.ms`);
    idempotence keeps a retried batch from being written twice or out of order.
    """

    def __init__(self, brokers: str, topic: str, extra: dict[str, str], timeout_s: float) -> None:
        from confluent_kafka import Producer

        from engine.operators.logs import kafka_logger

        self.brokers = brokers
        self.topic = topic
        self.timeout_s = timeout_s
        self.delivered = 0
        self.failed = 0
        self.failures: list[str] = []      # the first reasons, for the user
        self._producer = Producer({
            "bootstrap.servers": brokers, "enable.idempotence": True, "linger.ms": 20,
            "message.timeout.ms": int(timeout_s * 1000), "logger": kafka_logger(), **extra,
        })

    def connect(self) -> None:
        """Wait up to the timeout for the broker and the topic's metadata; refuse (exit 2) when
        the broker cannot be reached, refuses the client or has no such topic."""
        from confluent_kafka import KafkaError, KafkaException

        try:
            meta = self._producer.list_topics(self.topic, timeout=self.timeout_s)
        except KafkaException as e:
            err = e.args[0] if e.args and isinstance(e.args[0], KafkaError) else None
            why = err.str() if err is not None else str(e)
            raise CommandError(f"cannot reach Kafka at {self.brokers} within {self.timeout_s:g} s: {why} "
                               "(--brokers, kafka.brokers; credentials: kafka.extra)") from None
        topic = meta.topics.get(self.topic)
        if topic is not None and topic.error is not None and topic.error.code() in (
                KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.TOPIC_AUTHORIZATION_FAILED):
            raise CommandError(f"Kafka topic {self.topic!r} on {self.brokers}: {topic.error.str()} (create it "
                               "with as many partitions as the engine should run in parallel)")

    def send_file(self, path: str, counts: ProduceCounts, progress: bool) -> None:
        """Every line of `path` (`-`: stdin): events produced, the others reported on stderr."""
        from engine.events.decode import JSONL_BATCH, EventDecoder, read_jsonl
        from engine.offline.progress import Progress

        decoder = EventDecoder()
        size = Path(path).stat().st_size if path != "-" else 0
        bar = Progress(size, "produce") if progress else None
        batch: list[tuple[bytes, str]] = []
        done_bytes = 0
        for item in read_jsonl(path):
            batch.append(item)
            done_bytes += len(item[0]) + 1
            if len(batch) >= JSONL_BATCH:
                self._send_batch(decoder, batch, counts)
                batch = []
                if bar is not None:
                    bar.update(done_bytes, counts.lines - counts.not_events)
        if batch:
            self._send_batch(decoder, batch, counts)
        if bar is not None:
            bar.done()

    def _send_batch(self, decoder: Any, batch: list[tuple[bytes, str]], counts: ProduceCounts) -> None:
        positions: list[int] = []
        events, dead = decoder.decode_batch(batch, positions=positions)
        for d in dead:
            if counts.not_events < SHOWN:
                print(f"{d.source}: not an event, not sent: {d.reason}", file=sys.stderr)
            elif counts.not_events == SHOWN:
                print("(more lines that are not events: counted at the end)", file=sys.stderr)
            counts.not_events += 1
        counts.lines += len(batch)
        produce, poll = self._producer.produce, self._producer.poll
        for event, i in zip(events, positions):
            key = event.customer_id.encode("utf-8", "surrogatepass")   # as the engine compares it
            while True:
                try:
                    produce(self.topic, value=batch[i][0], key=key, on_delivery=self._on_delivery)
                    break
                except BufferError:   # the local queue is full: let deliveries drain it
                    poll(0.1)
        poll(0)

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed += 1
            if len(self.failures) < SHOWN:
                self.failures.append(err.str())

    def finish(self, timeout_s: float) -> int:
        """Wait for the outstanding deliveries; the number of events not delivered, each reason
        (up to `SHOWN` distinct) on stderr."""
        left = self._producer.flush(timeout_s)
        failed = left + self.failed
        for why in dict.fromkeys(self.failures):
            print(f"triggers produce: not delivered: {why}", file=sys.stderr)
        if left:
            print(f"triggers produce: {left:,} events still undelivered after {timeout_s:g} s", file=sys.stderr)
        return failed

    def partitions(self) -> int:
        try:
            topic = self._producer.list_topics(self.topic, timeout=5).topics.get(self.topic)
        except Exception:   # only for the summary line
            return 0
        return len(topic.partitions) if topic is not None and topic.error is None else 0
