"""What each section of a rules file may say (SPEC §3): `aggregate`, `rule` and `policy` read
one entry of `aggregates:`, `rules:` and `policy:` into its model struct, or return None after
reporting every mistake in it at its line.

Shape, types, units and the consistency of each rule are checked here; `if:` expressions are
not compiled (the compiler does, reporting at `Rule.condition_line`), so unknown aggregate names
inside conditions are the compiler's to report. A rule's id is read even when the rule is
invalid, so that the loader still finds duplicates.
"""

from __future__ import annotations

import re
from typing import Any

from engine.core.times import MAX_DURATION_MS, format_duration
from engine.rules.errors import did_you_mean
from engine.rules.expr import reserved_name_problem
from engine.rules.journey_schema import JOURNEY_KEYS, journey
from engine.rules.model import (
    AGGREGATE_KINDS,
    ANY_EVENT,
    BEST,
    RULE_TYPES,
    Action,
    Aggregate,
    Attribution,
    FrequencyCap,
    Policy,
    QuietHours,
    Rule,
    RuleType,
    SendTime,
    Step,
    TimeSettings,
    Unless,
)
from engine.rules.scope import Scope
from engine.rules.values import (
    Table,
    alternatives,
    check_keys,
    clock,
    closest,
    describe,
    duration,
    events,
    expression_ok,
    invisible,
    one_of,
    positive_int,
    read,
    read_fields,
    read_mapping,
    share,
    string,
    text,
    whole_number,
)
from engine.rules.yaml_lines import Node

__all__ = ["AGGREGATE_EXAMPLES", "aggregate", "policy", "rule"]

