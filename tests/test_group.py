"""The generator on a torch.distributed process group (--gpus / --parallel): flags checked at the edge,
offline dubbing on two gloo ranks equal to one process, a live server's chunks served by the group, and
a killed rank reported, played around (fallback) and replaced by a new group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

import group_generators
from group_generators import _pid_list
from _server_support import control_url, next_event, start_server
from client.control import ControlClient
from it_weights import write_weights
from model import registry
from model.serving import ServingNeeds
from server.cli import main
from streaming.errors import InputError
from streaming.group import GroupGenerator, GroupLayout, group_layout
from streaming.workers import GeneratorFailed, GeneratorSpec, WorkerDied
from test_infinitetalk_dub import write_speech

ROOT = Path(__file__).parents[1]
CPU2 = GroupLayout(("cpu", "cpu"))


@pytest.fixture
def probe_registry(monkeypatch):
    for name, entry in group_generators.REGISTRY.items():
        monkeypatch.setitem(registry.GENERATORS, name, entry)
        monkeypatch.setitem(registry.SERVING, name, ServingNeeds(shardable=True))


# ---- flags ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gpus, parallel, generator, options, count, message", [
    ("0,1", 2, "infinitetalk", {}, 2, "not both"),
    (None, 0, "infinitetalk", {}, 2, "bad --parallel 0"),
    (None, -3, "infinitetalk", {}, 2, "bad --parallel -3"),
    ("0,,1", None, "infinitetalk", {}, 2, "bad --gpus '0,,1'"),
    ("0,0", None, "infinitetalk", {}, 2, "distinct GPU indices"),
    ("a", None, "infinitetalk", {}, 2, "bad --gpus 'a'"),
    ("", None, "infinitetalk", {}, 2, "bad --gpus ''"),
    ("0,3", None, "infinitetalk", {}, 2, "GPU 3 does not exist: this machine has 2 (indices 0-1)"),
    ("0", None, "infinitetalk", {}, 0, "--gpus needs CUDA GPUs and torch sees none here"),
    (None, 2, "lite", {}, 2, "generator 'lite' cannot run on a process group"),
    (None, 2, "infinitetalk", {"device": "cpu"}, 2, "--device does not go with --gpus/--parallel"),
])
def test_bad_group_flags_get_one_line_errors(gpus, parallel, generator, options, count, message):
    with pytest.raises(InputError) as caught:
        group_layout(gpus, parallel, generator, options, cuda_count=lambda: count)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_group_layouts():
    assert group_layout(None, None, "lite") is None
    assert group_layout(None, 3, "infinitetalk") == GroupLayout(("cpu",) * 3)
    gpus = group_layout("2,0", None, "infinitetalk", cuda_count=lambda: 4)
    assert gpus.devices == ("cuda:2", "cuda:0") and gpus.backend == "nccl" and gpus.describe() == "GPUs 2,0 (nccl)"
    assert CPU2.backend == "gloo" and CPU2.world_size == 2


def test_the_commands_refuse_bad_group_flags_in_one_line(tmp_path, capsys):
    assert main(["dub", "x.mp4", "y.wav", "--parallel", "2"]) == 2  # the default generator is lite
    assert capsys.readouterr().err.strip() == ("livedub dub: error: generator 'lite' cannot run on a process group: "
                                               "--gpus and --parallel work with infinitetalk")
    assert main(["serve", "--generator", "infinitetalk", "--parallel", "0", "--port", "0"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert main(["serve", "--generator", "infinitetalk", "--parallel", "2", "--workers", "2"]) == 2
    assert "--workers 2 does not go with --gpus/--parallel" in capsys.readouterr().err


def test_gpus_without_cuda_is_refused(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for machines without it")
    assert main(["serve", "--generator", "infinitetalk", "--gpus", "0"]) == 2
    assert "torch sees none here" in capsys.readouterr().err


# ---- the group itself (a probe generator that runs collectives) ------------------------------------------
def test_a_chunk_runs_on_every_rank_and_failures_are_told_apart(probe_registry):
    spec = GeneratorSpec.from_registry("rank_probe", {"raise_everywhere": (1,), "raise_on_rank1": (3,)})
    group = GroupGenerator(spec, CPU2)
    try:
        pids = group._worker.pids
        request = _request(0)
        result = group.generate(request)
        assert result.info["world"] == 2 and result.info["rank_sum"] == 1 + 2 and result.info["pids"] == _pid_list(pids)
        assert np.array_equal(result.frames, np.broadcast_to(request.reference_frame, result.frames.shape))
        with pytest.raises(GeneratorFailed, match="deliberately refused chunk 1") as raised:
            group.generate(_request(1))  # every rank refused it alike: this chunk fails, the group goes on
        assert not isinstance(raised.value, WorkerDied)
        assert group.generate(_request(2)).info["pids"] == _pid_list(pids)
        # Rank 1 fails while rank 0 waits for it in a collective: both end, the chunk fails as a death.
        with pytest.raises(WorkerDied, match="rank 1 .* exited with code 5"):
            group.generate(_request(3))
    finally:
        group.close()
    assert group._worker.pids == []


def _request(index: int):
    from model.base import ChunkRequest

    reference = np.zeros((16, 16, 3), np.uint8)
    reference[:, :, index % 3] = 40 + index
    return ChunkRequest(index=index, start_frame=72 * index, num_frames=81, audio=np.zeros(4000, np.float32),
                        audio_offset=0, reference_frame=reference, reference_index=0)


# ---- offline dubbing on the real model (tiny random weights) ---------------------------------------------
class Recording:
    """A generator passed through, keeping every chunk's frames."""

    def __init__(self, generator) -> None:
        self.generator = generator
        self.frames: list[np.ndarray] = []
        for key in ("name", "audio_margins", "default_color_correction", "applies_color_correction"):
            setattr(self, key, getattr(generator, key))

    def generate(self, request):
        result = self.generator.generate(request)
        self.frames.append(np.array(result.frames))
        return result

    def close(self) -> None:
        self.generator.close()


