"""The backtest's summary line says what its counts mean: "late" is explained where it is
counted, with the rules' allowed lateness (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cli import main

RULE = """rules:
  - id: view-ping
    type: behavioral
    on: page_view
    then: {action: ping, channel: email}
"""
# c3's view arrives after c2's, 30 minutes behind it in event time
EVENTS = "".join(
    f'{{"event_id":"e{i}","type":"page_view","customer_id":"c{i}","ts":"2026-01-01T{ts}:00Z"}}\n'
    for i, ts in ((1, "10:00"), (2, "11:00"), (3, "10:30"), (4, "11:05")))


@pytest.mark.parametrize(("lateness", "expected"), [
    ("", "4 events (0 dead letters, 0 duplicates, 1 late: arrived behind the newest event already read), "),
    ("time: {lateness: 10m}\n", "4 events (0 dead letters, 0 duplicates, 1 late: arrived more than 10m behind "
                                "the newest event already read), "),
    ("time: {lateness: 1h}\n", "4 events (0 dead letters, 0 duplicates, 0 late), "),
])
def test_the_summary_line_says_what_late_means(tmp_path: Path, capsys, lateness: str, expected: str) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "rules.yaml").write_text(lateness + RULE)
    (tmp_path / "events.jsonl").write_text(EVENTS)
    assert main(["backtest", "--rules", str(tmp_path / "rules"), "--events", str(tmp_path / "events.jsonl"),
                 "--out", str(tmp_path / "t.jsonl"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert expected in err
    assert ("note: late events are applied at once, out of time order" in err) == ("1 late" in expected)
