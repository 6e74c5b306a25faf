"""The public conformance fixtures: an intact copy in the repo, and `livedub conformance` passing on them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).parents[1]
PUBLIC = ROOT / "tests" / "fixtures" / "conformance" / "public"
LINE = r"^\S+  max_abs=\S+  tol=\S+  (OK|FAIL)"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "server.cli", "conformance", "--threads", "2", *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)


def test_fixture_copy_matches_manifest():
    manifest = json.loads((PUBLIC / "manifest.json").read_text())
    assert len(manifest["files"]) >= 28
    for entry in manifest["files"]:
        data = (PUBLIC / entry["path"]).read_bytes()
        assert len(data) == entry["bytes"], entry["path"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]


@pytest.mark.slow
def test_conformance_cli_passes_on_public_set():
    result = run_cli(str(PUBLIC.parent))  # a folder of sets: finds public/
    lines = [line for line in result.stdout.splitlines() if "max_abs=" in line]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    import re

    assert all(re.match(LINE, line) for line in lines)
    assert all(line.split()[3] == "OK" for line in lines)
    names = {line.split()[0] for line in lines}
    for expected in ("public/dit/single/out", "public/dit/multi/out", "public/dit/null_audio/out",
                     "public/encoders/vae/decoded", "public/encoders/clip/output", "public/encoders/wav2vec2/embedding",
                     "public/pipeline/teacher/chunk3/dit_calls", "public/pipeline/free/video",
                     "public/pipeline/free/video_uint8", "public/pipeline/free/chunk3/x0_latent"):
        assert expected in names
    assert "0 failed" in result.stdout.splitlines()[-1]


def test_conformance_fails_on_a_perturbed_set(tmp_path):
    """A set whose DiT weights are off by 1e-3 in one tensor fails, with exit status 1; missing parts are skipped."""
    broken = tmp_path / "broken"
    shutil.copytree(PUBLIC / "dit", broken / "dit")
    state = load_file(broken / "dit" / "state_dict.safetensors")
    state["head.head.bias"] = state["head.head.bias"] + 1e-3
    save_file(state, broken / "dit" / "state_dict.safetensors")
    result = run_cli(str(broken))
    assert result.returncode == 1
    assert "broken/dit/single/out" in result.stdout and "FAIL" in result.stdout
    assert "broken/pipeline  skipped" in result.stdout and "broken/encoders  skipped" in result.stdout


def test_conformance_rejects_a_folder_without_sets(tmp_path):
    result = run_cli(str(tmp_path))
    assert result.returncode == 2
    assert "no conformance fixture set" in result.stderr


def test_dit_matches_fixture_in_process():
    """The DiT alone on the three cases (fast, in process): the official call convention."""
    from model.infinitetalk.conformance_dit import load_transformer, official_forward

    torch.set_num_threads(2)
    model = load_transformer(PUBLIC / "dit")
    for case in ("single", "multi", "null_audio"):
        inputs = load_file(PUBLIC / "dit" / f"{case}_inputs.safetensors")
        expected = load_file(PUBLIC / "dit" / f"{case}_output.safetensors")["out"]
        with torch.no_grad():
            out = official_forward(model, inputs)
        assert (out - expected).abs().max() < 1e-5, case