def _decoded(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.mark.slow
def test_dubbing_on_two_ranks_gives_the_single_process_video(tmp_path, monkeypatch):
    import torch

    from model.infinitetalk.generator import build_generator
    from server.demo import make_demo_source
    from streaming.dub import DubSettings, dub

    weights = str(write_weights(tmp_path / "weights"))
    source = make_demo_source(str(tmp_path / "source.mp4"), seconds=1.0, size=64)
    speech = str(write_speech(tmp_path / "speech.wav", 3.5))  # 87 frames: two chunks
    options = {"weights": weights, "steps": "1", "audio_context": "1"}
    settings = DubSettings(generator="infinitetalk", size=(64, 64), generator_options=options)
    # One torch thread, as each of the two ranks has on two cores: CPU kernels round differently with
    # another thread count (by one level in a few pixels here), and the equality below is exact.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = Recording(build_generator(device="cpu", **options))
        dub(source, speech, str(tmp_path / "single.mp4"), settings, generator=single)
    finally:
        torch.set_num_threads(threads)
    # The DiT is sharded over the two ranks (model/infinitetalk/parallel.py). Ulysses moves whole heads
    # between ranks, and every matmul sees the same rows: the frames are exactly equal. Ring attention
    # merges partial softmaxes in another order: a level apart in a few pixels at most.
    for mode, tolerance in (("ulysses", 0), ("ring", 1)):
        spec = GeneratorSpec.from_registry("infinitetalk", {**options, "parallel_mode": mode}, fallback=None)
        grouped = Recording(GroupGenerator(spec, CPU2))
        try:
            dub(source, speech, str(tmp_path / f"{mode}.mp4"), settings, generator=grouped)
        finally:
            grouped.close()
        assert len(single.frames) == len(grouped.frames) == 2
        for one, two in zip(single.frames, grouped.frames):
            assert np.abs(one.astype(np.int16) - two).max() <= tolerance, mode

    # The command line: `--parallel 2` runs that group (its report says so on every chunk); the mp4 holds
    # the same frames up to x264's own run-to-run jitter (its threads; about 1.5 levels mean on noise).
    output, report = tmp_path / "cli.mp4", tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "server.cli", "dub", source, speech, "-o", str(output), "--quiet",
               "--generator", "infinitetalk", "--weights", weights, "--size", "64x64", "--parallel", "2",
               "--generator-option", "steps=1", "--generator-option", "audio_context=1", "--report", str(report)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [c["info"]["ranks"] for c in json.loads(report.read_text())["chunks"]] == [2, 2]
    cli, reference = _decoded(output).astype(np.float32), _decoded(tmp_path / "single.mp4").astype(np.float32)
    assert cli.shape == reference.shape == (87, 64, 64, 3)
    assert np.abs(cli - reference).mean() < 3.0  # unrelated noise videos differ by about 70


# ---- the live server -------------------------------------------------------------------------------------
@pytest.mark.slow
async def test_a_live_session_is_served_by_the_group_and_outlives_a_killed_rank(tmp_path, probe_registry):
    server = await start_server(str(tmp_path / "sources"), size="64x64", generator="rank_probe", parallel=2)
    try:
        pool = server.manager._pools["rank_probe"]
        first_pids = pool.rank_pids
        assert len(first_pids) == 2
        async with ControlClient(control_url(server)) as control:
            session = (await control.request("create", source="red"))["session"]
            seen: list[dict] = []
            served = await next_event(control, seen, lambda e: e["event"] == "chunk" and e["status"] == "on_time", 30)
            assert served["session"] == session
            assert served["info"]["world"] == 2 and served["info"]["rank_sum"] == 3
            assert served["info"]["pids"] == _pid_list(first_pids)

            os.kill(first_pids[1], signal.SIGKILL)
            died = await next_event(control, seen, lambda e: e["event"] == "error", 30)
            assert died["session"] == session and died["code"] == "worker_died" and "rank 1" in died["message"]
            failed = await next_event(control, seen, lambda e: e["event"] == "chunk" and e["chunk"] == died["chunk"], 5)
            assert failed["status"] == "failed"  # its slot plays the fallback frames

            later = await next_event(control, seen, lambda e: e["event"] == "chunk" and e["status"] == "on_time", 60)
            assert later["chunk"] > died["chunk"] and later["info"]["world"] == 2
            assert later["info"]["pids"] == _pid_list(pool.rank_pids) and set(pool.rank_pids).isdisjoint(first_pids)
            assert pool.deaths == 1 and pool.restarts == 1
            stats = (await control.request("stats", session=session))["stats"]
            assert stats["state"] == "running" and stats["chunks"]["failed"] == 1
    finally:
        await server.stop()
    assert pool.rank_pids == []


@pytest.mark.gpu
def test_a_group_over_every_gpu(probe_registry):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA: the NCCL group needs GPUs")
    count = torch.cuda.device_count()
    layout = group_layout(",".join(map(str, range(count))), None, "rank_probe")
    group = GroupGenerator(GeneratorSpec.from_registry("rank_probe"), layout)
    try:
        info = group.generate(_request(0)).info
        assert info["world"] == count and info["rank_sum"] == count * (count + 1) // 2
    finally:
        group.close()
