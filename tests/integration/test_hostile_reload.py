"""Hostile rules files dropped into the watched rules directory of a running engine: each reload
is rejected at the file's line (logged at ERROR by "engine.rules"), the engine keeps running, and
the rules it had keep firing (SPEC §6)."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from datetime import timedelta

from bytewax.testing import run_main
from test_operations import ROOT, SAMPLE, paced_flow  # same directory (pytest puts it on sys.path)

from engine.events.decode import read_jsonl
from engine.rules import limits

PING = ("rules:\n  - id: view-ping\n    type: behavioral\n    on: product_view\n"
        "    then: {action: ping, channel: email}\n")
HOSTILE_RULE = "  - id: hostile\n    type: behavioral\n    on: product_view\n    then: {action: h, channel: email}\n"


def alias_bomb() -> tuple[str, int, str]:
    laughs = ["lol0: &lol0 lol"] + [
        f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * 9) + "]" for i in range(1, 10)]
    text = ("rules:\n  - id: hostile\n    type: behavioral\n    on: product_view\n"
            "    then:\n      action: h\n      channel: email\n      payload:\n"
            + "".join(f"        {laugh}\n" for laugh in laughs))
    size, total, level = 1, 20, 0   # the first list whose aliases take the file past MAX_VALUES values
    while total <= limits.MAX_VALUES:
        level += 1
        size = 1 + 9 * size
        total += size
    return text, 8 + level + 1, "alias *lol"


def deep_nesting() -> tuple[str, int, str]:
    return "rules:\n" + HOSTILE_RULE + "  - " + "[" * 5_000 + "]" * 5_000 + "\n", 6, "nests more than 64 levels"


def absurd_duration() -> tuple[str, int, str]:
    text = ("rules:\n  - id: hostile\n    type: threshold\n    inactive: 99999999999d\n"
            "    then: {action: h, channel: email}\n")
    return text, 4, "'inactive': bad duration '99999999999d': at most 3650d"


def bidi() -> tuple[str, int, str]:
    text = ("rules:\n  - id: hostile\n    type: behavioral\n    on: product_view\n"
            "    if: \"event.sku != 'x\u202e'\"\n    then: {action: h, channel: email}\n")   # fires, if accepted
    column = text.splitlines()[4].index("\u202e") + 1
    return text, 5, f"invisible character U+202E RIGHT-TO-LEFT OVERRIDE at column {column}: "


def large_file() -> tuple[str, int, str]:
    return "rules:\n" + HOSTILE_RULE + "# " + "x" * 60_000_000 + "\n", 1, "a rules file may have at most"


def drop(directory, name: str, text: str):
    """Puts the file in place at once, as a deployment would (a half-written file is another case)."""
    staged = directory.parent / (name + ".staged")
    staged.write_text(text)
    os.replace(staged, directory / name)
    return directory / name


def test_hostile_rules_dropped_into_a_running_engine_are_rejected_and_the_old_rules_keep_firing(
        redis_url, redis_client, tmp_path, caplog):
    rules_dir = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules_dir)
    (rules_dir / "ping.yaml").write_text(PING)
    lines = [raw for raw, _ in read_jsonl(SAMPLE)]
    out, dead = [], []
    flow = paced_flow(redis_url, rules_dir, lines, rate=400, out=out, dead=dead)
    caplog.set_level(logging.INFO, logger="engine")
    failures: list[BaseException] = []

    def run() -> None:
        try:
            run_main(flow, epoch_interval=timedelta(milliseconds=100))
        except BaseException as exc:  # the test reports it, instead of a thread dying quietly
            failures.append(exc)

    runner = threading.Thread(target=run)
    runner.start()

    def rejections() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "engine.rules" and r.levelno == logging.ERROR]

    took = {}
    try:
        time.sleep(1.5)
        for case in (alias_bomb, deep_nesting, absurd_duration, bidi, large_file):
            text, line, fragment = case()
            seen = len(rejections())
            dropped = time.monotonic()
            path = drop(rules_dir, "zz-hostile.yaml", text)
            while time.monotonic() - dropped < 10 and len(rejections()) == seen:
                time.sleep(0.02)
            rejected_at = time.monotonic()
            took[case.__name__] = rejected_at - dropped
            assert len(rejections()) == seen + 1, f"{case.__name__}: no rejection logged"
            message = rejections()[-1].getMessage()
            assert "rules reload rejected, the running rules stay (1 error(s))" in message
            assert f"{path}:{line}: " in message and fragment in message, message
            while time.monotonic() - rejected_at < 5 and not any(
                    t.rule_id == "view-ping" for at, t in out if at > rejected_at):
                time.sleep(0.02)
            assert any(t.rule_id == "view-ping" for at, t in out if at > rejected_at), f"{case.__name__}: rules stopped"
            assert runner.is_alive() and not failures
    finally:
        runner.join(timeout=120)
        (rules_dir / "zz-hostile.yaml").unlink(missing_ok=True)   # 60 MB
    assert not runner.is_alive() and not failures, failures
    assert not any(t.rule_id == "hostile" for _, t in out)
    assert not any(r.levelno >= logging.ERROR for r in caplog.records if r not in rejections())
    print("rejected after (s): " + ", ".join(f"{name} {seconds:.2f}" for name, seconds in took.items()))
