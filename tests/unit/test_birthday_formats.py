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


def test_the_backtest_summary_counts_customers_whose_birthday_is_no_date(tmp_path) -> None:
    """Issue 16: an unusable `profile.birthday` ("15.03.1990") silently kept a customer's birthday
    rule from ever firing; the summary now says how many customers have one, once per customer."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    lines = (root / "examples" / "sample-events.jsonl").read_text().splitlines()
    bad = [f'{{"event_id":"bad-{i}-{j}","type":"identify","customer_id":"c-bad-{i}","ts":"2026-01-0{j}T10:00:00Z",'
           f'"properties":{{"birthday":"{value}"}}}}'
           for i, value in enumerate(["15.03.1990", "1990-02-29", "03/15/1990"]) for j in (1, 2)]
    good = '{"event_id":"ok-1","type":"identify","customer_id":"c-ok","ts":"2026-01-01T10:00:00Z",' \
           '"properties":{"birthday":"1990-03-15"}}'
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(bad + [good] + lines) + "\n")
    run = subprocess.run([sys.executable, "-m", "engine.cli", "backtest", "--rules", "rules", "--events", str(events),
                          "--out", str(tmp_path / "t.jsonl"), "--dead-letters", str(tmp_path / "d.jsonl"),
                          "--no-progress", "--summary", str(tmp_path / "s.json")],
                         cwd=root, capture_output=True, text=True, check=True)
    assert "note: 3 customers' profile.birthday is not a usable date" in run.stdout + run.stderr
    import json
    assert json.loads((tmp_path / "s.json").read_text())["unusable_dates"] == {"birthday": 3}
