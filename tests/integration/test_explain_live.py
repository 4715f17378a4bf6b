"""`triggers explain --redis-url` and `--config`: a customer's live state, read from the real Redis."""

from __future__ import annotations

import argparse
import uuid

import msgspec
import pytest
from harness import OwnRedis

from engine.cli.common import CommandError
from engine.cli.explain import add_parser
from engine.core.evaluate import Evaluator
from engine.core.times import format_ts, parse_ts
from engine.events.model import Event
from engine.offline.explain import Explanation, explain_customer
from engine.rules.compiler import load_and_compile
from engine.state.redis import RedisStore

T0 = parse_ts("2026-03-02T10:00:00Z")
MIN = 60_000
DAY = 86_400_000

RULES = """\
aggregates:
  lifetime_spend: {sum: amount, on: purchase}
rules:
  - id: vip-5000
    type: threshold
    on: purchase
    if: lifetime_spend >= 5000
    then: {action: vip-welcome, channel: email}
  - id: cart-abandoned
    type: transactional
    on: add_to_cart
    unless: {event: [purchase], within: 30m}
    then: {action: cart-reminder, channel: email}
    cooldown: 24h
policy:
  consent: required
"""


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="triggers")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture
def live(tmp_path, redis_url, redis_client):
    """A customer's state as the live engine leaves it, saved under a prefix of its own."""
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "rules.yaml").write_text(RULES)
    rules = load_and_compile(rules_dir)
    evaluator = Evaluator(rules)
    state = None
    out: list = []
    for ev in [
        Event("e1", "consent", "c-live", T0 - DAY, {"channel": "email", "granted": True}),
        Event("e2", "purchase", "c-live", T0, {"amount": 4200}),
        Event("e3", "add_to_cart", "c-live", T0 + MIN, {"sku": "A"}),
    ]:
        state = evaluator.on_event(state, ev, out)
    prefix = f"te-explain-{uuid.uuid4().hex[:8]}"
    store = RedisStore(redis_url, prefix=prefix)
    store.save_many({"c-live": state})
    assert redis_client.exists(store.state_key("c-live"))
    store.close()
    return rules_dir, rules, prefix


def test_explain_live_state_from_redis(live, redis_url, capsys):
    rules_dir, _, prefix = live
    at = format_ts(T0 + 10 * MIN)
    assert cli(["explain", "--rules", str(rules_dir), "--redis-url", redis_url, "--prefix", prefix,
                "--customer", "c-live", "--at", at]) == 0
    text = capsys.readouterr().out
    assert f"customer c-live: live state from {redis_url} key {prefix}:s:{{c-live}}" in text
    assert "lifetime_spend = 4200 → false" in text
    assert f"waiting: due {format_ts(T0 + 31 * MIN)}" in text
    assert "email: opted in" in text

    assert cli(["explain", "--rules", str(rules_dir), "--redis-url", redis_url, "--prefix", prefix,
                "--customer", "c-live", "--at", format_ts(T0 + DAY), "--json"]) == 0
    e = msgspec.json.decode(capsys.readouterr().out, type=Explanation)
    assert e.source == "live" and e.events == 0
    timer = next(t for t in e.timers if t.rule_id == "cart-abandoned")
    assert timer.overdue   # live, past its due time: the engine has not fired it yet
    vip = next(r for r in e.rules if r.rule_id == "vip-5000")
    assert vip.condition.holds is False and vip.condition.event_id is None
    assert vip.summary.startswith("not armed")


def test_explain_live_api(live, redis_url):
    _, rules, prefix = live
    store = RedisStore(redis_url, prefix=prefix)
    try:
        state = store.load_many(["c-live"])["c-live"]
    finally:
        store.close()
    e = explain_customer(rules, "c-live", state=state, at=T0 + 2 * MIN, rule_id="cart-abandoned")
    assert e.at_basis == "--at" and [r.rule_id for r in e.rules] == ["cart-abandoned"]
    assert e.rules[0].summary == f"waiting: due {format_ts(T0 + 31 * MIN)}"


def test_explain_live_unknown_customer(live, redis_url, capsys):
    rules_dir, _, prefix = live
    assert cli(["explain", "--rules", str(rules_dir), "--redis-url", redis_url, "--prefix", prefix,
                "--customer", "c-nobody"]) == 1
    err = capsys.readouterr().err
    assert "no state for customer 'c-nobody'" in err and f"{prefix}:s:{{c-nobody}}" in err
    # the right customer under the wrong prefix: the message points at --prefix
    assert cli(["explain", "--rules", str(rules_dir), "--redis-url", redis_url, "--prefix", "other",
                "--customer", "c-live"]) == 1
    assert "--prefix 'other'" in capsys.readouterr().err


def test_explain_live_redis_unreachable(live, capsys):
    rules_dir, _, _ = live
    assert cli(["explain", "--rules", str(rules_dir), "--redis-url", "redis://127.0.0.1:1/0",
                "--customer", "c-live"]) == 2
    assert "cannot read te:s:{c-live} from Redis at redis://127.0.0.1:1/0" in capsys.readouterr().err


def test_explain_live_with_config_uses_the_engines_settings(tmp_path, capsys):
    """Review of issue 15: export and backfill took the engine's settings file, explain only
    --redis-url/--prefix/--cluster, so a Redis whose password is in `redis.password` (not in the
    URL, as the settings reference advises) could not be explained live. `--config` reads the
    settings as `triggers run` does; messages show the URL without a password."""
    password = "Expl41n-pw-9c"
    own = OwnRedis(tmp_path, password=password).start()
    try:
        rules_dir = tmp_path / "rules"
        rules_dir.mkdir()
        (rules_dir / "rules.yaml").write_text(RULES)
        rules = load_and_compile(rules_dir)
        out: list = []
        state = Evaluator(rules).on_event(None, Event("e1", "purchase", "c-cfg", T0, {"amount": 4200}), out)
        store = RedisStore(own.url, prefix="cfg", connection={"password": password})
        store.save_many({"c-cfg": state})
        store.close()
        config = tmp_path / "triggers.toml"
        config.write_text(f'rules = "{rules_dir}"\n[redis]\nurl = "{own.url}"\nprefix = "cfg"\n'
                          f'password = "{password}"\n')
        assert cli(["explain", "--config", str(config), "--customer", "c-cfg", "--at", format_ts(T0 + MIN)]) == 0
        res = capsys.readouterr()
        assert "lifetime_spend = 4200 → false" in res.out
        assert f"live state from {own.url} key cfg:s:{{c-cfg}}" in res.out and password not in res.out + res.err
        # the flags override the file's: another prefix holds no such customer
        assert cli(["explain", "--config", str(config), "--prefix", "other", "--customer", "c-cfg"]) == 1
        assert "--prefix 'other'" in capsys.readouterr().err
        # the URL alone: no password, no way in
        assert cli(["explain", "--rules", str(rules_dir), "--redis-url", own.url, "--prefix", "cfg",
                    "--customer", "c-cfg"]) == 2
        assert "AuthenticationError" in capsys.readouterr().err
        with pytest.raises(CommandError, match="not_a_setting"):   # invalid settings refuse (exit 2 in `triggers`)
            config.write_text(config.read_text() + "not_a_setting = 1\n")
            cli(["explain", "--config", str(config), "--customer", "c-cfg"])
    finally:
        own.close()
