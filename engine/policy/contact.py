"""The contact policy (SPEC §1, §3 `policy:`): which fired triggers are sent, held out or
suppressed, decided per customer and moment, in the pure core so that backtest and live
agree.

Checks, in order, for the candidates of one moment (highest `priority` first; ties by rule
id, then series step, so the outcome never depends on evaluation order):

1. consent for the channel (`required`: an opt-in is needed; `optional` or no policy: only an
   opt-out suppresses) -> `no_consent`
2. the rule's cooldown since its last contact -> `cooldown`
3. priority: once a candidate of the moment won, the others -> `priority`
4. quiet hours in the customer's zone: `drop` -> `quiet_hours_dropped`; `defer` -> sent later,
   at the end of the quiet hours, through a deadline (checked again then, quiet hours aside)
5. frequency caps per channel and across channels (`*`) over a rolling window -> `frequency_cap`
6. control group: a deterministic share of customers (per rule, or global) -> `held_out`

A held-out trigger counts as a contact for cooldowns and caps, so the control group lives
under the same pacing as the contacted group and the lift compares like with like.

Each `Decision` carries the fact that decided it (`detail`: the consent record, the previous
contact, the winner, the cap reached, the control group, the time zone of quiet hours); the
evaluator tells it to an observer (engine.core.observe) with the trigger it became.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Any

import msgspec

from engine.actions.trigger import HELD_OUT, SENT, SUPPRESSED, Status
from engine.core.calendar import quiet_until
from engine.policy.timing import ChannelChoice, HourChoice, Population, Timing
from engine.rules.kinds import CompiledAction, CompiledRule
from engine.rules.model import BEST, FrequencyCap, Policy
from engine.state.customer import Contact, CustomerState
from engine.state.engagement import next_hour_start


class Reason(StrEnum):
    """Why the policy suppressed a trigger; the values are the wire format (a trigger's `reason`)."""

    NO_CONSENT = "no_consent"
    COOLDOWN = "cooldown"
    PRIORITY = "priority"
    QUIET_HOURS_DROPPED = "quiet_hours_dropped"
    FREQUENCY_CAP = "frequency_cap"


class Deferral(StrEnum):
    """Not a trigger status: the candidate is decided again when quiet hours end."""

    DEFERRED = "deferred"


DEFERRED = Deferral.DEFERRED
NO_CONSENT = Reason.NO_CONSENT
COOLDOWN = Reason.COOLDOWN
PRIORITY = Reason.PRIORITY
QUIET_HOURS_DROPPED = Reason.QUIET_HOURS_DROPPED
FREQUENCY_CAP = Reason.FREQUENCY_CAP


class Candidate(msgspec.Struct, eq=False):
    """A trigger a rule fired, before the policy decided what becomes of it (compared by identity)."""

    rule: CompiledRule
    step: int
    action: CompiledAction
    cause: str
    cause_event_id: str
    at: int
    payload: dict[str, Any]
    cause_ts: int   # epoch ms of the cause (part of the trigger id)
    step_id: str | None = None     # a journey's send: its step id (the trigger's `step`)
    held_out: bool | None = None   # a journey's send: the control group drawn at entry; None: draw now
    first_at: int = 0              # a deferred send: when it was first due (0: `at`)

    def order(self) -> tuple[int, str, int]:
        return (-self.rule.policy.priority, self.rule.id, self.step)


class Decision:
    """What the policy made of a candidate, with the fact that decided it in `detail`:

    - `no_consent`: the channel's recorded `Consent`, or None (none recorded);
    - `cooldown`: the epoch ms of the rule's last contact;
    - `priority`: the `Candidate` that won the moment;
    - `quiet_hours_dropped` and DEFERRED by quiet hours: the customer's time zone then (None: UTC);
    - DEFERRED by `send_time: best`: the `HourChoice` (engine.policy.timing);
    - `frequency_cap`: the `FrequencyCap` reached;
    - HELD_OUT: (share, "rule" or "global"), the control group the customer is in;
    - SENT: the `ChannelChoice` of a `channel: best` send; None otherwise.

    Recorded as the policy decides (no extra work: each is a value it already holds), so an
    explanation is told the detail instead of rebuilding it from the triggers afterwards.
    """

    __slots__ = ("candidate", "status", "reason", "until", "detail", "channel")

    def __init__(self, candidate: Candidate, status: Status | Deferral, reason: Reason | None = None, until: int = 0,
                 detail: Any = None, channel: str | None = None) -> None:
        self.candidate = candidate
        self.status = status
        self.reason = reason
        self.until = until   # DEFERRED: epoch ms when quiet hours end
        self.detail = detail
        self.channel = channel or candidate.action.channel   # the one used: a fallback list's first possible


def draw(customer_id: str, scope: str, salt: str) -> float:
    """A customer's deterministic place in [0, 1) for one scope: the same customer, scope and salt
    always give the same number, on any machine and in any run (a hash, not a random draw)."""
    digest = hashlib.blake2b(f"{salt}\x1f{scope}\x1f{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def at_once(customer_id: str, rule_id: str, salt: str, share: float) -> bool:
    """In the rule's timing experiment arm that is sent at once (`send_time: {best, holdout: …}`),
    drawn apart from the control group."""
    return share > 0 and draw(customer_id, f"{rule_id}\x1fsend_time", salt) < share


def in_control_group(customer_id: str, scope: str, salt: str, share: float) -> bool:
    """Deterministic holdout: a share of customers per scope (`draw`)."""
    return share > 0 and draw(customer_id, scope, salt) < share


class ContactPolicy:
    def __init__(self, policy: Policy | None, population: Population | None = None) -> None:
        self.policy = policy
        self.consent_required = policy is not None and policy.consent == "required"
        self.caps = policy.frequency_caps if policy is not None else ()
        self.cap_window = max((c.per for c in self.caps), default=0)
        self.quiet = policy.quiet_hours if policy is not None else None
        self.salt = policy.control_group_salt if policy is not None else ""
        self.global_share = policy.control_group if policy is not None else 0.0
        self.timing = Timing(policy, population)   # each customer's best hour and channel (SPEC §3b)

    def decide(self, state: CustomerState, customer_id: str, moment: list[Candidate],
               allow_defer: bool = True) -> list[Decision]:
        """Decide a moment's candidates and record the contacts in the state (cooldown, caps)."""
        if len(moment) > 1:
            moment.sort(key=Candidate.order)
        decisions = []
        winner: Candidate | None = None
        for c in moment:
            d = self._decide_one(state, customer_id, c, winner if self.policy is not None else None, allow_defer)
            if winner is None and d.status is not SUPPRESSED:
                winner = c
            if d.status is SENT or d.status is HELD_OUT:
                self._record(state, c, d.channel)
                if d.status is SENT:
                    self.timing.sent(state, d.channel, c.at)
                    if self.timing.evaluation is not None and (c.action.best_time or c.action.channel == BEST):
                        self.timing.picked(state, customer_id, c, d.channel, d.detail)
            decisions.append(d)
        return decisions

    def held_out(self, customer_id: str, rule: CompiledRule) -> bool:
        """Whether the customer is in the rule's control group (its own share, else the global one)."""
        share = rule.policy.control_group
        if share is None:
            return bool(self.global_share) and in_control_group(customer_id, "", self.salt, self.global_share)
        return in_control_group(customer_id, rule.id, self.salt, share)

    def _possible(self, state: CustomerState, channel: str, at: int) -> bool:
        """The customer may be contacted on the channel now: consent, and no cap reached."""
        consent = state.consent.get(channel)
        if (consent is None and self.consent_required) or (consent is not None and not consent.granted):
            return False
        return not (self.caps and self._cap_reached(state, channel, at) is not None)

    def _channel(self, state: CustomerState, c: Candidate) -> tuple[str, Any]:
        """(channel, detail). A fallback list: the first channel the customer may be contacted on.
        `channel: best`: of the policy's channels they may be contacted on, the best response rate
        (`Timing.best_channel`). None possible: the first, which the checks then suppress."""
        action = c.action
        if action.channel == BEST:
            options = self.timing.channels
            eligible = [ch for ch in options if self._possible(state, ch, c.at)]
            if not eligible:
                return (options[0] if options else BEST), None
            channel, learned = self.timing.best_channel(state, eligible, c.at)
            return channel, ChannelChoice(learned, eligible)
        for channel in action.channels:
            if self._possible(state, channel, c.at):
                return channel, None
        return action.channel, None

    def _best_time(self, state: CustomerState, customer_id: str, c: Candidate,
                   channel: str) -> tuple[int, HourChoice] | None:
        """`send_time: best`: when the customer's best hour next starts, if later than now and within
        `send_time.within`, and not inside quiet hours (they win: the send is then decided now).
        A customer in the rule's timing holdout (`send_time: {best, holdout: 10%}`) is sent at once."""
        if c.action.time_holdout and at_once(customer_id, c.rule.id, self.salt, c.action.time_holdout):
            return None
        choice = self.timing.best_hour(state, channel, c.at)
        if choice is None:
            return None
        tz = state.profile.get("timezone")
        due = next_hour_start(c.at, tz, choice.hour)
        if due <= c.at or due - c.at > self.timing.within:
            return None
        quiet = self.quiet
        if quiet is not None and quiet_until(due, tz, quiet.start, quiet.end) is not None:
            return None
        return due, choice

    def _decide_one(self, state: CustomerState, customer_id: str, c: Candidate, winner: Candidate | None,
                    allow_defer: bool) -> Decision:
        """`winner`: the candidate that already won the moment, if any (the others lose on priority)."""
        action = c.action
        chosen = None
        channel = action.channel
        if action.channels or channel == BEST:
            channel, chosen = self._channel(state, c)
        consent = state.consent.get(channel)
        if (consent is None and self.consent_required) or (consent is not None and not consent.granted):
            return Decision(c, SUPPRESSED, NO_CONSENT, detail=consent, channel=channel)
        rule = c.rule
        own = rule.policy
        if own.cooldown:
            last = state.last_contact.get(rule.id)
            # a journey's sends of one walk do not cool each other down: only an earlier walk's do
            if last is not None and c.at - last < own.cooldown and (c.step_id is None or last < c.cause_ts):
                return Decision(c, SUPPRESSED, COOLDOWN, detail=last, channel=channel)
        if winner is not None:
            return Decision(c, SUPPRESSED, PRIORITY, detail=winner, channel=channel)
        if action.best_time and allow_defer:
            best = self._best_time(state, customer_id, c, channel)
            if best is not None:
                return Decision(c, DEFERRED, None, best[0], detail=best[1], channel=channel)
        quiet = self.quiet
        if quiet is not None and allow_defer:
            tz = state.profile.get("timezone")
            until = quiet_until(c.at, tz, quiet.start, quiet.end)
            if until is not None:
                if (own.quiet_hours or quiet.mode) == "drop":
                    return Decision(c, SUPPRESSED, QUIET_HOURS_DROPPED, detail=tz, channel=channel)
                return Decision(c, DEFERRED, None, until, detail=tz, channel=channel)
        if self.caps:
            cap = self._cap_reached(state, channel, c.at)
            if cap is not None:
                return Decision(c, SUPPRESSED, FREQUENCY_CAP, detail=cap, channel=channel)
        share = own.control_group
        scope = rule.id
        if share is None:
            share, scope = self.global_share, ""
        # a journey's customers were drawn once, at entry (`held_out`): a walk is held out all along
        held = in_control_group(customer_id, scope, self.salt, share) if c.held_out is None else c.held_out
        if held:
            return Decision(c, HELD_OUT, detail=(share, "rule" if scope else "global"), channel=channel)
        return Decision(c, SENT, detail=chosen, channel=channel)

    def _cap_reached(self, state: CustomerState, channel: str, at: int) -> FrequencyCap | None:
        """The first cap (in file order) the channel has reached over its window, if any."""
        for cap in self.caps:
            since = at - cap.per
            every = cap.channel == "*"
            if not every and cap.channel != channel:
                continue
            n = sum(1 for x in state.contacts if x.at > since and (every or x.channel == channel))
            if n >= cap.max:
                return cap
        return None

    def _record(self, state: CustomerState, c: Candidate, channel: str) -> None:
        state.last_contact[c.rule.id] = c.at
        if self.caps:
            since = c.at - self.cap_window
            contacts = [x for x in state.contacts if x.at > since]
            contacts.append(Contact(c.at, channel))
            state.contacts = contacts
