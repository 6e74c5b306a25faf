"""The stats' wire form as docs/live-server.md documents it (the ``stats`` reply, MQTT's
``P/sessions/ID/stats``): every key and the type of its value, checked against a real session's stats."""

from __future__ import annotations

NUMBER = (int, float)
MAYBE_NUMBER = (int, float, type(None))
PERCENTILES = {"p50": MAYBE_NUMBER, "p95": MAYBE_NUMBER}
COUNTS = "counts"  # a mapping of name -> count (tiers, frames by where they came from)

DOCUMENTED = {
    "session": str, "state": str, "source": str, "generator": str, "time": NUMBER,
    "delay": {"target": NUMBER, "lead": NUMBER, "send": PERCENTILES},
    "av_offset_send": PERCENTILES,
    "chunks": {"generated": int, "late": int, "skipped": int, "failed": int, "degraded": int},
    "tiers": COUNTS, "frames": COUNTS,
    "fps_out": NUMBER, "viewers": int, "frames_skipped": int,
    "cost": {"last": MAYBE_NUMBER, "mean": MAYBE_NUMBER, "p50": MAYBE_NUMBER, "p95": MAYBE_NUMBER,
             "generator_mean": MAYBE_NUMBER},
    "warm_up": (type(None), {"cold": NUMBER, "warm": NUMBER}),
    "ingest": {"frames": int, "ended": bool, "seconds": NUMBER, "video_frames": int, "settled": NUMBER,
               "anchor_late": NUMBER},
}
SPEAKER2 = {"frames": int, "ended": bool, "faces": list}
OUTPUT_KEYS = {"output", "url", "state", "connects", "attempts", "frames", "dropped", "retry_in", "error",
               "stream_start"}


def _check(value, schema, where: str) -> None:
    if isinstance(schema, dict):
        assert isinstance(value, dict), f"{where}: {value!r} is not an object"
        assert list(value) == list(schema), f"{where}: keys {list(value)}, documented {list(schema)}"
        for key, inner in schema.items():
            _check(value[key], inner, f"{where}.{key}")
    elif schema == COUNTS:
        assert isinstance(value, dict) and all(isinstance(k, str) and type(v) is int for k, v in value.items()), \
            f"{where}: {value!r} is not name -> count"
    elif isinstance(schema, tuple) and any(isinstance(s, dict) for s in schema):
        if value is not None:
            _check(value, next(s for s in schema if isinstance(s, dict)), where)
    else:
        # bool is an int in Python, but a count that is a bool (or a flag that is a count) is a bug
        types = schema if isinstance(schema, tuple) else (schema,)
        assert isinstance(value, types) and (bool in types or not isinstance(value, bool)), \
            f"{where}: {value!r} is not {schema}"


def check_documented(wire: dict, speakers: int = 1, outputs: bool = False) -> None:
    """Assert ``wire`` has exactly the documented keys, in order, with values of the documented types."""
    top = dict(DOCUMENTED)
    ingest = dict(top["ingest"])
    if speakers == 2:
        ingest["speaker2"] = SPEAKER2
    top["ingest"] = ingest
    if outputs:
        top["outputs"] = list
    _check(wire, top, "stats")
    if outputs:
        assert all(set(o) == OUTPUT_KEYS for o in wire["outputs"]), wire["outputs"]
