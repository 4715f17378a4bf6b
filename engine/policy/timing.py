"""The best hour and the best channel per customer (SPEC §3b), from their engagement
(engine.state.engagement) and, for customers with too few responses, the population's.

`Timing` answers two questions for the contact policy:
- `best_hour(state, channel, at)`: the local hour to send in, and why (the customer's own
  histogram, or the population's; None: no data at all, send at once);
- `best_channel(state, eligible, at)`: among the channels the customer may be contacted on, the
  one with the highest decayed response rate, once at least two of them have 3 sends each.

The population's hour in force on a UTC day is computed from the responses of the days before
the previous one (up to 30 of them), once per channel and day: it never depends on the order in
which the events of the current day arrive, so every backtest of the same events agrees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.policy.outcomes import TimingScore
from engine.rules.model import Policy
from engine.state.customer import CustomerState
from engine.state.engagement import ChannelStats, local_hour, peek, read, record_response, record_send

if TYPE_CHECKING:
    from engine.policy.contact import Candidate

DAY_MS = 86_400_000
POPULATION_DAYS = 30      # the days of responses the population's hour is computed from
MIN_SENDS = 3             # `channel: best` compares channels with at least this many (decayed) sends


class ChannelChoice:
    """How `channel: best` chose (the decision detail of its send, for explain and the evaluation)."""

    __slots__ = ("learned", "eligible")

    def __init__(self, learned: bool, eligible: list[str]) -> None:
        self.learned = learned      # by response rates; False: too few sends, the first eligible
        self.eligible = eligible    # the channels the customer could be contacted on, in the policy's order

    @property
    def default(self) -> str:
        """The channel sending without a choice would have used."""
        return self.eligible[0]


class HourChoice:
    """A best hour and where it came from, for the policy's decision detail and explain."""

    __slots__ = ("hour", "basis", "responses", "hours")

    def __init__(self, hour: int, basis: str, responses: int, hours: tuple[float, ...]) -> None:
        self.hour = hour
        self.basis = basis          # "customer" or "population"
        self.responses = responses  # the customer's responses on the channel (counted, not decayed)
        self.hours = hours          # the histogram it came from (the customer's stored bytes, or the population's)

    @property
    def top(self) -> list[tuple[int, float]]:
        return ChannelStats(list(self.hours)).top_hours()


def hour_words(choice: HourChoice) -> str:
    """Why that hour, for explain: whose histogram, and its top hours with their shares."""
    total = sum(choice.hours) or 1.0
    top = ", ".join(f"{h:02d}:00 {100 * v / total:.0f}%" for h, v in choice.top)
    if choice.basis == "customer":
        return (f"{choice.hour:02d}:00 local, the customer's most frequent response hour ({choice.responses}"
                f" responses; top hours {top})")
    return (f"{choice.hour:02d}:00 local, the population's best hour (the customer has {choice.responses}"
            f" responses, too few; the population's top hours {top})")


RESPONSE_WINDOW = 7 * DAY_MS


class _Pick:
    __slots__ = ("rule", "channel", "default", "first", "hour", "hour_at_once")

    def __init__(self, rule: str, channel: str, default: str, first: int, hour: int, hour_at_once: int) -> None:
        self.rule, self.channel, self.default, self.first = rule, channel, default, first
        self.hour, self.hour_at_once = hour, hour_at_once


class TimingEvaluation:
    """Collects the picks of a backtest and scores them against each customer's next response."""

    def __init__(self) -> None:
        self.scores: dict[str, TimingScore] = {}
        self._open: dict[str, list[_Pick]] = {}

    def picked(self, customer_id: str, pick: _Pick) -> None:
        score = self.scores.get(pick.rule)
        if score is None:
            score = self.scores[pick.rule] = TimingScore()
        score.sends += 1
        self._open.setdefault(customer_id, []).append(pick)

    def responded(self, customer_id: str, channel: str, ts: int, hour: int) -> None:
        picks = self._open.get(customer_id)
        if not picks:
            return
        keep = []
        for p in picks:
            if ts <= p.first:
                keep.append(p)
                continue
            if ts - p.first > RESPONSE_WINDOW:
                continue   # no response in time: counted in `sends` only
            s = self.scores[p.rule]
            s.responded += 1
            s.channel_hits += channel == p.channel
            s.channel_hits_default += channel == p.default
            if channel == p.channel:
                s.hour_hits += hour == p.hour
                s.hour_hits_at_once += hour == p.hour_at_once
        if keep:
            self._open[customer_id] = keep
        else:
            del self._open[customer_id]


