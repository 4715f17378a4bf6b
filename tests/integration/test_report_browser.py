"""The backtest's HTML report in a real browser: a backtest of the bundled rules over the sample
events, rendered by headless Chromium (installed by scripts/chromium.sh when missing).

Never skipped: when Chromium cannot be installed or started the test fails with the script's or
the browser's output, so CI cannot go green without having looked at the page.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import zlib
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from engine.actions.trigger import Trigger
from engine.offline.backtest import BacktestSummary, backtest_file
from engine.offline.report_html import STATUS_COLOURS, ReportCollector, write_report
from engine.rules.compiler import load_and_compile

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_SH = REPO_ROOT / "scripts" / "chromium.sh"
WIDTH, HEIGHT = 1400, 3000

# Offline and quiet: no first-run UI, no background requests, no GPU (containers have none).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium binary, installed through scripts/chromium.sh (apt) when missing."""
    try:
        result = subprocess.run(["bash", str(CHROMIUM_SH)], stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=1200)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`scripts/chromium.sh` did not finish in {exc.timeout}s:\n{exc.stderr or ''}", pytrace=False)
    path = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    if result.returncode != 0 or not os.access(path, os.X_OK):
        pytest.fail(f"`scripts/chromium.sh` could not provide Chromium (exit {result.returncode}); the HTML "
                    f"report's browser test needs it:\n{result.stderr}{result.stdout}", pytrace=False)
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BacktestSummary, ReportCollector]:
    """A real report: the bundled rules over the sample events, triggers to a list and the collector."""
    collector = ReportCollector()
    triggers: list[Trigger] = []

    def emit(batch: list[Trigger]) -> None:
        triggers.extend(batch)
        collector.add(batch)

    rules = load_and_compile(str(REPO_ROOT / "rules"))
    events = REPO_ROOT / "examples" / "sample-events.jsonl"
    summary = backtest_file(rules, events, emit, lambda dead: None, progress=False)
    assert triggers and collector.triggers == len(triggers) == summary.triggers
    path = tmp_path_factory.mktemp("report") / "report.html"
    write_report(path, collector, summary, "Backtest: bundled rules", "rules/", "examples/sample-events.jsonl")
    return path, summary, collector


def run_chromium(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / "profile"
    profile.mkdir(exist_ok=True)
    try:
        result = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"chromium did not finish in {exc.timeout}s: {args}\n{exc.stderr or ''}", pytrace=False)
    assert result.returncode == 0, f"chromium failed (exit {result.returncode}) on {args}:\n{result.stderr}"
    return result


def console_errors(stderr: str) -> list[str]:
    """Console messages and uncaught errors from the page (the report has no script: there must be none)."""
    return [line for line in stderr.splitlines()
            if ":CONSOLE" in line or "Uncaught" in line]


