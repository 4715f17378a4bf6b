"""What `triggers` tells an operator about itself (issue 16): its version, the rules' content
hash, each command's exit status in its --help and in the README, `-` as stdin."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import _parser, main
from engine.rules.digest import rules_digest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "sample-events.jsonl"


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _help(command: str) -> str:
    res = subprocess.run([sys.executable, "-m", "engine.cli", command, "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _exit_codes(text: str) -> dict[int, str]:
    """The `exit status:` block of a help text: code -> its words, continuation lines joined."""
    block = text.split("exit status:\n", 1)[1]
    codes: dict[int, str] = {}
    last = None
    for line in block.splitlines():
        m = re.match(r"  (\d+) +(.*)", line)
        if m:
            last = int(m.group(1))
            codes[last] = m.group(2)
        elif line.startswith("       ") and last is not None:
            codes[last] += " " + line.strip()
        else:
            break
    return codes


def test_version_names_the_package_and_its_libraries():
    from importlib.metadata import version

    res = subprocess.run([sys.executable, "-m", "engine.cli", "--version"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and res.stderr == ""
    line = res.stdout.strip()
    assert line.startswith(f"triggers {version('trigger-engine')} (Python ")
    assert f"bytewax {version('bytewax')}" in line and f"confluent-kafka {version('confluent-kafka')}" in line
    from importlib.machinery import EXTENSION_SUFFIXES

    import engine.core.evaluate as core  # the same tree's core, as this process loaded it

    compiled = core.__file__ is not None and core.__file__.endswith(tuple(EXTENSION_SUFFIXES))
    assert ("compiled core" if compiled else "pure-Python core") in line


def test_every_command_lists_its_exit_status_in_help():
    commands = _commands()
    assert {"validate", "backtest", "run", "produce", "report", "diff", "explain", "resend", "repartition"} <= set(commands)
    for name in commands:
        codes = _exit_codes(_help(name))
        assert {0, 2, 141} <= set(codes), (name, codes)
        assert all(text for text in codes.values()), (name, codes)


def test_the_readme_lists_each_commands_exit_status_as_its_help_does():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Exit status\n", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `triggers (\w+)` \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    assert set(rows) == set(_commands())
    for name, row in rows.items():
        documented = {int(c) for c in re.findall(r"\*\*(\d+)\*\*", row)}
        assert documented == set(_exit_codes(_help(name))) - {141}, (name, row)


def test_the_rules_hash_is_of_the_content_alone(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(ROOT / "rules", a)
    shutil.copytree(ROOT / "rules", b)
    assert rules_digest(a) == rules_digest(b) == rules_digest(ROOT / "rules")   # not the path, not mtimes
    assert re.fullmatch(r"sha256:[0-9a-f]{12}", rules_digest(a))
    (b / "notes.txt").write_text("not a rules file")
    assert rules_digest(b) == rules_digest(a)                                   # what the loader reads only
    first = sorted(b.glob("*.yaml"))[0]
    first.write_text(first.read_text() + "# a comment\n")
    assert rules_digest(b) != rules_digest(a)
    first.rename(b / ("z-" + first.name))
    assert rules_digest(b) != rules_digest(a)


def test_validate_prints_the_hash(capsys):
    assert main(["validate", str(ROOT / "rules")]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"; {rules_digest(ROOT / 'rules')})")


def test_report_reads_a_summary_from_stdin(tmp_path):
    summary = tmp_path / "s.json"
    assert main(["backtest", "--rules", str(ROOT / "rules"), "--events", str(SAMPLE), "--out", str(tmp_path / "t"),
                 "--summary", str(summary), "--quiet", "--no-progress"]) == 0
    from_file = subprocess.run([sys.executable, "-m", "engine.cli", "report", str(summary), "--json"], cwd=ROOT,
                               capture_output=True, timeout=60)
    from_stdin = subprocess.run([sys.executable, "-m", "engine.cli", "report", "-", "--json"], cwd=ROOT,
                                input=summary.read_bytes(), capture_output=True, timeout=60)
    assert from_stdin.returncode == 0, from_stdin.stderr.decode()
    assert from_stdin.stdout == from_file.stdout and b'"rule_id"' in from_stdin.stdout
    bad = subprocess.run([sys.executable, "-m", "engine.cli", "report", "-"], cwd=ROOT, input=b"{", capture_output=True,
                         timeout=60)
    assert bad.returncode == 2 and bad.stderr.decode().startswith("triggers report: cannot read <stdin>: ")


@pytest.mark.parametrize("command", [
    ["--version"],
    ["validate", "rules"],
    ["report", "{summary}"],
    ["explain", "--rules", "rules", "--events", "examples/sample-events.jsonl", "--customer", "c-31"],
])
def test_a_reader_gone_before_any_output_stops_any_command_quietly(tmp_path, command):
    """`triggers ... | head` whose reader is gone before the first write (small outputs are
    written at exit, `--version` while the arguments are parsed): no traceback, the SIGPIPE status."""
    summary = tmp_path / "s.json"
    summary.write_bytes(subprocess.run(
        [sys.executable, "-m", "engine.cli", "backtest", "--rules", "rules", "--events", str(SAMPLE), "--out",
         str(tmp_path / "t"), "--summary", "/dev/stdout", "--quiet", "--no-progress"], cwd=ROOT, capture_output=True,
        timeout=60, check=True).stdout)
    argv = [a.format(summary=summary) for a in command]
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert err == b"" and proc.returncode == 141, err.decode()[-2000:]


def test_resend_reads_dead_letters_from_stdin(tmp_path):
    """`grep c-1029 webhook-dead-letters.jsonl | triggers resend - --sink file`: through a real
    file sink, the triggers piped in are delivered, and a line that holds none is named."""
    import msgspec

    from engine.operators.outbox import SinkDeadLetter
    from engine.state.outbox import ItemKind

    out = tmp_path / "t.jsonl"
    assert main(["backtest", "--rules", str(ROOT / "rules"), "--events", str(SAMPLE), "--out", str(out), "--quiet",
                 "--no-progress"]) == 0
    triggers = [line for line in out.read_bytes().splitlines() if b'"status":"sent"' in line][:3]
    letters = b"".join(msgspec.json.encode(SinkDeadLetter("file", "refused", 1, "2026-01-01T00:00:00Z", "p-0", i,
                                                          ItemKind.TRIGGER, msgspec.Raw(t))) + b"\n"
                       for i, t in enumerate(triggers))
    delivered = tmp_path / "delivered.jsonl"
    config = tmp_path / "c.toml"
    config.write_text(f'[sinks.file]\npath = "{delivered}"\n')
    res = subprocess.run([sys.executable, "-m", "engine.cli", "resend", "-", "--sink", "file", "--config", str(config)],
                         cwd=ROOT, input=letters + b"not json\n", capture_output=True, timeout=60)
    assert res.returncode == 1, res.stderr.decode()                        # a line held no trigger
    assert res.stderr.decode().startswith("<stdin>:4: not a dead letter: ")
    assert res.stdout.decode().startswith("<stdin>: 3 of 3 triggers delivered through sink file")
    assert delivered.read_bytes().splitlines() == triggers


def test_progress_without_a_size_counts_events_and_shows_no_share():
    """stdin has no size (`--events -`): the progress line counts events, it makes up no percentage."""
    import io

    from engine.offline.progress import Progress

    unknown, known = io.StringIO(), io.StringIO()
    for stream, size in ((unknown, 0), (known, 1000)):
        bar = Progress(size, "produce", stream=stream, after_s=0)
        bar.update(500, 1234)
    assert unknown.getvalue().startswith("produce: 1,234 events ") and "%" not in unknown.getvalue()
    assert known.getvalue().startswith("produce: 50% 1,234 events ")