class Population:
    """Responses per channel, UTC day and local hour, over all customers; the hour in force per
    channel and day.

    The hour in force on day D comes from days D-1-POPULATION_DAYS .. D-2, decayed: it needs
    only days every part of the input has passed, so it never depends on the order the events
    of the current day (or of the day before) arrive in.

    A backtest records into `counts` directly (one clock: every earlier day is complete). Live
    (`shared`), each partition only sees its own customers: what it records waits in `pending`
    until its next commit writes it to the store, and `counts` holds the days every partition has
    passed (`final_before`), read back from the store summed over all partitions
    (`engine.operators.population`). A day is not final until then, and a value that needs one
    is taken from the last day that is; the partition worker holds its events and deadlines back
    so that this only happens when a partition is a day behind for longer than `MAX_HELD` events."""

    def __init__(self, shared: bool = False) -> None:
        self.shared = shared
        self.counts: dict[tuple[str, int], list[int]] = {}    # (channel, day) -> 24 counts
        self.pending: dict[tuple[str, int], list[int]] = {}   # live: recorded since the last commit
        self.final_before: int | None = None   # live: days before it are complete in `counts`
        self._best: dict[tuple[str, int], tuple[int, tuple[float, ...]] | None] = {}

    def record(self, channel: str, day: int, hour: int) -> None:
        into = self.pending if self.shared else self.counts
        counts = into.get((channel, day))
        if counts is None:
            counts = into[channel, day] = [0] * 24
        counts[hour] += 1

    def take_pending(self) -> dict[tuple[str, int], list[int]]:
        pending, self.pending = self.pending, {}
        return pending

    def add_final(self, counts: dict[tuple[str, int], list[int]], final_before: int) -> None:
        """Live: the days before `final_before` are complete; `counts` are those not had yet."""
        for key, hours in counts.items():
            self.counts[key] = hours
        self.final_before = final_before

    def best(self, channel: str, day: int, half_life_days: float) -> tuple[int, tuple[float, ...]] | None:
        """The hour in force on `day` (and the decayed histogram it came from); None: no data."""
        final = self.final_before
        if self.shared and (final is None or day - 2 >= final):
            if final is None:
                return None
            day = final + 1   # the latest day whose value is known everywhere
        key = (channel, day)
        if key in self._best:
            return self._best[key]
        total = [0.0] * 24
        for d in range(day - 1 - POPULATION_DAYS, day - 1):
            counts = self.counts.get((channel, d))
            if counts is not None:
                weight = 0.5 ** ((day - d) / half_life_days)
                for h, n in enumerate(counts):
                    total[h] += n * weight
        found = None
        if any(total):
            stats = ChannelStats(total)
            found = (stats.best_hour(), tuple(total))
        self._best[key] = found
        return found


class Timing:
    def __init__(self, policy: Policy | None, population: Population | None = None) -> None:
        self.channels = list(policy.responses_by_channel) if policy is not None else []
        self.index = {c: i for i, c in enumerate(self.channels)}
        self.by_type = {t: i for i, c in enumerate(self.channels)
                        for t in (policy.responses_by_channel[c] if policy is not None else ())}
        send_time = policy.send_time if policy is not None else None
        self.half_life = send_time.half_life if send_time is not None else 30 * DAY_MS
        self.within = send_time.within if send_time is not None else DAY_MS
        self.min_responses = send_time.min_responses if send_time is not None else 3
        self.population = population if population is not None else Population()
        self.evaluation: TimingEvaluation | None = None   # a backtest's scores of the picks; None live

    def response(self, state: CustomerState, customer_id: str, channel: int, ts: int, hour: int,
                 late: bool = False) -> None:
        """A response event on `channel` at `ts`, in the customer's local `hour`; `late`: it
        arrived behind the frontier (`engine.core.session`)."""
        state.engagement = record_response(state.engagement, channel, hour, ts, self.half_life)
        if not late:   # a late response teaches the customer, not the population (its day may be final)
            self.population.record(self.channels[channel], ts // DAY_MS, hour)
        if self.evaluation is not None:
            self.evaluation.responded(customer_id, self.channels[channel], ts, hour)

    def picked(self, state: CustomerState, customer_id: str, c: Candidate, channel: str, detail: Any) -> None:
        """A send that chose its hour or channel: scored against the customer's next response."""
        assert self.evaluation is not None
        tz = state.profile.get("timezone")
        default = detail.default if isinstance(detail, ChannelChoice) else channel
        first = c.first_at or c.at
        self.evaluation.picked(customer_id, _Pick(c.rule.id, channel, default, first, local_hour(c.at, tz),
                                                  local_hour(first, tz)))

    def sent(self, state: CustomerState, channel: str, ts: int) -> None:
        index = self.index.get(channel)
        if index is not None:
            state.engagement = record_send(state.engagement, index, ts, self.half_life)

    def best_hour(self, state: CustomerState, channel: str, at: int) -> HourChoice | None:
        index = self.index.get(channel)
        if index is None:
            return None
        own = peek(state.engagement, index) if state.engagement else None
        responses = own[0] if own is not None else 0
        if own is not None and responses >= self.min_responses:
            hours = own[1]
            return HourChoice(max(range(24), key=lambda h: (hours[h], -h)), "customer", responses, hours)
        found = self.population.best(channel, at // DAY_MS, self.half_life / DAY_MS)
        if found is None:
            return None
        return HourChoice(found[0], "population", responses, found[1])

    def rates(self, state: CustomerState, at: int) -> dict[str, tuple[float, float]]:
        """Channel -> (decayed responses, decayed sends)."""
        stats = read(state.engagement, at, self.half_life) if state.engagement else {}
        return {c: (stats[i].responses, stats[i].sends) for i, c in enumerate(self.channels) if i in stats}

    def best_channel(self, state: CustomerState, eligible: list[str], at: int) -> tuple[str, bool]:
        """(channel, learned): the eligible channel with the best response rate when at least two
        have `MIN_SENDS` sends; else the first eligible (`learned` False)."""
        rates = self.rates(state, at)
        known = [(c, rates[c]) for c in eligible if c in rates and rates[c][1] >= MIN_SENDS - 1e-9]
        if len(known) < 2:
            return eligible[0], False
        best = max(known, key=lambda x: (x[1][0] / x[1][1], -eligible.index(x[0])))
        return best[0], True


__all__ = ["ChannelChoice", "HourChoice", "Population", "Timing", "TimingEvaluation", "TimingScore", "hour_words"]
