"""`decode_jsonl`: the one batch-decode loop over an event file that the offline tools share."""

from __future__ import annotations

from engine.events.decode import EventDecoder, decode_jsonl, read_jsonl

GOOD = '{"event_id":"e%d","type":"page_view","customer_id":"c%d","ts":"2026-01-01T10:00:00Z"}'


def write(tmp_path, lines):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_batches_keep_every_line_once_in_order(tmp_path):
    lines = [GOOD % (i, i % 3) for i in range(7)]
    lines[2] = "not json"
    lines.insert(4, "")                      # blank lines count for line numbers, not as events
    path = write(tmp_path, lines)
    batches = list(decode_jsonl(path, batch_size=3))
    assert [len(b.events) + len(b.dead) for b in batches] == [3, 3, 1]
    assert [e.event_id for b in batches for e in b.events] == ["e0", "e1", "e3", "e4", "e5", "e6"]
    (dead,) = [d for b in batches for d in b.dead]
    assert dead.source == f"{path}:3"
    whole = EventDecoder().decode_batch(read_jsonl(path))
    assert [e.event_id for e in whole[0]] == [e.event_id for b in batches for e in b.events]


def test_size_counts_the_bytes_read(tmp_path):
    lines = [GOOD % (i, i) for i in range(5)]
    path = write(tmp_path, lines)
    assert sum(b.size for b in decode_jsonl(path, batch_size=2)) == path.stat().st_size


def test_stopping_early_decodes_no_further(tmp_path):
    path = write(tmp_path, [GOOD % (i, i) for i in range(10)])
    seen = []
    for batch in decode_jsonl(path, batch_size=4):
        seen += batch.events
        break
    assert len(seen) == 4


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    assert list(decode_jsonl(path)) == []
