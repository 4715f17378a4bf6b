"""`triggers explain` on the command line: its arguments, the live state read from Redis (once,
never written), and the exit status. The explanation itself is `engine.offline.explain`.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

import msgspec

from engine.cli.common import add_redis_options, exit_status, load_rules, read_settings, redis_overrides
from engine.offline.explain import ExplainError, UnknownCustomer, explain_customer, print_explanation
from engine.state.customer import CustomerState

if TYPE_CHECKING:
    from engine.operators.settings import RedisSettings

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
their last event, --until or --at. Live (--config or --redis-url): the state the engine keeps in
Redis, read only; the explain time is now or --at. With --config the rules and Redis are the
engine's settings, read as `triggers run --config FILE` reads them (the file, then TRIGGERS_*
variables: URL, prefix, cluster, username, password, TLS); --rules, --redis-url, --prefix and
--cluster override them.
"""

EPILOG = """\
examples:
  triggers explain --rules rules/ --events examples/sample-events.jsonl --customer c-31
  triggers explain --rules rules/ --events events.jsonl --customer c-31 --rule cart-abandoned --json
  triggers explain --rules rules/ --events events.jsonl --customer c-31 --until 2026-02-01T00:00:00Z
  triggers explain --rules rules/ --redis-url redis://127.0.0.1:6379/0 --prefix te --customer c-31
  triggers explain --config triggers.toml --customer c-31
"""
EXIT_STATUS = {0: "explained", 1: "no such customer (no events, no state) or invalid rules",
               2: "bad usage (no such rule or events file, a bad time, invalid settings, Redis unreachable)"}


def add_parser(subparsers: Any) -> None:
    """Register `triggers explain` on the `triggers` command's subparsers."""
    p = subparsers.add_parser(
        "explain", help="why a customer got (or did not get) each trigger: state, timers, conditions, policy",
        description=DESCRIPTION, epilog=EPILOG + "\n" + exit_status(EXIT_STATUS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rules", metavar="RULES_DIR", help="rules directory (or one file); required unless --config "
                   "names the engine's")
    p.add_argument("--events", metavar="FILE", help="backtest: JSONL events, native or Segment form ('-' = stdin)")
    p.add_argument("--config", metavar="FILE", help="live: the engine's settings file (TOML), as for `triggers "
                   "run`: rules and redis.* (credentials, TLS) come from it")
    add_redis_options(p, "live: the engine's")
    p.add_argument("--customer", required=True, metavar="ID", help="the customer id")
    p.add_argument("--rule", metavar="ID", help="explain only this rule")
    p.add_argument("--until", metavar="TIME", help="backtest: events after it (RFC 3339) are not replayed")
    p.add_argument("--at", metavar="TIME", help="the explain time (RFC 3339); default: the customer's last "
                   "event (backtest), now (live)")
    p.add_argument("--json", action="store_true", help="print the explanation as JSON")
    p.set_defaults(handler=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    err = sys.stderr
    live = args.config is not None or args.redis_url is not None
    if live == (args.events is not None):
        print("triggers explain: give --events FILE (a backtest) or --config / --redis-url (live), one of them",
              file=err)
        return 2
    if not live and (args.prefix is not None or args.cluster):
        print("triggers explain: --prefix and --cluster read the live state (--config or --redis-url)", file=err)
        return 2
    if live and args.until:
        print("triggers explain: --until applies to a backtest (--events); live, use --at", file=err)
        return 2
    settings = read_settings(args.config, redis_overrides(args)) if live else None
    if not live and args.rules is None:
        print("triggers explain: --rules is required with --events", file=err)
        return 2
    rules = load_rules(settings.rules if settings is not None else args.rules, prog="triggers explain")
    if rules is None:
        return 1
    try:
        if args.events:
            explanation = explain_customer(rules, args.customer, events=args.events, rule_id=args.rule,
                                           until=args.until, at=args.at)
        else:
            if args.rule is not None and args.rule not in rules.by_id:   # before touching Redis
                explain_customer(rules, args.customer, state=CustomerState(), rule_id=args.rule)
            assert settings is not None
            state, where = _load_live(settings.redis, args.customer)
            rules.conform(state, args.customer)   # as the engine reads it (values of an older definition dropped)
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


def _load_live(settings: RedisSettings, customer: str) -> tuple[CustomerState, str]:
    """The customer's state in the Redis the settings name (connected as every command connects:
    `RedisStore.from_settings`); read once, never written. Messages show the URL without a password."""
    import redis

    from engine.state.redis import RedisStore

    shown = settings.shown()
    try:
        store = RedisStore.from_settings(settings)
    except ValueError as e:
        raise ExplainError(f"Redis at {shown}: {e}") from None
    key = store.state_key(customer)
    try:
        states = store.load_many([customer])
    except redis.RedisError as e:
        raise ExplainError(f"cannot read {key} from Redis at {shown}: {type(e).__name__}: {e}") from None
    except msgspec.DecodeError as e:
        raise UnknownCustomer(f"{key} in Redis at {shown} is not an engine state: {e}") from None
    finally:
        store.close()
    state = states.get(customer)
    if state is None:
        raise UnknownCustomer(f"no state for customer '{customer}' in Redis at {shown} "
                              f"(key {key}; is --prefix {settings.prefix!r} the engine's?)")
    return state, f"{shown} key {key}"

