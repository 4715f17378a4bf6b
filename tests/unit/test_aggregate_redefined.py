"""An aggregate redefined under the same name (a reload, or a restart with edited rules): the
values its earlier definition stored may have another shape. Read as the new definition's, every
later event of those customers failed (isolated, dead-lettered: the customer's state frozen for
good). Now a value that does not fit is dropped when the state is loaded or the rules change, and
the aggregate starts again from no events (`CompiledRules.conform`)."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.session import Session
from engine.core.times import parse_ts
from engine.events.decode import EventDecoder
from engine.events.model import Event
from engine.offline.backtest import Replay
from engine.rules.aggregates import value_fits
from engine.rules.compiler import CompiledRules, load_and_compile
from engine.state.customer import decode_state, encode_state
from engine.testing import InMemoryStore

ROOT = Path(__file__).resolve().parents[2]
T0 = parse_ts("2026-03-02T10:00:00Z")
HOUR = 3_600_000

# every shape a stored value can have, each declared under the one name `x`
DEFINITIONS = {
    "count": "{count: v}",
    "sum": "{sum: amount, on: v}",
    "windowed": "{count: v, window: 7d}",
    "windowed_sum": "{sum: amount, on: v, window: 1d}",
    "keyed": "{count: v, by: category}",
    "last_ts": "{last: ts, on: v}",
    "last_text": "{last: category, on: v}",
    "last_number": "{last: amount, on: v}",
    "decayed": "{decayed_count: v, by: category, half_life: 7d}",
}

RULE = """
rules:
  - id: on-purchase
    type: transactional
    on: purchase
    then: {action: thanks, channel: email}
"""


def rules_with(tmp_path: Path, name: str) -> CompiledRules:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    (folder / "rules.yaml").write_text(f"aggregates:\n  x: {DEFINITIONS[name]}\n{RULE}")
    return load_and_compile(folder)


def views(start: int, n: int, cid: str = "c1") -> list[Event]:
    return [Event(f"e{start + i}", "v", cid, T0 + (start + i) * HOUR,
                  {"category": f"cat-{(start + i) % 3}", "amount": 10 + start + i}) for i in range(n)]


PAIRS = [pair for pair in itertools.permutations(DEFINITIONS, 2)]


@pytest.mark.parametrize(("before", "after"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_a_reload_that_redefines_an_aggregate_goes_on_applying_the_customers_events(tmp_path, before, after):
    old, new = rules_with(tmp_path, before), rules_with(tmp_path, after)
    session = Session(old, "test")
    session.apply(views(0, 5), [])
    session.checkpoint_changed()
    session.use(new)   # the reload
    out: list = []
    session.apply(views(5, 3), out)
    assert session.take_rejected() == []   # before: dead letters for every shape change
    state = session.states["c1"]
    assert state.last_ts == T0 + 7 * HOUR   # the events were applied
    fit = value_fits(new.ruleset.aggregates["x"])
    assert fit is None or fit.check(state.aggs["x"], state.last_ts)
    # the state stores and a rebuild from its image replays without failing
    assert session.checkpoint(["c1"])["c1"]
    assert session.take_rejected() == []


@pytest.mark.parametrize(("before", "after"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_a_state_stored_under_another_definition_loads_and_goes_on(tmp_path, before, after):
    old, new = rules_with(tmp_path, before), rules_with(tmp_path, after)
    writer = Session(old, "test")
    writer.apply(views(0, 5), [])
    image = writer.checkpoint(["c1"])["c1"]
    reader = Session(new, "test")   # a restart with the edited rules
    reader.loaded("c1", decode_state(image), image)
    reader.apply(views(5, 3), [])
    assert reader.take_rejected() == []
    fit = value_fits(new.ruleset.aggregates["x"])
    state = reader.states["c1"]
    assert fit is None or fit.check(state.aggs["x"], state.last_ts)


def test_values_that_fit_are_kept_and_a_reset_is_logged_once(tmp_path, caplog):
    count, total, windowed = rules_with(tmp_path, "count"), rules_with(tmp_path, "sum"), rules_with(tmp_path, "windowed")
    session = Session(count, "test")
    session.apply(views(0, 4) + views(0, 4, "c2"), [])
    session.checkpoint_changed()
    session.use(total)   # a count read as a sum: the same shape, kept
    assert session.states["c1"].aggs["x"] == 4
    with caplog.at_level(logging.WARNING, logger="engine.rules"):
        session.use(windowed)
    assert "x" not in session.states["c1"].aggs and "x" not in session.states["c2"].aggs
    resets = [r for r in caplog.records if "aggregate 'x'" in r.getMessage()]
    assert len(resets) == 1 and "another definition" in resets[0].getMessage()


def test_a_reload_that_reshapes_nothing_does_not_walk_the_states(tmp_path, monkeypatch):
    count, total = rules_with(tmp_path, "count"), rules_with(tmp_path, "sum")
    assert not total.reshapes(count) and total.reshapes(rules_with(tmp_path, "windowed"))
    session = Session(count, "test")
    session.apply(views(0, 2), [])
    monkeypatch.setattr(CompiledRules, "conform", lambda *a: pytest.fail("walked the states"))
    session.use(total)


# -- no false resets: what each definition stores fits its own check ------------------------

ALL = "aggregates:\n" + "".join(f"  x_{name}: {text}\n" for name, text in DEFINITIONS.items()) + RULE


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-30 * 24, 30 * 24),            # hours from T0, late ones included
                          st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", 7, 2.5, True]),
                          st.one_of(st.integers(-10**18, 10**18), st.floats(allow_nan=False), st.text(max_size=3),
                                    st.none())),
                min_size=1, max_size=40))
def test_what_every_definition_stores_fits_its_own_check(tmp_path_factory, events):
    folder = tmp_path_factory.mktemp("all")
    (folder / "rules.yaml").write_text(ALL)
    rules = load_and_compile(folder)
    run = Replay(rules, lambda out: None)
    run.feed([Event(f"e{i}", "v", "c1", T0 + h * HOUR, {"category": c, "amount": a})
              for i, (h, c, a) in enumerate(events)])
    run.finish()
    state = decode_state(encode_state(run.store.states["c1"]))   # as stored and loaded
    aggs = dict(state.aggs)
    assert not rules.conform(state, "c1")
    assert state.aggs == aggs


def test_the_bundled_rules_keep_every_value_of_the_real_data(shared_data):
    rules = load_and_compile(ROOT / "rules")
    run = Replay(rules, lambda out: None)
    decoder = EventDecoder()
    for name in ("online-retail-orders.jsonl", "rees46-clickstream-sample.jsonl"):
        lines = (shared_data / name).read_bytes().splitlines()
        run.feed(decoder.decode_batch((raw, name) for raw in lines)[0])
    run.finish()
    assert len(run.store.states) > 1000
    for cid, state in run.store.states.items():
        assert not rules.conform(decode_state(encode_state(state)), cid), cid


@pytest.mark.parametrize(("before", "after"), [("1d", "7d"), ("7d", "1d"), ("7d", "8d"), ("8d", "7d")])
def test_a_window_of_another_length_counts_every_event_after_the_change(tmp_path, before, after):
    """The buckets' width follows the window: buckets of a narrower width read in a wider one lie
    after the customer's latest event, so every new event looked late and was dropped."""
    def rules(window: str) -> CompiledRules:
        folder = tmp_path / window
        folder.mkdir()
        (folder / "rules.yaml").write_text(f"aggregates:\n  x: {{count: v, window: {window}}}\n{RULE}")
        return load_and_compile(folder)

    old, new = rules(before), rules(after)
    session = Session(old, "test")
    session.apply(views(0, 5), [])
    session.checkpoint_changed()
    session.use(new)
    session.apply(views(5, 3), [])
    state = session.states["c1"]
    assert session.take_rejected() == []
    assert new.readers["x"](state, state.last_ts) == 3   # before, growing widths: 0, the three lost as late