class SvgCharts(HTMLParser):
    """Every <svg> of the DOM with its class and the sizes of the rects and paths drawn in it."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: list[dict[str, object]] = []
        self._open: dict[str, object] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "svg":
            self._open = {"class": a.get("class") or "", "label": a.get("aria-label") or "", "rects": [], "texts": 0,
                          "groups": []}
            self.charts.append(self._open)
        elif self._open is not None and tag == "g":
            self._open["groups"].append(a.get("class") or "")
        elif self._open is not None and tag == "rect":
            self._open["rects"].append((float(a.get("width") or 0), float(a.get("height") or 0)))
        elif self._open is not None and tag == "text":
            self._open["texts"] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._open = None


def test_dom_has_a_drawn_chart_per_rule_and_no_console_errors(chromium, report, tmp_path):
    path, summary, collector = report
    result = run_chromium(chromium, tmp_path, "--dump-dom", path.as_uri())
    dom = result.stdout
    assert "</html>" in dom and "Backtest: bundled rules" in dom, dom[:2000]
    assert not console_errors(result.stderr), console_errors(result.stderr)

    parser = SvgCharts()
    parser.feed(dom)
    fires = [c for c in parser.charts if c["class"] == "chart fires"]
    fired = {rule_id: o.sent + o.held_out + sum(o.suppressed.values()) for rule_id, o in summary.per_rule.items()}
    assert len(fires) == sum(1 for n in fired.values() if n) + 1   # one per rule that fired, and all rules together
    for rule_id, n in fired.items():
        assert rule_id in dom
        if not n:   # listed with its reason instead of an empty chart
            assert re.search(rf'<li id="rule-\d+"><code>{re.escape(rule_id)}</code>: [^<]+</li>', dom), rule_id
            continue
        chart = next(c for c in fires if str(c["label"]).startswith(f"{rule_id}:"))
        assert any(w > 0 and h > 0 for w, h in chart["rects"]), (rule_id, n, chart["rects"][:5])
        assert chart["texts"] >= 4   # count and date axis labels
    assert all(c["groups"].count("end-of-data") == 1 for c in fires), [c["label"] for c in fires]
    all_rules = fires[0]
    assert len([r for r in all_rules["rects"] if r[0] > 0 and r[1] > 0]) >= 50   # 60 days of fires (the data's; none after its end)
    reasons = [c for c in parser.charts if c["class"] == "chart reasons"]
    assert len(reasons) == 1 and any(w > 0 and h > 0 for w, h in reasons[0]["rects"])
    assert "Top payload values" in dom and "cart-abandoned" in dom
    hists = [c for c in parser.charts if c["class"] == "chart hist"]   # cart values: many, none common
    assert hists and all(any(w > 0 and h > 0 for w, h in c["rects"]) for c in hists)


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the RGB(A) rows of an 8-bit, non-interlaced PNG (what Chromium writes), in pure Python."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            header = data[pos + 8:pos + 8 + length]
        elif kind == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + length])
        pos += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, (depth, colour_type, interlace)
    return width, height, unfilter(zlib.decompress(b"".join(idat)), width, height, 3 if colour_type == 2 else 4)


def unfilter(raw: bytes, width: int, height: int, bpp: int) -> list[bytes]:
    """Undo PNG's per-row filters. Up rows (most of a screenshot) are added as one big integer,
    byte by byte without carries; the others byte by byte."""
    stride = width * bpp
    low7 = int.from_bytes(b"\x7f" * stride, "big")
    high1 = int.from_bytes(b"\x80" * stride, "big")
    rows: list[bytes] = []
    prev = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], raw[start + 1:start + 1 + stride]
        if kind == 0:
            cur = line
        elif kind == 2:
            a, b = int.from_bytes(line, "big"), int.from_bytes(prev, "big")
            cur = (((a & low7) + (b & low7)) ^ ((a ^ b) & high1)).to_bytes(stride, "big")
        else:
            out = bytearray(line)
            for i in range(stride):
                left = out[i - bpp] if i >= bpp else 0
                if kind == 1:
                    out[i] = (out[i] + left) & 0xFF
                elif kind == 3:
                    out[i] = (out[i] + ((left + prev[i]) >> 1)) & 0xFF
                else:
                    up, up_left = prev[i], (prev[i - bpp] if i >= bpp else 0)
                    p = left + up - up_left
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                    out[i] = (out[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else up_left)) & 0xFF
            cur = bytes(out)
        rows.append(cur)
        prev = cur
    return rows


def test_screenshot_shows_the_page_with_its_chart_colours(chromium, report, tmp_path):
    path, _, _ = report
    shot = tmp_path / "shot.png"
    result = run_chromium(chromium, tmp_path, f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}",
                          "--hide-scrollbars", path.as_uri())
    assert not console_errors(result.stderr), console_errors(result.stderr)
    assert shot.is_file(), f"no screenshot written:\n{result.stderr}"
    data = shot.read_bytes()
    assert len(data) > 20_000, f"screenshot only {len(data)} bytes: a blank page?"
    width, height, rows = png_pixels(data)
    assert (width, height) == (WIDTH, HEIGHT)
    bpp = len(rows[0]) // width
    colours = Counter(row[i:i + 3] for row in rows[::2] for i in range(0, len(row), 2 * bpp))   # every 4th pixel
    sampled = sum(colours.values())
    assert len(colours) > 50, f"only {len(colours)} colours: a flat image?"
    assert colours.most_common(1)[0][1] < 0.9 * sampled, colours.most_common(3)
    for name, colour in STATUS_COLOURS:   # the stacked bars are drawn in the status colours
        assert colours[bytes.fromhex(colour[1:])] >= 100, f"{name} ({colour}) hardly on screen"


MEASURE = """<script>
const overflow = [...document.querySelectorAll('.tablewrap, .card, section')]
  .filter(e => e.scrollWidth > e.clientWidth + 1)
  .map(e => (e.id || e.className) + ':' + e.scrollWidth + '>' + e.clientWidth);
