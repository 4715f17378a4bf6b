"""The typed form of a rules directory (SPEC §3), as the loader produces it after validation.

Durations are milliseconds; every struct carries the `file` and `line` it came from so later
stages (compiler, expression errors, reports) can point at the source.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec


class RuleType(StrEnum):
    """A rule's `type:` family, as written in the YAML (how it fires is its `Kind`, engine.rules.kinds)."""

    THRESHOLD = "threshold"
    TRANSACTIONAL = "transactional"
    BEHAVIORAL = "behavioral"
    RECURRING = "recurring"
    JOURNEY = "journey"


RULE_TYPES = tuple(RuleType)
AGGREGATE_KINDS = ("sum", "count", "last", "decayed_count")
ANY_EVENT = "*"


class Source(msgspec.Struct, frozen=True):
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class Aggregate(msgspec.Struct, frozen=True):
    """A per-customer value kept in the state and readable by name in `if:` expressions.

    kind `sum`: sum of `properties[field]` over events `on`, optionally over a sliding `window`.
    kind `count`: number of events `on`, optionally over a sliding `window`.
    kind `last`: the latest `properties[field]` (or the event time when `field == "ts"`).
    sum / count with `by`: one value per value of the property `by` (the most recent keys kept).
    kind `decayed_count`: per `by` value (e.g. category) a count that halves every `half_life`.
    `where`: an `if:`-language expression over the event and the profile; only events for which
    it holds update the aggregate (it may not read aggregates: their order of update is no contract).
    """

    name: str
    kind: str
    on: tuple[str, ...]            # event types; ("*",) means every event
    source: Source
    field: str | None = None       # sum/last: the property read; "ts" for the event time
    window: int | None = None      # ms; sum/count only
    by: str | None = None          # decayed_count, count, sum: the property that names the bucket
    half_life: int | None = None   # ms; decayed_count only
    where: str | None = None       # expression source; None: every event `on` counts
    where_line: int = 0


class Unless(msgspec.Struct, frozen=True):
    """Absence: the rule (or journey step) is cancelled when one of `events` arrives in time.

    `within` bounds the wait for a rule-level `unless`; in a journey step the wait is the
    step's `after`. `match` values are templates over the cause event, e.g. `"{event.coupon}"`.
    """

    events: tuple[str, ...]
    source: Source
    within: int | None = None
    match: dict[str, str] = {}


class Action(msgspec.Struct, frozen=True):
    action: str
    channel: str                   # the first (or only) channel
    source: Source
    payload: dict[str, Any] = {}   # values may be templates: "{event.sku}", "{profile.name}", "{lifetime_spend}"
    channels: tuple[str, ...] = ()   # `channel: [push, sms]`: the fallback list, first choice first; (): one channel
    send_time: str | None = None   # "best": deferred to the customer's best hour (SPEC §3b); None: at once
    send_time_holdout: float = 0.0   # `send_time: {best, holdout: 10%}`: a share of customers sent at once (an experiment)


class Step(msgspec.Struct, frozen=True):
    """One step of a multi-step series; `after` counts from the previous step's send time."""

    then: Action
    source: Source
    after: int = 0                 # ms
    unless: Unless | None = None
    condition: str | None = None   # `if:` checked when the step is due
    condition_line: int = 0


class StepKind(StrEnum):
    """What a journey step does (SPEC §3a); the values are what explain and the funnel show."""

    SEND = "send"              # `then`: send, then go to `next`
    DELAY = "delay"            # `wait: 2d`: a plain delay, then `next`
    WAIT = "wait"              # `wait: {event, match, within}`: `yes` when the event came in time, else `no`
    CONDITION = "condition"    # `if: EXPR`: `yes` or `no`, at once
    SPLIT = "split"            # `split: {a: 50%, b: 50%}`: a deterministic share of customers to each


class Reenter(StrEnum):
    """When an entry event may start the journey again for a customer who walked it before."""

    AFTER_END = "after_end"    # once the previous walk ended (default)
    NEVER = "never"            # once per customer, ever
    RESTART = "restart"        # at once: a new entry ends the walk in progress and starts over
    AFTER = "after"            # `reenter: 30d`: once the previous walk ended and 30d passed since its entry


END = "end"   # the target that ends the journey


class JourneyStep(msgspec.Struct, frozen=True):
    """One step of a journey. Targets are step ids or `END`; None: the following step (`END` after the last)."""

    id: str
    kind: StepKind
    source: Source
    then: Action | None = None         # SEND
    next: str | None = None            # SEND, DELAY
    wait: int = 0                      # ms: DELAY's delay, WAIT's `within`
    wait_for: Unless | None = None     # WAIT: the awaited event types and `match` (templates over the entry event)
    yes: str | None = None             # WAIT, CONDITION
    no: str | None = None
    condition: str | None = None       # CONDITION: expression source
    condition_line: int = 0
    split: tuple[tuple[str, float], ...] = ()   # SPLIT: (target, share 0..1), shares summing to 1
    target_lines: dict[str, int] = {}  # YAML key (next, yes, no, split target) -> its line, for graph errors