def test_export_and_the_profile_read_a_stored_state_as_the_engine_does(tmp_path):
    """`triggers export` and the profile API read states from Redis without the engine's session:
    a redefined aggregate's old value must not show there while the engine reads it as dropped."""
    import io

    import orjson

    from engine.cli.export import _export
    from engine.offline.profile import Source, customer_profile

    old, new = rules_with(tmp_path, "count"), rules_with(tmp_path, "keyed")
    writer = Session(old, "test")
    writer.apply(views(0, 3), [])
    image = writer.checkpoint(["c1"])["c1"]

    store = InMemoryStore()
    store.commit("p-0", {"c1": image}, 1, {"c1": None})
    sink = io.BytesIO()
    assert _export(new, store, T0, "c1", sink) == 1
    assert orjson.loads(sink.getvalue())["aggregates"]["x"] == {}   # before: 3, the old count
    engine_view = Session(new, "test")
    engine_view.loaded("c1", decode_state(image), image)
    assert customer_profile(new, "c1", engine_view.states["c1"], T0, Source.CACHE).aggregates["x"] == {}


def test_nan_does_not_fit(tmp_path):
    """No update makes NaN; a decayed count of NaN scores could not evict (`min` finds no lowest)."""
    rules = load_and_compile(_all_rules(tmp_path))
    nan = float("nan")
    assert not rules.fits["x_decayed"].check([T0, {"a": nan}], T0)
    assert not rules.fits["x_count"].check(nan, T0) and rules.fits["x_count"].check(2.5, T0)


def _all_rules(tmp_path: Path) -> Path:
    folder = tmp_path / "all"
    folder.mkdir()
    (folder / "rules.yaml").write_text(ALL)
    return folder
