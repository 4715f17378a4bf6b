"""Numbers a rule computed, as a trigger's payload carries them: without binary float noise.

Amounts are summed as binary floats (README "Amounts"), so a lifetime spend of 1108.67 can be
held as 1108.6699999999998 and 2.55 × 6 is 15.299999999999999. The stored aggregate keeps its
full float (conditions compare it as before); what a payload shows is rounded when it is
rendered, to `PAYLOAD_DIGITS` significant digits: exact to the cent below ten billion, and
coarser than the noise of thousands of additions (each adds at most half a unit in the 16th).
"""

from __future__ import annotations

import math
from typing import Any

PAYLOAD_DIGITS = 12


def without_float_noise(value: Any) -> Any:
    """`value` with each finite float (in dicts and lists too: a `sum … by:` aggregate) rounded to
    `PAYLOAD_DIGITS` significant digits; anything else as it is."""
    kind = type(value)
    if kind is float:
        return float(f"{value:.{PAYLOAD_DIGITS}g}") if math.isfinite(value) else value
    if kind is dict:
        return {k: without_float_noise(v) for k, v in value.items()}
    if kind is list:
        return [without_float_noise(v) for v in value]
    return value
