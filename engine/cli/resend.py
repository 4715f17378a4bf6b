"""`triggers resend`: deliver the triggers of a sink's dead-letter file again, through a
configured sink, once the receiver takes them (SPEC §6)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from engine.cli.common import CommandError, exit_status, read_settings

DESCRIPTION = """\
Deliver again the triggers a sink refused for good: FILE is that sink's dead-letter file
(<sink>-dead-letters.jsonl unless its dead_letter_path says otherwise; a webhook's older
dead-letter files are read too). Each trigger goes out through the sink NAME of the settings
(kafka, webhook, redis_stream or file), with its own trigger_id, so a receiver that already has
it de-duplicates it; a trigger whose status that sink does not take (its `statuses`) is skipped.
Transient failures are tried again for up to --retry-for seconds; what the sink refuses again
is listed. FILE ('-' = stdin) is not changed.
"""

EPILOG = """examples:
  triggers resend webhook-dead-letters.jsonl --sink webhook --config triggers.toml --dry-run
  triggers resend webhook-dead-letters.jsonl --sink webhook --config triggers.toml
  grep c-1029 webhook-dead-letters.jsonl | triggers resend - --sink webhook --config triggers.toml
"""
EXIT_STATUS = {0: "every trigger was delivered (with --dry-run: could be)",
               1: "some were not delivered (refused again, or still failing after --retry-for), or lines of "
                  "FILE hold no trigger",
               2: "bad usage (no such sink in the settings, no such FILE, invalid settings)"}

SHOWN = 5   # refusals and unreadable lines printed one by one; the rest are counted


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "resend", help="deliver a sink's dead-lettered triggers again", description=DESCRIPTION,
        epilog=EPILOG + "\n" + exit_status(EXIT_STATUS),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE", help="a sink's dead-letter file (JSONL); '-' = stdin")
    p.add_argument("--sink", required=True, metavar="NAME",
                   help="the configured sink to deliver through: kafka, webhook, redis_stream or file")
    p.add_argument("--config", metavar="FILE", help="settings file (TOML), as for `triggers run`")
    p.add_argument("--dry-run", action="store_true", help="read and check FILE, deliver nothing, say how many "
                   "triggers would go")
    p.add_argument("--retry-for", type=float, default=60.0, metavar="S",
                   help="how long transient failures (receiver down, timeouts) are tried again (default 60)")
    p.set_defaults(handler=run_resend)


def run_resend(args: argparse.Namespace) -> int:
    from engine.operators.outbox import read_dead_letters
    from engine.operators.sinks import trigger_specs

    settings = read_settings(args.config, {})
    specs = {spec.name: spec for spec in trigger_specs(settings, quiet=True)}
    spec = specs.get(args.sink)
    if spec is None:
        raise CommandError(f"no sink {args.sink!r} in the settings{f' ({args.config})' if args.config else ''}; "
                           f"configured: {', '.join(sorted(specs))}")
    path = Path(args.file) if args.file != "-" else Path("<stdin>")   # as messages show it
    if args.file != "-" and not path.is_file():
        raise CommandError(f"no such dead-letter file: {path}")
    try:
        triggers, unreadable = read_dead_letters(args.file)
    except OSError as e:
        raise CommandError(f"cannot read {path}: {e.strerror or e}") from None
    for line, why in unreadable[:SHOWN]:
        print(f"{path}:{line}: not a dead letter: {why}", file=sys.stderr)
    wanted = [t for t in triggers if spec.statuses is None or t.status in spec.statuses]
    skipped = len(triggers) - len(wanted)
    noun = "trigger" if len(wanted) == 1 else "triggers"
    extra = (f"; {skipped} skipped (status not in the sink's statuses)" if skipped else "") + \
            (f"; {len(unreadable)} unreadable line(s)" if unreadable else "")
    if args.dry_run:
        print(f"{path}: would deliver {len(wanted)} {noun} through sink {spec.name}{extra}; nothing sent (--dry-run)")
        return 1 if unreadable else 0
    delivered, refused, failing = _deliver(spec, wanted, settings.relay, args.retry_for)
    for trigger_id, why in refused[:SHOWN]:
        print(f"{path}: trigger {trigger_id} refused again: {why}", file=sys.stderr)
    summary = f"{path}: {delivered} of {len(wanted)} {noun} delivered through sink {spec.name}"
    if refused:
        summary += f"; {len(refused)} refused again"
    if failing:
        summary += f"; {failing} not delivered after {args.retry_for:g} s of transient failures (run again later)"
    print(summary + extra)
    return 0 if delivered == len(wanted) and not unreadable else 1


def _deliver(spec, triggers: list, relay, retry_for_s: float) -> tuple[int, list[tuple[str, str]], int]:
    """(delivered, [(trigger id, reason)] refused for good, still failing transiently)."""
    from connectors.base import Backoff

    try:
        connector = spec.open()
    except OSError as e:
        raise CommandError(f"sink {spec.name}: cannot open it: {e.strerror or e}") from None
    delivered = 0
    refused: list[tuple[str, str]] = []
    deadline = time.monotonic() + retry_for_s
    try:
        for start in range(0, len(triggers), relay.batch_size):
            pending = triggers[start:start + relay.batch_size]
            backoff = Backoff(relay.backoff_base_s, relay.backoff_max_s)
            while pending:
                failures = connector.deliver(pending)
                refused += [(pending[f.index].trigger_id, f.reason) for f in failures if f.permanent]
                again = [pending[f.index] for f in failures if not f.permanent]
                delivered += len(pending) - len(failures)
                if again and time.monotonic() >= deadline:
                    return delivered, refused, len(again) + max(0, len(triggers) - start - relay.batch_size)
                if again:
                    time.sleep(min(backoff.next_delay(), max(0.0, deadline - time.monotonic())))
                pending = again
    finally:
        connector.close()
    return delivered, refused, 0