class Journey(msgspec.Struct, frozen=True):
    """A `type: journey` rule's graph and its entry and exit settings (SPEC §3a)."""

    steps: tuple[JourneyStep, ...]
    exit_on: tuple[str, ...] = ()
    reenter: Reenter = Reenter.AFTER_END
    reenter_after: int = 0             # ms, for Reenter.AFTER
    continue_if_suppressed: bool = False   # `if_suppressed: continue` (default `end`)


class Rule(msgspec.Struct, frozen=True):
    id: str
    type: RuleType
    source: Source
    on: tuple[str, ...] = ()       # event types that start or evaluate the rule
    condition: str | None = None   # `if:` expression source
    condition_line: int = 0
    unless: Unless | None = None
    delay: int | None = None       # ms
    steps: tuple[Step, ...] = ()
    inactive: int | None = None    # ms without any event (of `inactive_of`, when given)
    inactive_of: tuple[str, ...] = ()   # YAML `of`: the event types whose absence counts; (): any
    every: str | None = None       # recurring: "year" or "month"
    date: str | None = None        # recurring: "profile.<attr>" holding a date (YYYY-MM-DD or RFC 3339)
    at: tuple[int, int] = (0, 0)   # recurring: local (hour, minute) in profile.timezone
    then: Action | None = None     # None only when `steps` is given
    cooldown: int | None = None    # ms; a re-fire inside it is suppressed with reason "cooldown"
    priority: int = 0              # higher wins when several rules fire for a customer at once
    control_group: float | None = None   # per-rule holdout share 0..1, overrides the policy's
    quiet_hours: str | None = None       # per-rule quiet-hours mode override: "defer" or "drop"
    attribution_window: int | None = None   # ms; overrides the policy's attribution window
    journey: Journey | None = None       # `type: journey` only


class FrequencyCap(msgspec.Struct, frozen=True):
    channel: str                   # a channel name or "*" for all channels together
    max: int
    per: int                       # ms
    source: Source


class QuietHours(msgspec.Struct, frozen=True):
    start: tuple[int, int]         # local (hour, minute), YAML key `from`
    end: tuple[int, int]           # YAML key `to`
    mode: str                      # "defer" or "drop"
    source: Source


class Attribution(msgspec.Struct, frozen=True):
    """Which events that follow a trigger count as its response and its conversion."""

    window: int = 7 * 86_400_000                 # ms after the trigger
    responses: tuple[str, ...] = ("email_opened", "email_clicked", "push_opened")
    conversions: tuple[str, ...] = ("purchase",)
    revenue: str = "amount"                      # the conversion event's property holding revenue


BEST = "best"   # `channel: best`, `send_time: best` (SPEC §3b)


class SendTime(msgspec.Struct, frozen=True):
    """`policy.send_time` (SPEC §3b): how each customer's best hour is learned and how long a send waits for it."""

    within: int = 24 * 3_600_000       # ms a send may wait for the best hour
    min_responses: int = 3             # fewer responses on the channel (counted): the population's best hour
    half_life: int = 30 * 86_400_000   # ms; older responses (and sends) count less


class Policy(msgspec.Struct, frozen=True):
    source: Source
    frequency_caps: tuple[FrequencyCap, ...] = ()
    quiet_hours: QuietHours | None = None
    consent: str = "optional"      # "required" or "optional"
    control_group: float = 0.0     # share 0..1 held out globally
    control_group_salt: str = ""
    attribution: Attribution = Attribution()
    responses_by_channel: dict[str, tuple[str, ...]] = {}   # channel -> its response event types (SPEC §3b)
    send_time: SendTime = SendTime()


class TimeSettings(msgspec.Struct, frozen=True):
    """The `time:` section (SPEC §6): how far behind the newest event an event may arrive and
    still be applied in event-time order (ms; 0: events are taken in arrival order)."""

    source: Source
    lateness: int = 0


class RuleSet(msgspec.Struct, frozen=True):
    """Everything in one rules directory, merged across its files and validated."""

    aggregates: dict[str, Aggregate]
    rules: tuple[Rule, ...]
    policy: Policy | None = None
    files: tuple[str, ...] = ()
    time: TimeSettings | None = None
    digest: str = ""   # `sha256:…` of the files' names and bytes as the loader read them (engine.rules.digest)

    @property
    def lateness(self) -> int:
        return self.time.lateness if self.time is not None else 0


class LeftOut(msgspec.Struct, frozen=True):
    """What a reading of a rules directory left out of its `RuleSet` for an error of its own:
    compiling the rest must not report a use of it as a second error (engine.rules.check)."""

    aggregates: frozenset[str] = frozenset()   # declared, but the declaration has an error
    policy: bool = False                        # a policy section was declared, and has an error


NOTHING_LEFT_OUT = LeftOut()
