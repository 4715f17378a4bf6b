"""The `triggers` command line (SPEC §5)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import msgspec

from engine.offline import diff as diff_cmd
from engine.cli import explain as explain_cmd
from engine.offline.backtest import BacktestSummary, backtest_file
from engine.policy.lift import Lift, lift
from engine.offline.report_html import ReportCollector, write_report
from engine.rules.compiler import load_and_compile
from engine.rules.errors import RulesInvalid
from engine.core.times import parse_ts

RUN_DESCRIPTION = """\
Run the live engine as a Bytewax dataflow: events from a Kafka topic (keyed by customer id;
other messages are dead letters), customer state, offsets and deadlines in Redis, triggers to
the configured sinks (each gets `sent` triggers only, unless its `statuses` says more),
undecodable events to the dead-letter output. State effects are exactly-once across crashes
(state and offsets commit together); triggers are delivered at least once with stable ids.
A Redis that lost the engine's state is detected (at start and at each commit): the run stops
with exit 2 instead of resuming over it; --accept-state-loss overrides that at start.
SIGTERM / Ctrl-C: finish the epoch in hand, commit, close the sinks, exit 0.

Settings come from --config FILE (TOML), then TRIGGERS_* environment variables, then flags:

  rules = "rules"                        # TRIGGERS_RULES
  workers = 1                            # TRIGGERS_WORKERS: worker threads in this process
  process_id = 0                         # with addresses: a multi-process cluster
  addresses = ["host0:2101", "host1:2101"]
  commit_interval_ms = 200               # state + offsets commit (and replay window after a crash)
  timer_poll_ms = 100                    # how often Redis's deadline index is scanned
  cache_size = 200000                    # customer states cached per partition
  exit_at_end = false
  reload_rules = true                    # apply valid rules changes live; invalid ones are rejected
  reload_interval_ms = 500
  metrics_host = "127.0.0.1"             # /metrics (Prometheus) and /healthz
  metrics_port = 9464                    # + process_id; 0 turns them off
  log_level = "INFO"
  log_format = "text"                    # or "json"

  [kafka]                                # TRIGGERS_KAFKA__BROKERS='["10.0.0.5:9092"]'
  brokers = ["127.0.0.1:9092"]
  topic = "customer-events"              # keyed by customer_id (mis-keyed messages are dead letters)
  repartition_from = "raw-events"        # optional: re-key this unkeyed topic into `topic` first
  batch_size = 1000
  extra = {}                             # librdkafka settings: security.protocol, sasl.*, ssl.*
  start = "earliest"                     # first deployment only: "earliest" (history) or "latest"
  group_id = "trigger-engine-<prefix>"   # where committed offsets are recorded (state-loss check)

  [redis]                                # TRIGGERS_REDIS__URL=redis://cache:6379/0
  url = "redis://127.0.0.1:6379/0"       # must persist (appendonly yes) and not evict keys
  prefix = "te"
  cluster = false
  username = "engine"                    # optional; override the URL's credentials
  password = "..."                       # better: TRIGGERS_REDIS__PASSWORD (never logged)
  tls = false                            # or a rediss:// URL
  tls_ca_file = "ca.pem"                 # optional: tls_cert_file, tls_key_file, tls_verify

  [sinks.kafka]                          # default: topic "triggers" on kafka.brokers; configuring
  brokers = ["127.0.0.1:9092"]           # any [sinks.*] replaces that default
  topic = "triggers"
  delivery_timeout_s = 30                # 0: wait for the broker as long as it takes
  statuses = ["sent"]                    # every sink: add "held_out", "suppressed" for analytics
  [sinks.webhook]                        # optional
  url = "https://ma.example.com/hooks/triggers"
  secret = "..."                         # HMAC-SHA256 signature header
  batch_size = 1
  max_retries = 6
  dead_letter_path = "webhook-dead-letters.jsonl"   # the default when unset
  [sinks.redis_stream]                   # optional
  url = "redis://127.0.0.1:6379/0"
  stream = "triggers"
  [sinks.file]                           # optional, appended
  path = "triggers.jsonl"

  [dead_letters]
  kafka_topic = "dead-letters"           # or: file = "dead-letters.jsonl"
