"""The date formats README ("Dates of recurring rules") promises for `profile.birthday`: each
example there reads as documented (so the docs and `engine.core.calendar.parse_date` agree)."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from engine.core.calendar import parse_date

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
SECTION = README[README.index("**Dates of recurring rules**"):].split("\n\n")[0]
MARCH_15 = date(1990, 3, 15)


@pytest.mark.parametrize(("value", "expected"), [
    ("1990-03-15", MARCH_15), ("1990-03-15T23:30:00-05:00", MARCH_15), ("1990-W11-4", MARCH_15),
    ("1990-03-15 and more", MARCH_15),
    ("15.03.1990", None), ("03/15/1990", None), ("1990/03/15", None), ("1990-3-15", None), ("19900315", None),
    ("--03-15", None), ("1990-02-29", None), (637459200000, None), (None, None),
])
def test_the_documented_birthday_formats(value, expected) -> None:
    assert parse_date(value) == expected
    if isinstance(value, str) and value != "1990-03-15 and more":
        assert f'`"{value}"`' in SECTION, f"{value!r} is not among README's examples"


def test_every_quoted_example_in_the_section_is_tested() -> None:
    quoted = set(re.findall(r'`"([^"`]+)"`', SECTION))
    assert quoted <= {"1990-03-15", "1990-03-15T23:30:00-05:00", "1990-W11-4", "15.03.1990", "03/15/1990",
                      "1990/03/15", "1990-3-15", "19900315", "--03-15", "1990-02-29"}, quoted
