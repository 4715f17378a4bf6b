"""`triggers run`: the live engine, a Bytewax dataflow from Kafka through Redis to the sinks.

Everything before the dataflow happens here, in order: settings, logging, rules, metrics,
Kafka's partitions, Redis and the resume check (`engine.operators.resume`); a start that
cannot work exits 2 with one line, before anything is consumed.
"""

from __future__ import annotations

import argparse
import logging
import signal
from typing import Any

from engine.cli.common import CommandError, exit_status, load_rules, read_settings
from engine.cli.version import engine_version

RUN_DESCRIPTION = """\
Run the live engine as a Bytewax dataflow: events from a Kafka topic (keyed by customer id;
other messages are dead letters), customer state, offsets and deadlines in Redis, triggers to
the configured sinks (each gets `sent` triggers only, unless its `statuses` says more),
undecodable events to the dead-letter output. State effects are exactly-once across crashes:
states, offsets and the triggers they produced (a transactional outbox in Redis) commit
together, and one relay per sink delivers from the outbox, so a slow or dead receiver never
holds up event processing, a crash re-sends at most one relay batch (relay.batch_size) per
sink, transient failures are retried for as long as they last and what a sink refuses for good
goes to its dead-letter file (`triggers resend` sends it again).
A Redis that lost the engine's state is detected (at start and at each commit): the run stops
with exit 2 instead of resuming over it; --accept-state-loss overrides that at start.
SIGTERM / Ctrl-C: finish the epoch in hand, commit, stop the relays after their batch, exit 0.
"""
EXIT_STATUS = {
    0: "stopped by SIGTERM or Ctrl-C (the epoch in hand committed), or --exit-at-end done",
    1: "the rules are invalid: every error printed as file:line",
    2: "invalid settings, or a start or run that cannot go on, in one line: state lost in Redis, "
       "credentials refused, a committed offset beyond the topic's end, a failed repartition stage",
    130: "a second SIGTERM or Ctrl-C: exited at once, without the final commit",
}
RUN_EPILOG = ("examples:\n  triggers run --config triggers.toml\n  triggers run --rules rules/ --topic customer-events "
              "--exit-at-end\n\n" + exit_status(EXIT_STATUS)
              + "with --processes N: the status of the first process that failed, else 0\n")