"""

EPILOG = """examples:
  triggers validate rules/
  triggers run --config triggers.toml
  triggers backtest --rules rules/ --events examples/sample-events.jsonl --out triggers.jsonl --summary s.json
  triggers report s.json
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return args.handler(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triggers",
        description="Real-time trigger engine for trigger-based marketing: rules in YAML, "
                    "per-customer state, triggers out.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")

    v = sub.add_parser("validate", help="check a rules directory; every error as file:line",
                       description="Load and compile every *.yaml file of RULES_DIR. Exit 0 when valid; "
                                   "otherwise print every error as `file:line: rule 'id': what is wrong` and exit 1.")
    v.add_argument("rules_dir", metavar="RULES_DIR", help="directory of rules files (or one file)")
    v.set_defaults(handler=_validate)

    b = sub.add_parser(
        "backtest", help="replay an event file through the rules, in event time",
        description="Replay a JSONL event file in event time with an in-memory state store. Triggers go to "
                    "--out as JSONL (stdout by default); a per-rule summary goes to stderr. At the end of "
                    "the file the clock jumps past pending one-shot deadlines (absence, delay, inactivity, "
                    "series steps) so they fire; recurring dates fire only inside the replayed period, or up "
                    "to --until. Deterministic: the same events and rules give the same triggers and ids.",
        epilog="example:\n  triggers backtest --rules rules/ --events examples/sample-events.jsonl --out triggers.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("--rules", required=True, metavar="RULES_DIR", help="rules directory (or one file)")
    b.add_argument("--events", required=True, metavar="FILE", help="JSONL events, native or Segment form ('-' = stdin)")
    b.add_argument("--out", metavar="FILE", default="-", help="where triggers go as JSONL (default: stdout)")
    b.add_argument("--until", metavar="TIME", help="end of the replayed period (RFC 3339): events after it are "
                   "not replayed, recurring dates up to it fire")
    b.add_argument("--dead-letters", metavar="FILE", default=None,
                   help="where undecodable events go as JSONL with their reason (default: stderr)")
    b.add_argument("--report", metavar="FILE.html", help="write a self-contained HTML report: fires over time "
                   "per rule by status, suppression reasons, top payload values, the summary and lift")
    b.add_argument("--summary", metavar="FILE", help="write the run's summary as JSON (per-rule decisions, "
                   "responses and conversions), the input of `triggers report`")
    b.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    b.add_argument("--quiet", action="store_true", help="no summary table")
    b.set_defaults(handler=_backtest)

    run = sub.add_parser(
        "run", help="the live engine: Kafka in, Redis state, configured sinks out",
        description=RUN_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--config", metavar="FILE", help="settings file (TOML); see below for its keys")
    run.add_argument("--rules", metavar="RULES_DIR", help="rules directory (settings: rules)")
    run.add_argument("--brokers", metavar="HOST:PORT,...", help="Kafka bootstrap servers (kafka.brokers)")
    run.add_argument("--topic", help="Kafka topic of the events, keyed by customer id (kafka.topic)")
    run.add_argument("--redis-url", metavar="URL", help="Redis for state and offsets (redis.url)")
    run.add_argument("--workers", type=int, help="worker threads in this process (workers)")
    run.add_argument("--process-id", type=int, help="this process's index in a multi-process cluster (process_id)")
    run.add_argument("--addresses", metavar="HOST:PORT;...", help="every process of the cluster (addresses)")
    run.add_argument("--exit-at-end", action="store_true", default=None,
                     help="stop once the events present at start-up are processed and their deadlines "
                          "due by then have fired (exit_at_end); default: run until stopped")
    run.add_argument("--accept-state-loss", action="store_true",
                     help="when Redis has lost committed state (the start-up check refuses, exit 2), resume at "
                          "the offsets recorded in Kafka anyway: the lost customers' states start empty and "
                          "nothing is re-sent")
    run.set_defaults(handler=_run)

    rp = sub.add_parser(
        "repartition", help="re-key a raw topic by customer id into the engine's topic, exactly once",
        description="For event topics not keyed by customer id: consume RAW_TOPIC in a consumer group and write "
                    "each message unchanged to the engine's topic (kafka.topic), keyed by its customer_id, one "
                    "Kafka transaction per batch that also carries the consumed offsets: after any crash every "
                    "message is in the keyed topic exactly once (for read_committed readers, the default). "
                    "Undecodable messages go through without a key (the engine dead-letters them). A raw topic "
                    "with several partitions can reorder one customer's events. `triggers run` runs the same "
                    "stage in a thread when kafka.repartition_from is set; this command runs it on its own.",
        epilog="example:\n  triggers repartition --from raw-events --to customer-events\n"
               "  triggers run --config triggers.toml      # with kafka.repartition_from = \"raw-events\"",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    rp.add_argument("--config", metavar="FILE", help="settings file (TOML), as for `triggers run`")
    rp.add_argument("--from", dest="from_topic", metavar="RAW_TOPIC", help="the raw topic (kafka.repartition_from)")
    rp.add_argument("--to", dest="to_topic", metavar="TOPIC", help="the keyed topic the engine reads (kafka.topic)")
    rp.add_argument("--brokers", metavar="HOST:PORT,...", help="Kafka bootstrap servers (kafka.brokers)")
    rp.add_argument("--process-id", type=int, help="this instance's index when several run (its transactional id)")
    rp.add_argument("--exit-at-end", action="store_true", help="stop once what the raw topic holds is re-keyed")
    rp.set_defaults(handler=_repartition)

    r = sub.add_parser(
        "report", help="per-rule lift: contacted vs control group conversion, with 95%% intervals",
        description="Per rule: the conversion rate of contacted (sent) and control-group (held-out) triggers, "
                    "the absolute and relative lift, and their 95% confidence intervals. Every trigger is in "
                    "the denominator, non-responders included. Reads the JSON written by "
                    "`triggers backtest --summary FILE`.",
        epilog="example:\n  triggers backtest --rules rules/ --events events.jsonl --out t.jsonl --summary s.json\n"
               "  triggers report s.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("summary", metavar="SUMMARY.json", help="a backtest summary (triggers backtest --summary)")
    r.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    r.set_defaults(handler=_report)
    diff_cmd.add_parser(sub)
    explain_cmd.add_parser(sub)
    return parser


def _load_rules(path: str) -> object | None:
    try:
        return load_and_compile(path)
    except RulesInvalid as e:
        for err in e.errors:
            print(err, file=sys.stderr)
        from engine.rules.errors import MAX_ERRORS

        shown = len(e.errors) if len(e.errors) <= MAX_ERRORS else f"{MAX_ERRORS}+"   # the last is "stopped after"
        print(f"{shown} error(s) in {path}", file=sys.stderr)
        return None


def _validate(args: argparse.Namespace) -> int:
    rules = _load_rules(args.rules_dir)
    if rules is None:
        return 1
    rs = rules.ruleset
    print(f"{args.rules_dir}: OK ({len(rs.rules)} rules, {len(rs.aggregates)} aggregates, "
          f"{len(rs.files)} file(s){', contact policy' if rs.policy else ''})")
    return 0


def _backtest(args: argparse.Namespace) -> int:
    from connectors.file import FileSink, FileSinkConfig

    rules = _load_rules(args.rules)
    if rules is None:
        return 1
    if args.events != "-" and not Path(args.events).is_file():
        print(f"triggers backtest: no such events file: {args.events}", file=sys.stderr)
        return 2
    until = None
    if args.until:
        try:
            until = parse_ts(args.until)
        except ValueError as e:
            print(f"triggers backtest: --until: {e}", file=sys.stderr)
            return 2
    dead_path = args.dead_letters if args.dead_letters else "-stderr"
    collector = ReportCollector() if args.report else None
    with FileSink(FileSinkConfig(path=args.out)) as out, _dead_letter_sink(dead_path) as dead:
        def emit(batch: list) -> None:
            out.write_batch(batch)
            if collector is not None:
                collector.add(batch)

        summary = backtest_file(rules, args.events, emit, dead.write_batch, until=until,
                                progress=not args.no_progress)
    if collector is not None:
        write_report(args.report, collector, summary, title=f"Backtest of {args.rules}", rules_dir=args.rules,
                     events_file=args.events)
    if args.summary:
        Path(args.summary).write_bytes(msgspec.json.format(msgspec.json.encode(summary)) + b"\n")
    if not args.quiet:
        print_summary(summary, sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    import logging
    import signal

    from engine.operators.logs import setup_logging
    from engine.operators.settings import SettingsError, load_settings

    overrides = {
        "rules": args.rules,
        "kafka.brokers": args.brokers.split(",") if args.brokers else None,
        "kafka.topic": args.topic,
        "redis.url": args.redis_url,
        "workers": args.workers,
        "process_id": args.process_id,
        "addresses": args.addresses.split(";") if args.addresses else None,
        "exit_at_end": args.exit_at_end,
    }
    try:
        settings = load_settings(args.config, overrides=overrides)
    except SettingsError as e:
        print(f"triggers run: {e}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    log = logging.getLogger("engine")
    rules = _load_rules(settings.rules)
    if rules is None:
        return 1

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # Until the dataflow runs, a signal simply ends the start-up (nothing to commit yet).
    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        flow = _prepare_run(settings, rules, args.accept_state_loss)
    except KeyboardInterrupt as e:
        log.info("stopped by %s while starting up", e.args[0] if e.args and e.args[0] else "SIGINT")
        return 0
    except _StartError as e:
        print(f"triggers run: {e}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)

    from engine.operators.flow import run
    from engine.operators.shutdown import SHUTDOWN, install_signal_handlers

    install_signal_handlers()
    stage = _Stage(settings) if settings.kafka.repartition_from and not settings.exit_at_end else None
    log.info("running: %d rules from %s, topic %s on %s, state in %s, %d worker(s)", len(rules.rules),
             settings.rules, settings.kafka.topic, ",".join(settings.kafka.brokers), settings.redis.shown(),
             settings.workers)
    run(flow, settings)
    if stage is not None:
        stage.stop()
    if SHUTDOWN.fatal:
        print(f"triggers run: {SHUTDOWN.reason}", file=sys.stderr)
        return SHUTDOWN.exit_code
    if SHUTDOWN.requested:
        offsets = ", ".join(f"{p} {o}" for p, o in sorted(SHUTDOWN.stopped_at.items()))
        log.info("%s: committed and closed; offsets %s", SHUTDOWN.reason, offsets or "unchanged")
    else:
        log.info("done: every partition ended")
    return 0


class _StartError(Exception):
    """Why `triggers run` cannot start: one line for the operator, exit 2."""


class _Stage:
    """The repartition stage in a thread of `triggers run`: it stops with the engine, and a
    failure of it stops the engine (exit 2)."""

    def __init__(self, settings) -> None:
        import threading

        from engine.operators.repartition import Repartitioner, config_from_settings
        from engine.operators.shutdown import SHUTDOWN

        self._stop = threading.Event()
        repartitioner = Repartitioner(config_from_settings(settings))

        def work() -> None:
            try:
                repartitioner.run(self._stop)
            except Exception as e:   # RepartitionError, or a bug: the engine must not run on without it
                SHUTDOWN.request(f"repartition stage: {e}", fatal=True)

        self._thread = threading.Thread(target=work, name="repartition", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)



def _prepare_run(settings, rules, accept_state_loss: bool):
    """Everything before the dataflow: metrics, Kafka's partitions (waiting for the broker),
    Redis (waiting for it; failing fast on refused credentials), the resume check, the flow."""
    from engine.operators.flow import FlowError, build_flow, kafka_partitions, serve_metrics
    from engine.operators.resume import ResumeRefused, plan_resume
    from engine.state.redis import RedisStore

    serve_metrics(settings)
    r = settings.redis
    try:
        partitions = kafka_partitions(settings)
        if settings.kafka.repartition_from and settings.exit_at_end:
            _repartition_to_end(settings)   # a bounded run evaluates everything the raw topic holds
        store = RedisStore(r.client_url(), r.prefix, r.cluster, r.connection())
        try:
            plan_resume(settings, store, partitions, accept_state_loss)
        finally:
            store.close()
        return build_flow(settings, rules, partitions=partitions)
    except (FlowError, ResumeRefused) as e:
        raise _StartError(str(e)) from None


def _repartition_to_end(settings) -> None:
    from engine.operators.repartition import RepartitionError, Repartitioner, config_from_settings

    try:
        Repartitioner(config_from_settings(settings)).run(exit_at_end=True)
    except RepartitionError as e:
        raise _StartError(f"repartition stage: {e}") from None


def _repartition(args: argparse.Namespace) -> int:
    """`triggers repartition`: the stage on its own (a process of its own for high rates)."""
    from engine.operators.logs import setup_logging
    from engine.operators.repartition import config_from_settings, run_until_stopped
    from engine.operators.settings import SettingsError, load_settings

    overrides = {"kafka.brokers": args.brokers.split(",") if args.brokers else None,
                 "kafka.repartition_from": args.from_topic, "kafka.topic": args.to_topic,
                 "process_id": args.process_id}
    try:
        settings = load_settings(args.config, overrides=overrides)
        if not settings.kafka.repartition_from:
            raise SettingsError("no raw topic: give --from RAW_TOPIC or set kafka.repartition_from")
        config = config_from_settings(settings)
    except (SettingsError, ValueError) as e:
        print(f"triggers repartition: {e}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    return run_until_stopped(config, args.exit_at_end, prog="triggers repartition")


def _report(args: argparse.Namespace) -> int:
    try:
        summary = msgspec.json.decode(Path(args.summary).read_bytes(), type=BacktestSummary)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as e:
        print(f"triggers report: cannot read {args.summary}: {e}", file=sys.stderr)
        return 2
    lifts = [lift(rule_id, o) for rule_id, o in summary.per_rule.items()]
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(lifts)).decode())
    else:
        print_lift(lifts, sys.stdout)
    return 0


def _dead_letter_sink(path: str):
    from connectors.file import FileSink, FileSinkConfig

    if path == "-stderr":
        return FileSink(FileSinkConfig(path="-"), stream=sys.stderr)
    return FileSink(FileSinkConfig(path=path))


def print_summary(s: BacktestSummary, stream: TextIO) -> None:
    """The per-rule table: decisions by status with suppression reasons, then responses."""
    width = max([len("rule")] + [len(r) for r in s.per_rule])
    print(f"{'rule':<{width}}  {'sent':>8}  {'held_out':>8}  {'suppressed':>10}  {'responded':>9}  "
          f"{'converted':>9}  reasons", file=stream)
    for rule_id, o in s.per_rule.items():
        reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(o.suppressed.items()))
        print(f"{rule_id:<{width}}  {o.sent:>8,}  {o.held_out:>8,}  {sum(o.suppressed.values()):>10,}  "
              f"{o.responded + o.held_out_responded:>9,}  {o.converted + o.held_out_converted:>9,}  {reasons}",
              file=stream)
    print(f"{s.events:,} events ({s.dead_letters:,} dead letters, {s.duplicates:,} duplicates, {s.late:,} late), "
          f"{s.customers:,} customers, {s.triggers:,} triggers in {s.elapsed_s:.2f} s "
          f"({s.events_per_s:,.0f} events/s)", file=stream)
    if s.timers_dropped:
        print(f"warning: {s.timers_dropped:,} deadlines not armed: more than 8 pending per rule and customer",
              file=stream)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ci(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def print_lift(lifts: list[Lift], stream: TextIO) -> None:
    """One row per rule; `-` where a group is empty (no control group configured, say)."""
    width = max([len("rule")] + [len(l.rule_id) for l in lifts])
    print(f"{'rule':<{width}}  {'contacted':>15}  {'control':>15}  {'abs lift (95% CI, points)':>30}  "
          f"{'rel lift (95% CI, %)':>28}", file=stream)
    for l in lifts:
        contacted = f"{l.contacted_converted:,}/{l.contacted:,} {_pct(l.contacted_rate)}"
        control = f"{l.control_converted:,}/{l.control:,} {_pct(l.control_rate)}"
        absolute = "-" if l.absolute is None else f"{100 * l.absolute:+.1f} {_ci(l.absolute_ci)}"
        relative = "-" if l.relative is None else f"{100 * l.relative:+.0f}% {_ci(l.relative_ci)}"
        print(f"{l.rule_id:<{width}}  {contacted:>15}  {control:>15}  {absolute:>30}  {relative:>28}", file=stream)

