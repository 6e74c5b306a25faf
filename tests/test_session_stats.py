"""``SessionStats.to_wire()``: the typed stats give exactly the documented JSON (keys, order, types); the
second speaker's ingest only with two speakers, what the server's side reports merged in at the top.
A real session's wire stats are checked in tests/test_server_session.py and tests/test_server_control.py."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, strategies as st

from stats_wire import check_documented
from streaming.stats import (ChunkStats, CostStats, DelayStats, IngestStats, Percentiles, SessionStats,
                             SpeakerStats, WarmUpStats)

STATS = SessionStats(
    session="abc", state="running", source="red", generator="passthrough", time=1.234,
    delay=DelayStats(4.2, 0.12, Percentiles(4.05, 4.11)), av_offset_send=Percentiles(None, None),
    chunks=ChunkStats(5, 1, 0, 0, 2), tiers={"full": 3, "draft": 2}, frames={"generated": 40, "idle": 3},
    fps_out=0.0, viewers=0, frames_skipped=0, cost=CostStats(0.2, 0.25, 0.24, 0.3, 0.2), warm_up=None,
    ingest=IngestStats(100, False, 2.0, 0, 0.0, 0.0))
OUTPUT = {"output": "o1", "url": "rtmp://host/app/***", "state": "connected", "connects": 1, "attempts": 1,
          "frames": 3, "dropped": 0, "retry_in": None, "error": None, "stream_start": 0.5}


def test_the_wire_form_is_the_documented_json():
    wire = STATS.to_wire()
    check_documented(wire)
    assert wire["delay"] == {"target": 4.2, "lead": 0.12, "send": {"p50": 4.05, "p95": 4.11}}
    assert wire["cost"] == {"last": 0.2, "mean": 0.25, "p50": 0.24, "p95": 0.3, "generator_mean": 0.2}
    assert "speaker2" not in wire["ingest"] and wire["warm_up"] is None
    assert json.loads(json.dumps(wire)) == wire


def test_two_speakers_warm_up_and_reported_outputs_appear_in_the_wire_form():
    stats = dataclasses.replace(STATS, warm_up=WarmUpStats(3.5, 0.4),
                                ingest=IngestStats(100, False, 2.0, 0, 0.0, 0.0, SpeakerStats(90, True, [0.9, 0])),
                                reported={"outputs": [OUTPUT]})
    wire = stats.to_wire()
    check_documented(wire, speakers=2, outputs=True)
    assert wire["ingest"]["speaker2"] == {"frames": 90, "ended": True, "faces": [0.9, 0]}
    assert wire["warm_up"] == {"cold": 3.5, "warm": 0.4} and wire["outputs"] == [OUTPUT]
    assert list(wire)[-1] == "outputs"  # what the server adds comes after the session's own stats


def test_a_count_that_is_not_a_count_fails_the_documented_check():
    with pytest.raises(AssertionError, match="chunks.late"):
        check_documented(dataclasses.replace(STATS, chunks=ChunkStats(5, True, 0, 0, 2)).to_wire())
    with pytest.raises(AssertionError, match="keys"):
        check_documented({**STATS.to_wire(), "extra": 1})


@given(st.lists(st.floats(0, 30, allow_nan=False), max_size=60), st.lists(st.floats(0, 30), max_size=60))
def test_costs_and_percentiles_are_rounded_and_none_only_when_nothing_was_measured(costs, generator):
    cost = CostStats.of(costs, generator)
    spread = Percentiles.of(costs)
    assert (cost.last is None) == (cost.mean is None) == (spread.p50 is None) == (not costs)
    assert (cost.generator_mean is None) == (not generator)
    for value in (cost.last, cost.mean, cost.p50, cost.p95, cost.generator_mean):
        assert value is None or (type(value) is float and round(value, 4) == value)
    if costs:
        assert cost.last == round(costs[-1], 4) and min(costs) - 1e-4 <= spread.p50 <= spread.p95 <= max(costs) + 1e-4
