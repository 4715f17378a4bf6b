"""`triggers explain` on the command line: its arguments, the live state read from Redis (once,
never written), and the exit status. The explanation itself is `engine.offline.explain`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from engine.cli.common import exit_status, load_rules
from engine.offline.explain import ExplainError, UnknownCustomer, explain_customer, print_explanation
from engine.state.customer import CustomerState

DESCRIPTION = """\
Explain one customer: the state the rules read (aggregates at the explain time, profile,
consent per channel, recent contacts, open triggers awaiting responses), the pending timers,
and per rule whether its `if:` holds now (each and/or part with the values it compares) and
why it did or did not fire: its triggers with their status and the policy check that decided
them (cooldown, no_consent, frequency_cap, priority, quiet hours, control group), or why it
never started, was cancelled, or is still waiting. A journey shows the customer's position: the
step, the wait it is in (its deadline, the awaited event and match, where yes and no lead) or
how the latest walk ended, and, from a backtest, why the walk took each branch.

From a backtest (--events): only this customer's events are replayed; the explain time is
their last event, --until or --at. Live (--redis-url): the state the engine keeps in Redis,
read only; the explain time is now or --at.
"""

EPILOG = """\
examples:
  triggers explain --rules rules/ --events examples/sample-events.jsonl --customer c-31
  triggers explain --rules rules/ --events events.jsonl --customer c-31 --rule cart-abandoned --json
  triggers explain --rules rules/ --events events.jsonl --customer c-31 --until 2026-02-01T00:00:00Z
  triggers explain --rules rules/ --redis-url redis://127.0.0.1:6379/0 --prefix te --customer c-31
"""
EXIT_STATUS = {0: "explained", 1: "no such customer (no events, no state) or invalid rules",
               2: "bad usage (no such rule or events file, a bad time, Redis unreachable)"}


def add_parser(subparsers: Any) -> None:
    """Register `triggers explain` on the `triggers` command's subparsers."""
    p = subparsers.add_parser(
        "explain", help="why a customer got (or did not get) each trigger: state, timers, conditions, policy",
        description=DESCRIPTION, epilog=EPILOG + "\n" + exit_status(EXIT_STATUS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rules", required=True, metavar="RULES_DIR", help="rules directory (or one file)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--events", metavar="FILE", help="backtest: JSONL events, native or Segment form ('-' = stdin)")
    source.add_argument("--redis-url", metavar="URL", help="live: the Redis holding the engine's state, "
                        "e.g. redis://127.0.0.1:6379/0")
    p.add_argument("--prefix", default="te", help="live: the key prefix of the engine's state (default: te)")
    p.add_argument("--cluster", action="store_true", help="live: --redis-url names a node of a Redis Cluster")
    p.add_argument("--customer", required=True, metavar="ID", help="the customer id")
    p.add_argument("--rule", metavar="ID", help="explain only this rule")
    p.add_argument("--until", metavar="TIME", help="backtest: events after it (RFC 3339) are not replayed")
    p.add_argument("--at", metavar="TIME", help="the explain time (RFC 3339); default: the customer's last "
                   "event (backtest), now (live)")
    p.add_argument("--json", action="store_true", help="print the explanation as JSON")
    p.set_defaults(handler=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    err = sys.stderr
    if args.redis_url and args.until:
        print("triggers explain: --until applies to a backtest (--events); live, use --at", file=err)
        return 2
    rules = load_rules(args.rules, prog="triggers explain")
    if rules is None:
        return 1
    try:
        if args.events:
            explanation = explain_customer(rules, args.customer, events=args.events, rule_id=args.rule,
                                           until=args.until, at=args.at)
        else:
            if args.rule is not None and args.rule not in rules.by_id:   # before touching Redis
                explain_customer(rules, args.customer, state=CustomerState(), rule_id=args.rule)
            state, where = _load_live(args)
            explanation = explain_customer(rules, args.customer, state=state, rule_id=args.rule, at=args.at,
                                           where=where)
    except ExplainError as e:
        print(f"triggers explain: {e}", file=err)
        return e.exit_code
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(explanation)).decode())
    else:
        print_explanation(explanation, sys.stdout)
    return 0


def _load_live(args: argparse.Namespace) -> tuple[CustomerState, str]:
    import redis

    from engine.state.redis import RedisStore

    try:
        store = RedisStore(args.redis_url, prefix=args.prefix, cluster=args.cluster)
    except ValueError as e:
        raise ExplainError(f"--redis-url {args.redis_url!r}: {e}") from None
    key = store.state_key(args.customer)
    try:
        states = store.load_many([args.customer])
    except redis.RedisError as e:
        raise ExplainError(f"cannot read {key} from Redis at {args.redis_url}: {e}") from None
    except msgspec.DecodeError as e:
        raise UnknownCustomer(f"{key} in Redis at {args.redis_url} is not an engine state: {e}") from None
    finally:
        store.close()
    state = states.get(args.customer)
    if state is None:
        raise UnknownCustomer(f"no state for customer '{args.customer}' in Redis at {args.redis_url} "
                              f"(key {key}; is --prefix {args.prefix!r} the engine's?)")
    return state, f"{args.redis_url} key {key}"

