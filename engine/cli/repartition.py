"""`triggers repartition`: the repartition stage on its own (a process of its own for high rates)."""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli.common import CommandError, exit_status

DESCRIPTION = (
    "For event topics not keyed by customer id: consume RAW_TOPIC in a consumer group and write "
    "each message unchanged to the engine's topic (kafka.topic), keyed by its customer_id, one "
    "Kafka transaction per batch that also carries the consumed offsets: after any crash every "
    "message is in the keyed topic exactly once (for read_committed readers, the default). "
    "Undecodable messages go through without a key (the engine dead-letters them). A raw topic "
    "with several partitions can reorder one customer's events. `triggers run` runs the same "
    "stage in a thread when kafka.repartition_from is set; this command runs it on its own."
)

EXIT_STATUS = {0: "stopped by SIGTERM or Ctrl-C (the batch in flight committed), or --exit-at-end done",
               2: "bad usage, invalid settings, or the stage failed (one line says why)"}


def add_parser(subparsers: Any) -> None:
    rp = subparsers.add_parser(
        "repartition", help="re-key a raw topic by customer id into the engine's topic, exactly once",
        description=DESCRIPTION,
        epilog="example:\n  triggers repartition --from raw-events --to customer-events\n"
               "  triggers run --config triggers.toml      # with kafka.repartition_from = \"raw-events\"\n\n"
               + exit_status(EXIT_STATUS),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    rp.add_argument("--config", metavar="FILE", help="settings file (TOML), as for `triggers run`")
    rp.add_argument("--from", dest="from_topic", metavar="RAW_TOPIC", help="the raw topic (kafka.repartition_from)")
    rp.add_argument("--to", dest="to_topic", metavar="TOPIC", help="the keyed topic the engine reads (kafka.topic)")
    rp.add_argument("--brokers", metavar="HOST:PORT,...", help="Kafka bootstrap servers (kafka.brokers)")
    rp.add_argument("--process-id", type=int, help="this instance's index when several run (its transactional id)")
    rp.add_argument("--exit-at-end", action="store_true", help="stop once what the raw topic holds is re-keyed")
    rp.set_defaults(handler=run_repartition)


def run_repartition(args: argparse.Namespace) -> int:
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
        raise CommandError(str(e)) from None
    setup_logging(settings.log_level, settings.log_format)
    return run_until_stopped(config, args.exit_at_end, prog="triggers repartition")
