"""JSONL file sink: what a backtest writes can be read back unchanged."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from connectors.file import FileSink, FileSinkConfig
from engine.actions.trigger import SENT, SUPPRESSED, Trigger, trigger_id
from engine.events.decode import DeadLetter, read_jsonl


def _trigger(n: int, status: str = SENT, reason: str | None = None) -> Trigger:
    return Trigger(
        trigger_id=trigger_id("cart-abandoned", f"c-{n}", f"e-{n}"),
        rule_id="cart-abandoned",
        customer_id=f"c-{n}",
        action="cart-reminder",
        channel="email",
        status=status,
        reason=reason,
        fired_at="2026-11-20T14:33:11.250Z",
        cause_event_id=f"e-{n}",
        payload={"sku": "A-77", "value": 129.8},
    )


def test_triggers_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "triggers.jsonl"
    batch1 = [_trigger(1), _trigger(2, SUPPRESSED, "no_consent")]
    batch2 = [_trigger(3)]
    with FileSink(FileSinkConfig(path=str(out))) as sink:
        sink.write_batch(batch1)
        sink.write_batch([])
        sink.write_batch(batch2)
    decoder = msgspec.json.Decoder(Trigger)
    back = [decoder.decode(line) for line, _ in read_jsonl(out)]
    assert back == batch1 + batch2
    assert out.read_bytes().count(b"\n") == 3
    # SPEC §4: `reason` is always present, null when sent
    assert b'"reason":null' in out.read_bytes().splitlines()[0]


def test_dead_letters_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "dead.jsonl"
    dead = [
        DeadLetter("missing field 'customer_id'", "events.jsonl:17", '{"event_id": "e"}'),
        DeadLetter("not JSON: x", "kafka customer-events/3@1234", "é\ufffd\nline break inside"),
    ]
    with FileSink(FileSinkConfig(path=str(out))) as sink:
        sink.write_batch(dead)
    decoder = msgspec.json.Decoder(DeadLetter)
    assert [decoder.decode(line) for line, _ in read_jsonl(out)] == dead


def test_open_truncates_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "triggers.jsonl"
    out.write_text("old content\n" * 10)
    with FileSink(FileSinkConfig(path=str(out))) as sink:
        sink.write_batch([_trigger(1)])
    assert out.read_bytes().count(b"\n") == 1
    assert b"old content" not in out.read_bytes()


def test_flush_makes_written_lines_visible(tmp_path: Path) -> None:
    out = tmp_path / "t.jsonl"
    sink = FileSink(FileSinkConfig(path=str(out)))
    sink.write_batch([_trigger(1)])
    sink.flush()
    assert out.read_bytes().count(b"\n") == 1
    sink.close()
    sink.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        sink.write_batch([_trigger(2)])


def test_dash_writes_to_stdout(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    with FileSink(FileSinkConfig(path="-")) as sink:
        sink.write_batch([_trigger(1)])
    captured = capfdbinary.readouterr().out
    assert msgspec.json.decode(captured.strip(), type=Trigger) == _trigger(1)


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"path": "x", "apend": True}, FileSinkConfig)


def test_config_append_defaults_to_false() -> None:
    assert msgspec.convert({"path": "x"}, FileSinkConfig).append is False
    assert msgspec.convert({"path": "x", "append": True}, FileSinkConfig).append is True


def test_append_keeps_what_a_previous_run_wrote(tmp_path: Path) -> None:
    out = tmp_path / "triggers.jsonl"
    with FileSink(FileSinkConfig(path=str(out), append=True)) as sink:  # a new file is created
        sink.write_batch([_trigger(1), _trigger(2)])
    with FileSink(FileSinkConfig(path=str(out), append=True)) as sink:  # the restarted run
        sink.write_batch([_trigger(3)])
    decoder = msgspec.json.Decoder(Trigger)
    assert [decoder.decode(line) for line, _ in read_jsonl(out)] == [_trigger(1), _trigger(2), _trigger(3)]


def test_append_after_a_torn_last_line_keeps_new_lines_whole(tmp_path: Path) -> None:
    out = tmp_path / "triggers.jsonl"
    whole = msgspec.json.encode(_trigger(1)) + b"\n"
    out.write_bytes(whole + msgspec.json.encode(_trigger(2))[:40])  # killed mid-write
    with FileSink(FileSinkConfig(path=str(out), append=True)) as sink:
        sink.write_batch([_trigger(3)])
    lines = out.read_bytes().splitlines()
    assert len(lines) == 3
    assert msgspec.json.decode(lines[0], type=Trigger) == _trigger(1)
    with pytest.raises(msgspec.DecodeError):  # the torn line stays one bad line ...
        msgspec.json.decode(lines[1], type=Trigger)
    assert msgspec.json.decode(lines[2], type=Trigger) == _trigger(3)  # ... not glued to the next


def test_dash_with_stream_writes_there(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    import sys

    dead = DeadLetter("not JSON: x", "events.jsonl:3", "{")
    print("progress line", file=sys.stderr)
    with FileSink(FileSinkConfig(path="-"), stream=sys.stderr) as sink:
        sink.write_batch([dead])
    captured = capfdbinary.readouterr()
    assert captured.out == b""
    lines = captured.err.splitlines()
    assert lines[0] == b"progress line"  # text printed before stays before
    assert msgspec.json.decode(lines[1], type=DeadLetter) == dead


def test_dash_with_text_only_stream() -> None:
    import io

    buf = io.StringIO()
    with FileSink(FileSinkConfig(path="-"), stream=buf) as sink:
        sink.write_batch([_trigger(1), _trigger(2)])
    assert [msgspec.json.decode(line, type=Trigger) for line in buf.getvalue().splitlines()] == [_trigger(1), _trigger(2)]
    assert not buf.closed


FULL_DISK = r'''
import resource, signal, sys
import msgspec
from connectors.file import FileSink, FileSinkConfig
from engine.actions.trigger import Status, Trigger

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails with EFBIG instead
path, how = sys.argv[1], sys.argv[2]
items = [Trigger(f"t{n}", "r", f"c{n}", "a", "email", Status.SENT, None, "2026-01-01T00:00:00.000Z", f"e{n}")
         for n in range(3)]
sink = FileSink(FileSinkConfig(path=path, append=True))
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (200, hard))   # "the disk is full": nothing past 200 bytes
for _ in range(6):   # the relay's retries while the disk stays full
    if how == "deliver":
        assert sink.deliver(items), "the write should fail"
    else:
        try:
            sink.write_durably(items)
            raise SystemExit("the write should fail")
        except OSError:
            pass
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))   # room again
if how == "deliver":
    assert sink.deliver(items) == []
else:
    sink.write_durably(items)
sink.close()
print(" ".join(msgspec.json.decode(line)["trigger_id"] for line in open(path, "rb")))
'''


@pytest.mark.parametrize("how", ["deliver", "write_durably"])   # a file sink's relay; a relay's dead-letter file
def test_a_full_disk_leaves_the_batch_once_after_its_retries(tmp_path: Path, how: str) -> None:
    """Found in review: a failed write left its bytes in the file object's buffer, and every
    retry added the batch again, all written once the disk had room: 18 lines for 3 triggers
    (a dead-letter file: `triggers resend` sent each refused trigger 7 times). The disk is full
    for real here (a file size limit, in a child process)."""
    import subprocess
    import sys

    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"trigger_id":"before"}\n')
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(path), how], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["before", "t0", "t1", "t2"]
