"""Decoding in a reader process (engine.events.ahead) gives exactly what decoding inline gives:
the same events, dead letters and sizes, batch for batch, whatever the lines hold."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from engine.events import ahead
from engine.events.ahead import decode_jsonl_ahead, worth_a_reader
from engine.events.decode import decode_jsonl

HOSTILE = [
    b'{"event_id":"big","type":"purchase","customer_id":"c-1","ts":"2026-03-02T06:00:00Z",'
    b'"properties":{"n":123456789012345678901234567890}}',   # beyond 64 bits: msgpack cannot carry it
    b'{"event_id":"sur","type":"view","customer_id":"c-2","ts":"2026-03-02T06:00:00Z","properties":{"x":"\\ud800"}}',
    b'not json',
    b'{"event_id":"ok","type":"view","customer_id":"c-3","ts":1767225600000,"properties":{"a":[1,2.5,null,true]}}',
    b'[1,2]',
]


@pytest.fixture
def always(monkeypatch):
    """The reader process for any file, however small (it needs two CPUs and fork)."""
    monkeypatch.setattr(ahead, "MIN_BYTES", 0)
    if not worth_a_reader(__file__):
        pytest.skip("one CPU, or no fork: the reader is never used here")


def batches(path: Path, size: int, reader: bool) -> list:
    it = decode_jsonl_ahead(path, size) if reader else decode_jsonl(path, size)
    return [(b.events, b.dead, b.size) for b in it]


def test_real_data_and_hostile_lines_decode_alike_in_the_reader(always, shared_data, tmp_path):
    lines = (shared_data / "online-retail-orders.jsonl").read_bytes().splitlines()[:3000]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines[:1000] + HOSTILE + lines[1000:] + HOSTILE) + b"\n")
    inline, read = batches(path, 700, False), batches(path, 700, True)
    assert read == inline
    assert sum(len(d) for _, d, _ in read) == 6   # the lone surrogate, 'not json' and '[1,2]', twice
    assert any(e.event_id == "big" for b in read for e in b[0])   # taken by the raw-lines path


def test_an_early_stop_ends_the_reader(always, shared_data):
    before = set(multiprocessing.active_children())
    it = decode_jsonl_ahead(shared_data / "rees46-clickstream-sample.jsonl", 100)
    assert len(next(it).events) == 100
    it.close()
    assert set(multiprocessing.active_children()) == before


def test_a_missing_file_fails_as_it_does_inline(always, tmp_path):
    with pytest.raises(FileNotFoundError):
        next(decode_jsonl(tmp_path / "nope.jsonl"))
    with pytest.raises(FileNotFoundError):
        next(decode_jsonl_ahead(tmp_path / "nope.jsonl", 10))


def test_a_backtest_from_stdin_reads_through_the_reader_and_matches_the_file(shared_data, tmp_path):
    events = shared_data / "rees46-clickstream-sample.jsonl"
    common = [sys.executable, "-m", "engine.cli", "backtest", "--rules", "rules", "--no-progress", "--quiet",
              "--dead-letters", str(tmp_path / "dead.jsonl")]
    root = Path(__file__).resolve().parents[2]
    subprocess.run([*common, "--events", str(events), "--out", str(tmp_path / "file.jsonl")], cwd=root, check=True)
    with open(events, "rb") as stdin:
        subprocess.run([*common, "--events", "-", "--out", str(tmp_path / "stdin.jsonl")], cwd=root, check=True,
                       stdin=stdin)
    assert (tmp_path / "stdin.jsonl").read_bytes() == (tmp_path / "file.jsonl").read_bytes()
    assert (tmp_path / "file.jsonl").stat().st_size > 0


def test_an_early_stop_ends_the_reader_even_under_a_sigterm_handler(shared_data):
    """Review of issue 15: the reader held its own copy of the pipe's read end, so a stop relied on
    terminate(), which a parent's SIGTERM handler (a live run installs one) turned into a no-op:
    the reader blocked on the full pipe and join() never returned. In a subprocess, so that the old
    behaviour fails by timeout instead of hanging the suite."""
    script = f"""
import signal, sys, multiprocessing
signal.signal(signal.SIGTERM, lambda *a: None)
from engine.events import ahead
ahead.MIN_BYTES = 0
it = ahead.decode_jsonl_ahead({str(shared_data / "online-retail-orders.jsonl")!r}, 50)
next(it)
it.close()
assert not multiprocessing.active_children(), multiprocessing.active_children()
print("stopped")
"""
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and "stopped" in run.stdout, run.stderr
