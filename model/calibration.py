"""The planner's calibration: stage times measured on a real GPU, written by the GPU benchmark.

Schema (version 1)::

    {"version": 1, "gpu_name": "<torch.cuda.get_device_name()>", "dtype": "bf16" | "fp8",
     "width": W, "height": H, "frames": 81,
     "seconds": {"dit_forward": s, "vae_decode": s, "vae_encode": s, "clip": s, "wav2vec2": s},
     "measured_at": "<ISO time>"}

``dit_forward`` is one DiT forward (one guidance pass, the whole model on one GPU); ``vae_encode`` the
encode of the ``frames``-frame conditioning window; ``wav2vec2`` one chunk's audio window. Default path:
``$LIVEDUB_CALIBRATION``, else ``~/.cache/livedub/calibration.json``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
from pathlib import Path

VERSION = 1
STAGES = ("dit_forward", "vae_decode", "vae_encode", "clip", "wav2vec2")
DTYPES = ("bf16", "fp8")


@dataclasses.dataclass(frozen=True)
class Calibration:
    gpu_name: str
    dtype: str
    width: int
    height: int
    frames: int
    seconds: dict[str, float]
    measured_at: str
    path: str = ""


def default_path() -> Path:
    return Path(os.environ.get("LIVEDUB_CALIBRATION") or Path.home() / ".cache" / "livedub" / "calibration.json")


def write_calibration(path: str | os.PathLike | None, gpu_name: str, dtype: str, size: tuple[int, int],
                      frames: int, seconds: dict[str, float]) -> Path:
    """Write the calibration file (what ``bench/bench_infinitetalk_gpu.py`` calls). ``size`` is
    (width, height); ``seconds`` holds every stage of ``STAGES``. Returns the path written."""
    target = Path(path) if path is not None else default_path()
    record = {"version": VERSION, "gpu_name": str(gpu_name), "dtype": dtype, "width": int(size[0]),
              "height": int(size[1]), "frames": int(frames),
              "seconds": {stage: float(seconds[stage]) for stage in STAGES},
              "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    _check(record, str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(target)
    return target


def read_calibration(path: str | os.PathLike | None = None, required: bool = False) -> Calibration | None:
    """The calibration at ``path`` (default: the default path). A missing default file gives None; a
    missing file that was asked for, or a malformed one, raises ValueError naming what is wrong."""
    target = Path(path) if path is not None else default_path()
    if not target.exists():
        if required or path is not None:
            raise ValueError(f"calibration file not found: {target}")
        return None
    try:
        record = json.loads(target.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"bad calibration file {target}: {exc} (accepted: the JSON the GPU benchmark writes)") from None
    _check(record, str(target))
    return Calibration(record["gpu_name"], record["dtype"], record["width"], record["height"], record["frames"],
                       {stage: float(record["seconds"][stage]) for stage in STAGES}, record["measured_at"],
                       str(target))


def _check(record, where: str) -> None:
    accepted = ('accepted: {"version": 1, "gpu_name", "dtype": bf16|fp8, "width", "height", "frames", '
                f'"seconds": {{{", ".join(STAGES)}}} in seconds > 0, "measured_at"}}')
    if not isinstance(record, dict) or record.get("version") != VERSION:
        raise ValueError(f"bad calibration {where}: not version {VERSION}; {accepted}")
    problems = []
    if not isinstance(record.get("gpu_name"), str) or not record["gpu_name"]:
        problems.append("gpu_name")
    if record.get("dtype") not in DTYPES:
        problems.append("dtype")
    for key in ("width", "height", "frames"):
        if not isinstance(record.get(key), int) or isinstance(record.get(key), bool) or record[key] < 1:
            problems.append(key)
    seconds = record.get("seconds")
    if not isinstance(seconds, dict):
        problems.append("seconds")
    else:
        for stage in STAGES:
            value = seconds.get(stage)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
                problems.append(f"seconds.{stage}")
    if not isinstance(record.get("measured_at"), str):
        problems.append("measured_at")
    if problems:
        raise ValueError(f"bad calibration {where}: bad {', '.join(problems)}; {accepted}")
