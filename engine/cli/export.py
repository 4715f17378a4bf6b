"""`triggers export`: the live customer states in Redis as JSONL, as the rules read them
(`engine.offline.profile`, the profile API's form), one customer per line; read only."""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from typing import IO, Any

from engine.cli.common import CommandError, add_redis_options, exit_status, load_rules, read_settings, redis_overrides

DESCRIPTION = """\
Write the customer states the live engine keeps in Redis as JSONL, one object per customer, in
the form GET /customers/{id} answers: aggregates as the rules read them at the export time
(windowed sums over the window ending then, decayed counts decayed to then), top interests with
their weights, profile, consent, last contact per channel and per rule, pending deadlines and
journey positions, with the customer's id. Streams: the state keys are walked with SCAN (every
primary of a Redis Cluster) and fetched a batch at a time, so memory stays constant however
many customers there are; nothing is written to Redis. Customers come in SCAN's order.
Redis and the rules are the engine's settings, read as `triggers run --config FILE` reads them
(the file, then TRIGGERS_* variables): URL, prefix, cluster, username, password and TLS;
--rules, --redis-url, --prefix and --cluster override them.
"""
EPILOG = """examples:
  triggers export --config triggers.toml > customers.jsonl
  triggers export --rules rules/ --redis-url redis://127.0.0.1:6379/0 > customers.jsonl
  triggers export --rules rules/ --redis-url redis://127.0.0.1:6379/0 --prefix te --customer c-31
  triggers export --rules rules/ --redis-url redis://127.0.0.1:7000 --cluster --out customers.jsonl
"""
EXIT_STATUS = {0: "exported (with --customer: that customer)", 1: "invalid rules, or --customer has no state",
               2: "bad usage (invalid settings, a bad --at, Redis unreachable, an output that cannot be written)"}


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export", help="the live states in Redis as JSONL, as the rules read them",
        description=DESCRIPTION, epilog=EPILOG + "\n" + exit_status(EXIT_STATUS),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", help="the engine's settings file (TOML), as for `triggers run`: "
                   "rules and redis.* (credentials, TLS) come from it")
    p.add_argument("--rules", metavar="RULES_DIR", help="the rules the engine runs (they say what the aggregates "
                   "are and how to read them); overrides the settings' rules (default: rules)")
    add_redis_options(p, "the engine's")
    p.add_argument("--customer", metavar="ID", help="only this customer")
    p.add_argument("--at", metavar="TIME", help="read the values at this time (RFC 3339); default: now")
    p.add_argument("--out", default="-", metavar="FILE", help="where to write ('-' = stdout, the default)")
    p.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    import redis

    from engine.core.times import now_ms, parse_ts
    from engine.state.redis import RedisStore

    settings = read_settings(args.config, redis_overrides(args))
    r = settings.redis
    rules = load_rules(settings.rules, prog="triggers export")
    if rules is None:
        return 1
    try:
        at = parse_ts(args.at) if args.at else now_ms()
    except ValueError as e:
        raise CommandError(f"--at: {e}") from None
    try:
        store = RedisStore.from_settings(r)
    except ValueError as e:
        raise CommandError(f"Redis at {r.shown()}: {e}") from None
    try:
        out: Any = nullcontext(sys.stdout.buffer) if args.out == "-" else open(args.out, "wb")  # noqa: SIM115
    except OSError as e:
        raise CommandError(f"cannot write {args.out}: {e.strerror}") from None
    try:
        with out as sink:
            n = _export(rules, store, at, args.customer, sink)
    except redis.RedisError as e:
        raise CommandError(f"Redis at {r.shown()}: {type(e).__name__}: {e}") from None
    finally:
        store.close()
    if args.customer is not None and n == 0:
        print(f"triggers export: no state for customer '{args.customer}' in Redis at {r.shown()} "
              f"(key {store.state_key(args.customer)}; is --prefix {r.prefix!r} the engine's?)", file=sys.stderr)
        return 1
    where = "" if args.out == "-" else f" to {args.out}"
    print(f"triggers export: {n} customer(s){where}", file=sys.stderr)
    return 0


def _export(rules: Any, store: Any, at: int, customer: str | None, sink: IO[bytes]) -> int:
    """Write the profiles; how many. A state that does not decode is reported and skipped."""
    import msgspec

    from engine.offline.profile import Source, customer_profile, encode_profile
    from engine.state.customer import decode_state

    batches = ([list(store.load_many_encoded([customer]).items())] if customer is not None
               else store.scan_states())
    n = 0
    for batch in batches:
        lines = []
        for cid, image in batch:
            try:
                state = decode_state(image)
            except msgspec.DecodeError as e:
                print(f"triggers export: skipped {store.state_key(cid)}: not an engine state ({e})", file=sys.stderr)
                continue
            lines.append(encode_profile(customer_profile(rules, cid, state, at, Source.REDIS)))
        if lines:
            sink.write(b"\n".join(lines) + b"\n")
            n += len(lines)
    return n
