"""The per-rule counts a run adds up and a summary file carries (`triggers report` reads them
back): plain structs in a module of their own, outside the compiled core (setup.py), because
mypyc erases the class annotations msgspec decodes by (`dict[str, int]` becomes `dict`).
"""

from __future__ import annotations

import msgspec

__all__ = ["RuleOutcome", "TimingScore"]


class RuleOutcome(msgspec.Struct):
    """Per-rule counters: what the policy decided, and what the customers did afterwards."""

    sent: int = 0
    held_out: int = 0
    suppressed: dict[str, int] = {}     # reason -> count
    responded: int = 0                  # sent triggers followed by a response event
    converted: int = 0                  # sent triggers followed by a conversion
    revenue: float = 0.0
    held_out_responded: int = 0
    held_out_converted: int = 0
    held_out_revenue: float = 0.0

    def add(self, other: RuleOutcome) -> None:
        for f in ("sent", "held_out", "responded", "converted", "revenue", "held_out_responded",
                  "held_out_converted", "held_out_revenue"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        for reason, n in other.suppressed.items():
            self.suppressed[reason] = self.suppressed.get(reason, 0) + n


class TimingScore(msgspec.Struct):
    """Per rule (SPEC §3b): of its sends with `send_time: best` or `channel: best`, how often the
    chosen hour and channel held the customer's next response, against sending at once on the
    default channel. A response counts within `RESPONSE_WINDOW` of when the send was first due."""

    sends: int = 0              # sent triggers of the rule that chose an hour or a channel
    responded: int = 0          # of them, those followed by a response
    hour_hits: int = 0          # the next response on the channel came in the hour it was sent in
    hour_hits_at_once: int = 0  # ... in the hour it was first due in (sending at once)
    channel_hits: int = 0       # the next response came on the channel chosen
    channel_hits_default: int = 0   # ... on the default channel (the first the customer could get)