document.body.setAttribute('data-page-width', document.documentElement.scrollWidth);
document.body.setAttribute('data-overflow', overflow.join(' '));
</script>"""


def test_nothing_overflows_horizontally_at_1400_px(chromium, report, tmp_path):
    """The tables fit a 1,400 px window: the page does not scroll sideways, nor does any table
    or card inside it. The report has no script; a copy gets one that writes the widths into the DOM."""
    path, _, _ = report
    measured = tmp_path / "measured.html"
    measured.write_text(path.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    result = run_chromium(chromium, tmp_path, f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars",
                          "--dump-dom", measured.as_uri())
    body = re.search(r'<body data-page-width="(\d+)" data-overflow="([^"]*)"', result.stdout)
    assert body is not None, result.stdout[:2000]
    assert int(body.group(1)) <= WIDTH and body.group(2) == "", body.groups()


def test_conversion_charts_draw_both_groups(chromium, report, tmp_path):
    """Conversion over time (issue 12): each chart draws the contacted and the control line."""
    path, summary, _ = report
    dom = run_chromium(chromium, tmp_path, "--dump-dom", path.as_uri()).stdout
    section = dom[dom.index('<section id="conversion">'):].split("</section>")[0]
    charts = section.split('class="chart conversion"')[1:]
    assert charts and summary.program is not None
    for chart in charts:
        svg = chart.split("</svg>")[0]
        assert svg.count("<circle") >= 2 and "<polyline" in svg and 'class="end-of-data"' in svg


def test_diff_report_renders_both_sides_and_fits_1400_px(chromium, tmp_path):
    """`triggers diff --report` (issue 12), checked in the browser like the backtest report."""
    import shutil

    from engine.offline.diff import diff_backtests
    from engine.offline.diff_report import write_diff_report

    new = tmp_path / "rules-sms"
    shutil.copytree(REPO_ROOT / "rules", new)
    text = (new / "transactional.yaml").read_text()
    (new / "transactional.yaml").write_text(text.replace("action: cart-reminder, channel: email",
                                                         "action: cart-reminder, channel: sms"))
    result = diff_backtests(REPO_ROOT / "rules", new, REPO_ROOT / "examples" / "sample-events.jsonl")
    assert result.old_backtest is not None and result.new_backtest is not None
    page = tmp_path / "diff.html"
    write_diff_report(page, result)
    measured = tmp_path / "measured.html"
    measured.write_text(page.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    run = run_chromium(chromium, tmp_path, f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars", "--dump-dom",
                       measured.as_uri())
    assert not console_errors(run.stderr), console_errors(run.stderr)
    body = re.search(r'<body data-page-width="(\d+)" data-overflow="([^"]*)"', run.stdout)
    assert body is not None, run.stdout[:2000]
    assert int(body.group(1)) <= WIDTH and body.group(2) == "", body.groups()
    row = run.stdout[run.stdout.index("<b>cart-abandoned</b>"):].split("</tr>")[0]
    assert "<b>email</b>" in row and "<b>sms</b>" in row and "inconclusive" in row