class _HelpWithSettings(argparse.Action):
    """`-h/--help` of `triggers run`: the description, then the settings reference generated from
    the settings struct (imported only here: building the parser must not load the connectors)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show this help message and exit", **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        from engine.cli.settings_help import settings_help

        parser.description = RUN_DESCRIPTION + "\n" + settings_help()
        parser.print_help()
        parser.exit()


def add_parser(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run", help="the live engine: Kafka in, Redis state, configured sinks out",
        description=RUN_DESCRIPTION, epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False)
    run.add_argument("-h", "--help", action=_HelpWithSettings)
    run.add_argument("--config", metavar="FILE", help="settings file (TOML); see below for its keys")
    run.add_argument("--rules", metavar="RULES_DIR", help="rules directory (settings: rules)")
    run.add_argument("--brokers", metavar="HOST:PORT,...", help="Kafka bootstrap servers (kafka.brokers)")
    run.add_argument("--topic", help="Kafka topic of the events, keyed by customer id (kafka.topic)")
    run.add_argument("--redis-url", metavar="URL", help="Redis for state and offsets (redis.url)")
    run.add_argument("--processes", type=int, help="engine processes on this machine, one cluster (processes); "
                     "what makes the engine faster, since worker threads share one interpreter")
    run.add_argument("--workers", type=int, help="worker threads in each process (workers); they do not add speed")
    run.add_argument("--process-id", type=int, help="this process's index in a multi-process cluster (process_id)")
    run.add_argument("--addresses", metavar="HOST:PORT;...", help="every process of the cluster (addresses)")
    run.add_argument("--exit-at-end", action="store_true", default=None,
                     help="stop once the events present at start-up are processed, their deadlines "
                          "due by then have fired and the relays have delivered it all (exit_at_end); "
                          "default: run until stopped")
    run.add_argument("--accept-state-loss", action="store_true",
                     help="when Redis has lost committed state (the start-up check refuses, exit 2), resume at "
                          "the offsets recorded in Kafka anyway: the lost customers' states start empty and the "
                          "lost range is not replayed (a Redis restored from an older copy can still send some of "
                          "its triggers again, with their trigger_ids)")
    run.set_defaults(handler=run_live)


def run_live(args: argparse.Namespace) -> int:
    from engine.operators.logs import setup_logging

    settings = _settings(args)
    setup_logging(settings.log_level, settings.log_format,
                  (settings.process_id or 0) if settings.addresses else None)
    log = logging.getLogger("engine")
    rules = load_rules(settings.rules)
    if rules is None:
        return 1
    if settings.processes > 1 and not settings.addresses:
        from engine.cli.processes import supervise

        return supervise(_argv(args), settings.processes)
    flow = _start(settings, rules, args.accept_state_loss, log)
    if flow is None:
        return 0
    from engine.operators.flow import run
    from engine.operators.shutdown import install_signal_handlers

    install_signal_handlers()
    # the repartition stage runs once per cluster: in its first process
    stage = (_Stage(settings) if settings.kafka.repartition_from and not settings.exit_at_end
             and not settings.process_id else None)
    log.info("running: triggers %s, %d rules from %s (%s), topic %s on %s, state in %s, %d worker(s)",
             engine_version(), len(rules.rules), settings.rules, rules.ruleset.digest, settings.kafka.topic,
             ",".join(settings.kafka.brokers), settings.redis.shown(), settings.workers)
    run(flow, settings)
    if stage is not None:
        stage.stop()
    return _stopped(log)


def _argv(args: argparse.Namespace) -> list[str]:
    """The `run` command line of these arguments, for the processes of `--processes`."""
    argv = ["run"]
    for flag, value in (("--config", args.config), ("--rules", args.rules), ("--brokers", args.brokers),
                        ("--topic", args.topic), ("--redis-url", args.redis_url), ("--workers", args.workers)):
        if value is not None:
            argv += [flag, str(value)]
    if args.exit_at_end:
        argv.append("--exit-at-end")
    if args.accept_state_loss:
        argv.append("--accept-state-loss")
    return argv


def _settings(args: argparse.Namespace):
    """The settings of the run: the file, then TRIGGERS_* variables, then the flags."""
    overrides = {
        "rules": args.rules,
        "kafka.brokers": args.brokers.split(",") if args.brokers else None,
        "kafka.topic": args.topic,
        "redis.url": args.redis_url,
        "workers": args.workers,
        "processes": args.processes,
        "process_id": args.process_id,
        "addresses": args.addresses.split(";") if args.addresses else None,
        "exit_at_end": args.exit_at_end,
    }
    return read_settings(args.config, overrides)


def _start(settings, rules, accept_state_loss: bool, log: logging.Logger):
    """The dataflow, ready to run; None when a signal ended the start-up (nothing to commit yet)."""
    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        return _prepare_run(settings, rules, accept_state_loss)
    except KeyboardInterrupt as e:
        log.info("stopped by %s while starting up", e.args[0] if e.args and e.args[0] else "SIGINT")
        return None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped(log: logging.Logger) -> int:
    """The exit status once the dataflow returned, and the line that says why it did."""
    import sys

    from engine.operators.shutdown import SHUTDOWN

    if SHUTDOWN.fatal:
        print(f"triggers run: {SHUTDOWN.reason}", file=sys.stderr)
        return SHUTDOWN.exit_code
    if SHUTDOWN.requested:
        offsets = ", ".join(f"{p} {o}" for p, o in sorted(SHUTDOWN.stopped_at.items()))
        log.info("%s: committed and closed; offsets %s", SHUTDOWN.reason, offsets or "unchanged")
    else:
        log.info("done: every partition ended")
    return 0


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
    Redis (waiting for it; failing fast on refused credentials), the resume check, the flow.
    A start that cannot work raises CommandError (exit 2)."""
    from engine.operators.flow import FlowError, build_flow, kafka_partitions, serve_metrics
    from engine.operators.resume import ResumeRefused, plan_resume
    from engine.state.redis import RedisStore

    serve_metrics(settings)
    r = settings.redis
    try:
        partitions = kafka_partitions(settings)
        if settings.kafka.repartition_from and settings.exit_at_end:
            _repartition_to_end(settings)   # a bounded run evaluates everything the raw topic holds
        store = RedisStore.from_settings(r)
        try:
            plan_resume(settings, store, partitions, accept_state_loss)
        finally:
            store.close()
        return build_flow(settings, rules, partitions=partitions)
    except (FlowError, ResumeRefused) as e:
        raise CommandError(str(e)) from None


def _repartition_to_end(settings) -> None:
    from engine.operators.repartition import Repartitioner, RepartitionError, config_from_settings

    try:
        Repartitioner(config_from_settings(settings)).run(exit_at_end=True)
    except RepartitionError as e:
        raise CommandError(f"repartition stage: {e}") from None