_AGGREGATE_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PROFILE_ATTR = re.compile(r"profile\.[A-Za-z_][A-Za-z0-9_]*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# --------------------------------------------------------------------------- aggregates


def _where(scope: Scope, key: str, node: Node) -> str | None:
    """`where:` is an `if:`-language expression, read like `if:` (compiled by the compiler)."""
    return _condition(scope, key, node)


_WHERE = ("where", _where)
_AGGREGATE_TABLES: dict[str, Table] = {
    "sum": {"sum": ("field", string), "on": ("on", events), "window": ("window", duration), "by": ("by", string),
            "where": _WHERE},
    "count": {"count": ("on", events), "window": ("window", duration), "by": ("by", string), "where": _WHERE},
    "last": {"last": ("field", string), "on": ("on", events), "where": _WHERE},
    "decayed_count": {"decayed_count": ("on", events), "by": ("by", string), "half_life": ("half_life", duration),
                      "where": _WHERE},
}
_AGGREGATE_REQUIRED = {"sum": ("on",), "count": (), "last": (), "decayed_count": ("by", "half_life")}
AGGREGATE_EXAMPLES = {
    "sum": "{sum: amount, on: purchase}",
    "count": "{count: purchase}",
    "last": '{last: ts, on: "*"}',
    "decayed_count": "{decayed_count: product_view, by: category, half_life: 14d}",
}
_AGGREGATE_OPTIONS = ("on", "window", "by", "half_life", "where")
_AGGREGATE_KEYS = (*AGGREGATE_KINDS, *_AGGREGATE_OPTIONS)
# Why an option known to some kinds does not fit this one.
_OPTION_MISFIT = {
    "on": "count and decayed_count take their event types as the argument, e.g. {count: purchase}",
    "window": "only sum and count aggregates have a window",
    "by": "only count, sum and decayed_count aggregates use it",
    "half_life": "only decayed_count aggregates use it",
}


def aggregate(scope: Scope, name: str, line: int, node: Node) -> Aggregate | None:
    """The aggregate `name:` at `line`; a `last` aggregate reads every event unless it says `on`."""
    mark = scope.mark()
    _check_aggregate_name(scope, name, line)
    if not node.is_map:
        example = AGGREGATE_EXAMPLES["count"]
        scope.error(node.line, f"an aggregate is a mapping like {example}, not {describe(node.value)}")
        return None
    kind = _aggregate_kind(scope, node)
    if kind is None:
        return None
    _check_aggregate_options(scope, node, kind)
    fields = read_fields(scope, node, _AGGREGATE_TABLES[kind])
    if scope.failed_since(mark):
        return None
    if kind == "last":
        fields.setdefault("on", (ANY_EVENT,))
    if "where" in fields:
        fields["where_line"] = _condition_line(node.value["where"])
    return Aggregate(name=name, kind=kind, source=scope.source(line), **fields)


def _check_aggregate_name(scope: Scope, name: str, line: int) -> None:
    if not _AGGREGATE_NAME.fullmatch(name):
        scope.error(line, "a name uses lower-case letters, digits and _, and does not start with a digit"
                    + invisible(name))
    elif (problem := reserved_name_problem(name)) is not None:
        scope.error(line, problem)


def _aggregate_kind(scope: Scope, node: Node) -> str | None:
    """The one kind key; a typo close to a kind counts as the kind, to avoid a second error."""
    kind_typo = False
    for key in node.value:
        if key in _AGGREGATE_KEYS:
            continue
        guess = closest(key, _AGGREGATE_KEYS)
        kind_typo = kind_typo or guess in AGGREGATE_KINDS
        what = "aggregate kind" if guess in AGGREGATE_KINDS else "key"
        hint = did_you_mean(key, _AGGREGATE_KEYS) if guess else f": expected {alternatives(_AGGREGATE_KEYS)}"
        scope.error(node.key_lines[key], f"unknown {what} '{key}'{hint}")
    kinds = [key for key in node.value if key in AGGREGATE_KINDS]
    if len(kinds) > 1:
        scope.error(node.line, f"has {len(kinds)} kinds ({', '.join(kinds)}): keep exactly one")
    elif not kinds and not kind_typo:
        scope.error(node.line, f"needs a kind: {alternatives(AGGREGATE_KINDS)}, e.g. {AGGREGATE_EXAMPLES['count']}")
    return kinds[0] if len(kinds) == 1 else None


def _check_aggregate_options(scope: Scope, node: Node, kind: str) -> None:
    table = _AGGREGATE_TABLES[kind]
    for key in node.value:
        if key in _AGGREGATE_OPTIONS and key not in table:
            scope.error(node.key_lines[key], f"'{key}' does not apply to a {kind} aggregate: {_OPTION_MISFIT[key]}")
    for key in _AGGREGATE_REQUIRED[kind]:
        if key not in node.value:
            scope.error(node.line, f"a {kind} aggregate needs '{key}', e.g. {AGGREGATE_EXAMPLES[kind]}")
    if kind in ("sum", "count") and "by" in node.value and "window" in node.value:
        scope.error(node.key_lines["window"], f"a {kind} aggregate with 'by' has no 'window' (one window per key"
                    " would multiply the state): drop 'window', or use a decayed_count with a half_life")


# --------------------------------------------------------------------------- rules


def _condition(scope: Scope, key: str, node: Node) -> str | None:
    """`if:` stays source text for the compiler; a bare number or true/false is a valid expression."""
    value = node.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return node.text
    if isinstance(value, str) and value.strip():
        return value if expression_ok(scope, key, node, value, template=False) else None
    scope.error(node.line, f"'{key}' must be an expression such as `lifetime_spend >= 5000`, not {describe(value)}"
                " (quote it if it contains ': ' or starts with '{' or '[')")
    return None


def _condition_line(node: Node) -> int:
    # a block scalar (`if: |`) starts its text on the line after the indicator
    return node.line + 1 if node.style in ("|", ">") else node.line


def _profile_date(scope: Scope, key: str, node: Node) -> str | None:
    value = node.value
    if isinstance(value, str) and _PROFILE_ATTR.fullmatch(value):
        return value
    hint = (
        f" (did you mean 'profile.{value}'?)"
        if isinstance(value, str) and _IDENTIFIER.fullmatch(value)
        else ", like profile.birthday"
    )
    scope.error(node.line, f"'{key}' must name a profile attribute holding a date, not {node.text!r}{hint}")
    return None


def _match(scope: Scope, key: str, node: Node) -> dict[str, str] | None:
    """Property -> template. A number or true/false becomes Python's `str()` of it, because the
    compiler compares `str(event property)` with the rendered template (`true` matches True)."""
    if not node.is_map:
        example = '{coupon: "{event.coupon}"}'
        scope.error(node.line, f"'{key}' must be a mapping like {example}, not {describe(node.value)}")
        return None
    match = {}
    for prop, value in node.value.items():
        if isinstance(value.value, (dict, list)) or value.value is None:
            scope.error(value.line, f"'{key}.{prop}' must be a single value or template, not {describe(value.value)}")
        elif expression_ok(scope, f"{key}.{prop}", value, str(value.value), template=True):
            match[prop] = str(value.value)
    return match if len(match) == len(node.value) else None


_UNLESS_TABLE: Table = {"event": ("events", events), "within": ("within", duration), "match": ("match", _match)}
_UNLESS_EXAMPLE = "{event: purchase, within: 30m}"


def _unless(scope: Scope, node: Node, in_step: bool) -> Unless | None:
    """A rule's `unless` needs `within` (how long to wait); a step's waits the step's `after`."""
    required = ("event",) if in_step else ("event", "within")
    fields = read_mapping(scope, node, "unless", _UNLESS_EXAMPLE, _UNLESS_TABLE, required)
    if fields is None:
        return None
    if in_step and "within" in fields:
        scope.error(
            node.value["within"].line, "a step's 'unless' watches the wait given by the step's 'after': drop 'within'"
        )
        return None
    return Unless(source=scope.source(node.line), **fields)


def _rule_unless(scope: Scope, key: str, node: Node) -> Unless | None:
    return _unless(scope, node, in_step=False)


def _step_unless(scope: Scope, key: str, node: Node) -> Unless | None:
    return _unless(scope, node, in_step=True)


def _payload(scope: Scope, key: str, node: Node) -> dict[str, Any] | None:
    if not node.is_map:
        example = '{sku: "{event.sku}"}'
        scope.error(node.line, f"'{key}' must be a mapping like {example}, not {describe(node.value)}")
        return None
    # the values of its keys are templates (nested ones are passed on as they are)
    checked = [expression_ok(scope, f"{key}.{name}", value, value.value, template=True)
               for name, value in node.value.items() if isinstance(value.value, str)]
    return node.plain() if all(checked) else None


def _channels(scope: Scope, key: str, node: Node) -> tuple[str, ...] | None:
    """A channel, or a fallback list of them (`[push, sms]`: the first the customer may be contacted on)."""
    if not isinstance(node.value, list):
        name = string(scope, key, node)
        return None if name is None else (name,)
    if not node.value:
        scope.error(node.line, f"'{key}' needs at least one channel")
        return None
    names = tuple(string(scope, key, item) for item in node.value)
    if None in names:
        return None
    if len(set(names)) != len(names):
        scope.error(node.line, f"'{key}' lists a channel twice: each is tried once, in order")
        return None
    return names  # type: ignore[return-value]


def _send_time_choice(scope: Scope, key: str, node: Node) -> tuple[str, float] | None:
    """`best`, or `{best, holdout: 10%}`: the best hour, with a share of customers sent at once
    (deterministic per customer and rule), so that `report` shows what the timing itself is worth."""
    if node.value == BEST:
        return BEST, 0.0
    if node.is_map and set(node.value) == {BEST, "holdout"} and node.value[BEST].value is None:
        held = share(scope, f"{key}.holdout", node.value["holdout"])
        return None if held is None else (BEST, held)
    scope.error(node.line, f"'{key}' must be best, or {{best, holdout: 10%}} to send a share of customers at once,"
                f" not {describe(node.value)}")
    return None


_ACTION_TABLE: Table = {
    "action": ("action", string),
    "channel": ("channels", _channels),
    "payload": ("payload", _payload),
    "send_time": ("send_time", _send_time_choice),
}
_ACTION_EXAMPLE = "{action: cart-reminder, channel: email}"


def _action(scope: Scope, key: str, node: Node) -> Action | None:
    fields = read_mapping(scope, node, key, _ACTION_EXAMPLE, _ACTION_TABLE, ("action", "channel"))
    if fields is None:
        return None
    channels = fields.pop("channels")
    if "send_time" in fields:
        fields["send_time"], fields["send_time_holdout"] = fields["send_time"]
    if BEST in channels and len(channels) > 1:
        scope.error(node.value["channel"].line, f"'channel: {BEST}' chooses among the policy's channels"
                    " (responses_by_channel): give it alone, not in a list")
        return None
    return Action(source=scope.source(node.line), channel=channels[0], channels=channels if len(channels) > 1 else (),
                  **fields)


_STEP_TABLE: Table = {
    "after": ("after", duration),
    "unless": ("unless", _step_unless),
    "if": ("condition", _condition),
    "then": ("then", _action),
}
_STEP_EXAMPLE = "{after: 2d, then: {action: welcome-2, channel: email}}"


def _steps(scope: Scope, key: str, node: Node) -> tuple[Step, ...] | None:
    if not isinstance(node.value, list) or not node.value:
        scope.error(node.line, f"'{key}' must be a list of steps, each like {_STEP_EXAMPLE}")
        return None
    steps = [_step(scope.within(f"step {index + 1}: "), index, item) for index, item in enumerate(node.value)]
    if None in steps:
        return None
    # each wait is bounded, and so is their sum: a deadline stays inside datetime's range
    span = sum(step.after for step in steps if step is not None)
    if span > MAX_DURATION_MS:
        scope.error(node.line, f"the steps wait {format_duration(span)} in all; a series may span at most"
                    f" {format_duration(MAX_DURATION_MS)} (10 years)")
        return None
    return tuple(steps)  # type: ignore[arg-type]


def _step(scope: Scope, index: int, node: Node) -> Step | None:
    """The first step is sent when the rule fires; each later one `after` the previous step."""
    fields = read_mapping(scope, node, "steps", _STEP_EXAMPLE, _STEP_TABLE, ("then",))
    if fields is None:
        return None
    problems = _step_problems(index, node)
    for line, problem in problems:
        scope.error(line, problem)
    if problems:
        return None
    if "if" in node.value:
        fields["condition_line"] = _condition_line(node.value["if"])
    return Step(source=scope.source(node.line), **fields)


def _step_problems(index: int, node: Node) -> list[tuple[int, str]]:
    given = node.value
    if index > 0:
        if "after" in given:
            return []
        return [(node.line, "needs 'after', the wait since the previous step, e.g. after: 2d")]
    problems = []
    if "after" in given:
        problems.append((given["after"].line, "the first step is sent when the rule fires, so it takes no 'after'"
                         " (to wait before it, give the rule a 'delay')"))
    if "unless" in given:
        # nothing is awaited before the first step, so there is nothing for its `unless` to cancel
        problems.append((given["unless"].line, "the first step has no wait for 'unless' to watch:"
                         " put 'unless' (with 'within') on the rule instead"))
    return problems


_RULE_TABLE: Table = {
    "type": ("type", one_of("rule type", RULE_TYPES)),
    "on": ("on", events),
    "if": ("condition", _condition),
    "unless": ("unless", _rule_unless),
    "delay": ("delay", duration),
    "steps": ("steps", _steps),
    "inactive": ("inactive", duration),
    "of": ("inactive_of", events),
    "every": ("every", one_of("'every' value", ("year", "month"))),
    "date": ("date", _profile_date),
    "at": ("at", clock),
    "then": ("then", _action),
    "cooldown": ("cooldown", duration),
    "priority": ("priority", whole_number),
    "control_group": ("control_group", share),
    "quiet_hours": ("quiet_hours", one_of("quiet_hours mode", ("defer", "drop"))),
    "attribution_window": ("attribution_window", duration),
}
_RULE_KEYS = ("id", *_RULE_TABLE)
_RECURRING_ONLY = ("every", "date", "at")
# a journey's own keys, and the rule keys it shares; its sends and waits are in its steps
_JOURNEY_TABLE: Table = {key: _RULE_TABLE[key] for key in (
    "type", "on", "if", "cooldown", "priority", "control_group", "quiet_hours", "attribution_window")}
_JOURNEY_KEYS = ("id", *_JOURNEY_TABLE, *JOURNEY_KEYS)
_JOURNEY_READERS = {"action": _action, "condition": _condition, "condition_line": _condition_line, "match": _match}


def rule(scope: Scope, node: Node) -> tuple[str | None, Rule | None]:
    """(id, rule): the id even when the rule is invalid, so duplicates are still found."""
    if not node.is_map:
        scope.error(node.line, f"a rule is a mapping starting with '- id: …', not {describe(node.value)}")
        return None, None
    rule_id = _rule_id(scope, node)
    scope = scope.for_rule(rule_id)
    type_node = node.value.get("type")
    if type_node is not None and type_node.value == RuleType.JOURNEY:
        return rule_id, _journey_rule(scope, node, rule_id)
    mark = scope.mark()
    present = check_keys(scope, node, _RULE_KEYS)
    fields = read_fields(scope, node, _RULE_TABLE)
    if "type" not in present:
        scope.error(node.line, f"missing 'type': {alternatives(RULE_TYPES)}")
    _check_rule_shape(scope, node.line, present, fields.get("type"))
    if scope.failed_since(mark) or rule_id is None:
        return rule_id, None
    if "condition" in fields:
        fields["condition_line"] = _condition_line(node.value["if"])
    fields["type"] = RuleType(fields["type"])
    return rule_id, Rule(id=rule_id, source=scope.source(node.line), **fields)


def _journey_rule(scope: Scope, node: Node, rule_id: str | None) -> Rule | None:
    """A `type: journey` rule: the rule keys it shares, read as a rule's, and its graph (engine.rules.journey_schema)."""
    mark = scope.mark()
    present = check_keys(scope, node, _JOURNEY_KEYS)
    fields = read_fields(scope, node, _JOURNEY_TABLE)
    if "on" not in present:
        scope.error(node.line, "a journey needs 'on', the event type that enters a customer into it")
    plan = journey(scope, node, _JOURNEY_READERS)
    if scope.failed_since(mark) or rule_id is None or plan is None:
        return None
    if "condition" in fields:
        fields["condition_line"] = _condition_line(node.value["if"])
    fields["type"] = RuleType.JOURNEY
    return Rule(id=rule_id, source=scope.source(node.line), journey=plan, **fields)


def _rule_id(scope: Scope, node: Node) -> str | None:
    if "id" not in node.value:
        scope.error(node.line, "a rule needs an 'id', e.g. id: cart-abandoned")
        return None
    rule_id = read(scope, node, "id", text)
    if rule_id is not None and not _RULE_ID.fullmatch(rule_id):
        scope.for_rule(rule_id).error(
            node.value["id"].line, "a rule id uses letters, digits, '_', '.' and '-', starting with a letter or digit"
        )
    return rule_id


def _rule_shape_problems(present: set[str], rule_type: str | None) -> list[str]:
    """What is wrong with the combination of keys, judged by which keys are given.

    Judging by presence (not by valid values) keeps one mistake from causing two errors.
    """
    has = present.__contains__
    problems = []
    if not has("then") and not has("steps"):
        problems.append("needs 'then' (what to send) or 'steps' (a series of sends)")
    if has("then") and has("steps"):
        problems.append("has both 'then' and 'steps': move the action into the first step")
    if has("delay") and has("unless"):
        problems.append("'delay' and 'unless' exclude each other: 'unless.within' is already the wait")
    if has("inactive") and has("on"):
        problems.append("'inactive' fires when no event arrives at all, so it takes no 'on'"
                        " (to wait for the absence of some types only, write 'of: [purchase]')")
    if has("of") and not has("inactive"):
        problems.append("'of' names the event types an 'inactive' wait counts from: it goes only with 'inactive'")
    if has("inactive") and (has("unless") or has("delay")):
        problems.append("'inactive' is already a wait: it takes no 'unless' or 'delay'")
    if rule_type in ("transactional", "behavioral") and not has("on") and not has("inactive"):
        problems.append(f"a {rule_type} rule needs 'on', the event type that starts it")
    if rule_type == "threshold" and not has("if") and not has("inactive"):
        problems.append("a threshold rule needs 'if' (it fires when the condition turns true) or 'inactive'")
    if rule_type == "recurring":
        problems += _recurring_problems(present)
    elif rule_type is not None:
        problems += [f"'{key}' is only for recurring rules" for key in _RECURRING_ONLY if has(key)]
    return problems


def _recurring_problems(present: set[str]) -> list[str]:
    # a recurring rule is started by the calendar, not by an event, so nothing waits on one
    problems = [f"a recurring rule needs '{key}'" for key in ("every", "date") if key not in present]
    not_allowed = [key for key in ("on", "unless", "delay", "inactive", "of") if key in present]
    if not_allowed:
        quoted = [f"'{key}'" for key in not_allowed]
        problems.append(f"a recurring rule is started by its date, so it takes no {alternatives(quoted)}")
    return problems


def _check_rule_shape(scope: Scope, line: int, present: set[str], rule_type: str | None) -> None:
    for problem in _rule_shape_problems(present, rule_type):
        scope.error(line, problem)


# --------------------------------------------------------------------------- policy


_CAP_TABLE: Table = {"channel": ("channel", string), "max": ("max", positive_int), "per": ("per", duration)}
_CAP_EXAMPLE = "{channel: email, max: 3, per: 7d}"
_QUIET_TABLE: Table = {
    "from": ("start", clock),
    "to": ("end", clock),
    "mode": ("mode", one_of("quiet_hours mode", ("defer", "drop"))),
}
_QUIET_EXAMPLE = '{from: "21:00", to: "08:00", mode: defer}'


def _frequency_caps(scope: Scope, key: str, node: Node) -> tuple[FrequencyCap, ...] | None:
    if not isinstance(node.value, list):
        scope.error(node.line, f"'{key}' must be a list of caps, each like {_CAP_EXAMPLE}")
        return None
    caps = []
    for item in node.value:
        fields = read_mapping(scope, item, "frequency_caps", _CAP_EXAMPLE, _CAP_TABLE, ("channel", "max", "per"))
        caps.append(None if fields is None else FrequencyCap(source=scope.source(item.line), **fields))
    return None if None in caps else tuple(caps)  # type: ignore[arg-type]


def _quiet_hours(scope: Scope, key: str, node: Node) -> QuietHours | None:
    """Without a `mode`, quiet hours defer: a deferred message is late, a dropped one is lost."""
    fields = read_mapping(scope, node, key, _QUIET_EXAMPLE, _QUIET_TABLE, ("from", "to"))
    if fields is None:
        return None
    if fields["start"] == fields["end"]:
        scope.error(node.line, "'from' and 'to' are the same time, so the quiet hours are empty")
        return None
    fields.setdefault("mode", "defer")
    return QuietHours(source=scope.source(node.line), **fields)


_ATTRIBUTION_TABLE: Table = {
    "window": ("window", duration),
    "responses": ("responses", events),
    "conversions": ("conversions", events),
    "revenue": ("revenue", text),
}
_ATTRIBUTION_EXAMPLE = "{window: 7d, responses: [email_opened, email_clicked], conversions: [purchase], revenue: amount}"


def _attribution(scope: Scope, key: str, node: Node) -> Attribution | None:
    fields = read_mapping(scope, node, key, _ATTRIBUTION_EXAMPLE, _ATTRIBUTION_TABLE, ())
    return None if fields is None else Attribution(**fields)


def _responses_by_channel(scope: Scope, key: str, node: Node) -> dict[str, tuple[str, ...]] | None:
    example = "{email: [email_opened, email_clicked], push: [push_opened]}"
    if not node.is_map or not node.value:
        scope.error(node.line, f"'{key}' must be a mapping of channels to their response events, like {example}")
        return None
    out = {}
    for channel, value in node.value.items():
        if channel == BEST:
            scope.error(node.key_lines[channel], f"'{BEST}' is what `channel: best` chooses, not a channel")
            return None
        types = events(scope, f"{key}.{channel}", value)
        if types is None:
            return None
        out[channel] = types
    seen: dict[str, str] = {}
    for channel, types in out.items():
        for t in types:
            if t in seen:
                scope.error(node.key_lines[channel], f"'{key}': '{t}' is a response of both '{seen[t]}' and"
                            f" '{channel}': an event belongs to one channel")
                return None
            seen[t] = channel
    return out


_SEND_TIME_TABLE: Table = {"within": ("within", duration), "min_responses": ("min_responses", positive_int),
                           "half_life": ("half_life", duration)}


def _send_time(scope: Scope, key: str, node: Node) -> SendTime | None:
    fields = read_mapping(scope, node, key, "{within: 24h, min_responses: 3, half_life: 30d}", _SEND_TIME_TABLE, ())
    return None if fields is None else SendTime(**fields)


_POLICY_TABLE: Table = {
    "frequency_caps": ("frequency_caps", _frequency_caps),
    "quiet_hours": ("quiet_hours", _quiet_hours),
    "consent": ("consent", one_of("consent", ("required", "optional"))),
    "control_group": ("control_group", share),
    "control_group_salt": ("control_group_salt", text),
    "attribution": ("attribution", _attribution),
    "responses_by_channel": ("responses_by_channel", _responses_by_channel),
    "send_time": ("send_time", _send_time),
}


def _section(scope: Scope, line: int, node: Node, table: Table, not_a_map: str, make: Any) -> Any:
    """A top-level section read through its table: `make(source=…, **fields)`, or None."""
    if not node.is_map:
        scope.error(node.line, not_a_map)
        return None
    mark = scope.mark()
    check_keys(scope, node, table)
    fields = read_fields(scope, node, table)
    return None if scope.failed_since(mark) else make(source=scope.source(line), **fields)


def policy(scope: Scope, line: int, node: Node) -> Policy | None:
    """The `policy:` section at `line`; its errors read "policy: …"."""
    return _section(scope.within("policy: "), line, node, _POLICY_TABLE,
                    f"must be a mapping with {alternatives(_POLICY_TABLE)}", Policy)


MAX_LATENESS_MS = 24 * 3_600_000   # events held back for ordering live in memory: a day is plenty


def _lateness(scope: Scope, key: str, node: Node) -> int | None:
    if node.value in (0, "0"):
        return 0
    value = duration(scope, key, node)
    if value is not None and value > MAX_LATENESS_MS:
        scope.error(node.line, f"'{key}' may be at most {format_duration(MAX_LATENESS_MS)}, not "
                    f"{format_duration(value)}: every event is held back that long before it is applied")
        return None
    return value


_TIME_TABLE: Table = {"lateness": ("lateness", _lateness)}


def time_settings(scope: Scope, line: int, node: Node) -> TimeSettings | None:
    """The `time:` section at `line` (SPEC §6); its errors read "time: …"."""
    return _section(scope.within("time: "), line, node, _TIME_TABLE,
                    f"must be a mapping like {{lateness: 2m}}, not {describe(node.value)}", TimeSettings)
