"""The capacity planner: GPU table, calibration file, chunk time, the `livedub plan` command, the live tier
ladder and its priors in the scheduler. (The FLOP formulas are checked against torch in test_planner_flops.)"""

from __future__ import annotations

import json
import math
import pickle

import pytest

from model.base import Tier
from model.calibration import STAGES, read_calibration, write_calibration
from model.gpus import GPUS, gpu, match_gpu_name, parse_gpus
from model.infinitetalk.live_tiers import guidance_passes, live_ladder, prior_costs
from model.planner import (
    DEFAULT_EFFICIENCY, Hardware, all_to_all_seconds, chunk_flops, chunk_time, dit_ideal_seconds, efficiency_from,
    memory_per_gpu)
from model.simulated import SimulatedGenerator, SimulatedOptions
from server.cli import main
from streaming.scheduler import Scheduler
from streaming.workers import GeneratorProfile

DIT_480 = 839_894_294_200_320  # one forward at 480x480, 81 frames (test_planner_flops checks it against torch)


def test_gpu_table_names_and_refusals():
    assert {"a100", "h100", "h200", "b200", "l40s", "rtx4090", "rtx5090"} <= set(GPUS)
    assert all(spec.bf16_flops > 1e14 and spec.memory_bandwidth > 5e11 and spec.interconnect > 0 for spec in GPUS.values())
    assert gpu("H100").fp8_flops == pytest.approx(2 * gpu("h100").bf16_flops, rel=1e-3)  # 1,979 vs 989.4
    assert match_gpu_name("NVIDIA H100 80GB HBM3") is GPUS["h100"]
    assert match_gpu_name("NVIDIA GeForce RTX 4090") is GPUS["rtx4090"]
    assert match_gpu_name("NVIDIA H200") is GPUS["h200"] and match_gpu_name("Tesla T4") is None
    assert parse_gpus("h100x8") == (GPUS["h100"], 8) and parse_gpus(" B200 x 2 ") == (GPUS["b200"], 2)
    for bad in ("h100", "tpux4", "h100x0", "h100x"):
        with pytest.raises(ValueError, match="accepted is KINDxN .* a100, h100"):
            parse_gpus(bad)
    with pytest.raises(ValueError, match="no fp8"):
        Hardware(gpu("a100"), 1, "fp8")


def test_sequence_parallel_time_splits_the_dit_and_adds_the_all_to_alls():
    h100 = gpu("h100")
    stages = chunk_flops(480, 480)
    one = chunk_time(Hardware(h100, 1), DEFAULT_EFFICIENCY, 480, 480, 4, 1, stages=stages)
    eight = chunk_time(Hardware(h100, 8), DEFAULT_EFFICIENCY, 480, 480, 4, 1, stages=stages)
    assert one.dit_forward_seconds == pytest.approx(DIT_480 / (h100.bf16_flops * 0.45))
    assert one.all_to_all_seconds == 0
    # 8 GPUs: 1/8 of the token-wise work, all of the context work, 160 all-to-alls of 2363 tokens x 5120 x 2 bytes
    comm = 160 * (2363 * 5120 * 2 * 7 / 8 / (450e9 * 0.7) + 25e-6)
    assert eight.all_to_all_seconds == pytest.approx(comm)
    sharded = (stages.dit.linear / 8 + stages.dit.attention / 8 + stages.dit.replicated) / h100.bf16_flops
    assert eight.dit_forward_seconds == pytest.approx(sharded / 0.45 + comm)
    # The critical path: 4 forwards, the VAE decode and the context encode; the encoders hide behind the DiT.
    for t in (one, eight):
        assert t.chunk_seconds == pytest.approx(4 * t.dit_forward_seconds + t.vae_decode_seconds
                                                + t.vae_encode_context_seconds)
        assert t.realtime_factor == pytest.approx(2.88 / t.chunk_seconds)
    assert not one.realtime and eight.realtime
    # fp8 speeds up the matmuls only: faster than bf16, less than twice
    fp8 = chunk_time(Hardware(h100, 1, "fp8"), DEFAULT_EFFICIENCY, 480, 480, 4, 1, stages=stages)
    assert 1.2 < one.dit_forward_seconds / fp8.dit_forward_seconds < 2.0
    with pytest.raises(ValueError, match="accepted are 1"):
        chunk_time(Hardware(h100), DEFAULT_EFFICIENCY, 480, 480, 4, 4)
    with pytest.raises(ValueError, match="multiples of 16"):
        chunk_flops(480, 470)
    # memory: the whole DiT on every GPU; activations shrink with the GPU count
    m1, m8 = memory_per_gpu(Hardware(h100, 1), 480, 480), memory_per_gpu(Hardware(h100, 8), 480, 480)
    assert m1.weights == m8.weights == 2 * 18_882_046_784 and m8.activations < m1.activations / 7
    assert m1.total < h100.memory_bytes < memory_per_gpu(Hardware(h100, 1), 1280, 720).total + 40e9


def test_calibration_round_trip_gives_the_measured_efficiency(tmp_path, monkeypatch):
    h100 = gpu("h100")
    stages = chunk_flops(480, 480)
    ideal = {"dit_forward": dit_ideal_seconds(stages.dit, Hardware(h100)),
             "vae_decode": stages.vae_decode / h100.bf16_flops, "vae_encode": stages.vae_encode / h100.bf16_flops,
             "clip": stages.clip / h100.bf16_flops, "wav2vec2": stages.wav2vec2 / h100.bf16_flops}
    wanted = {"dit_forward": 0.6, "vae_decode": 0.2, "vae_encode": 0.25, "clip": 0.1, "wav2vec2": 0.05}
    path = write_calibration(tmp_path / "c" / "cal.json", "NVIDIA H100 80GB HBM3", "bf16", (480, 480), 81,
                             {stage: ideal[stage] / wanted[stage] for stage in STAGES})
    record = json.loads(path.read_text())
    assert set(record) == {"version", "gpu_name", "dtype", "width", "height", "frames", "seconds", "measured_at"}
    monkeypatch.setenv("LIVEDUB_CALIBRATION", str(path))
    efficiency = efficiency_from(read_calibration())
    assert [getattr(efficiency, k) for k in ("dit", "vae_decode", "vae_encode", "clip", "wav2vec2")] == \
        pytest.approx([0.6, 0.2, 0.25, 0.1, 0.05])
    assert str(path) in efficiency.source
    # the calibrated DiT forward takes what was measured
    measured = chunk_time(Hardware(h100), efficiency, 480, 480, 1, 1, stages=stages)
    assert measured.dit_forward_seconds == pytest.approx(ideal["dit_forward"] / 0.6)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**record, "seconds": {**record["seconds"], "clip": -1}, "dtype": "int4"}))
    with pytest.raises(ValueError, match=r"bad dtype, seconds\.clip; accepted"):
        read_calibration(bad)
    with pytest.raises(ValueError, match="not found"):
        read_calibration(tmp_path / "missing.json")
    monkeypatch.setenv("LIVEDUB_CALIBRATION", str(tmp_path / "none.json"))
    assert read_calibration() is None  # no default file: the defaults apply


def test_plan_command_json_and_text(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LIVEDUB_CALIBRATION", str(tmp_path / "none.json"))
    assert main(["plan", "--json", "--gpus", "8"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dit_flops_per_forward"] == DIT_480
    assert report["realtime_factor"] == pytest.approx(2.88 / report["chunk_seconds"], rel=1e-3)
    assert report["realtime"] and report["efficiency"]["source"].startswith("default")
    assert set(report["flops"]) >= {"dit_forward", "vae_decode", "vae_encode", "clip", "wav2vec2"}
    tiers = {t["name"]: t for t in report["tiers"]}
    assert list(tiers) == ["full", "steps8", "steps4", "steps4_half", "draft"]
    assert tiers["steps4"]["realtime"] and not tiers["steps8"]["realtime"] and not tiers["full"]["realtime"]
    assert tiers["steps4"]["chunk_seconds"] == pytest.approx(report["chunk_seconds"], rel=1e-3)
    assert main(["plan", "--steps", "8", "--passes", "2", "--gpu", "h200", "--size", "832x480"]) == 0
    text = capsys.readouterr().out
    assert "2 x H200" not in text and "1 x H200 SXM 141GB" in text and "832x480" in text
    assert "real-time factor" in text and ">= 1 is real time" in text and "not real time" in text
    for argv, message in ((["--gpu", "tpu"], "unknown GPU 'tpu': accepted are a100"),
                          (["--gpu", "a100", "--dtype", "fp8"], "no fp8 tensor cores"),
                          (["--frames", "80"], "accepted is 4k+1"),
                          (["--calibration", str(tmp_path / "x.json")], "calibration file not found")):
        assert main(["plan", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err


def test_ladder_resolves_against_the_configured_sampler():
    assert [guidance_passes(*s) for s in ((5, 4), (1, 4), (1, 1), (1.0, 2.0))] == [3, 2, 1, 2]
    default = live_ladder()
    assert [(w.tier.name, w.steps, w.passes) for w in default] == [
        ("full", 40, 3), ("steps8", 8, 2), ("steps4", 4, 1), ("steps4_half", 4, 1), ("draft", 2, 1)]
    # A LoRA setup of 4 steps with audio CFG: 8 steps would not be cheaper than "full", so it is left out.
    lora = live_ladder(steps=4, text_guidance=1.0, audio_guidance=2.0)
    assert [(w.tier.name, w.steps, w.passes) for w in lora] == [
        ("full", 4, 2), ("steps4", 4, 1), ("steps4_half", 4, 1), ("draft", 2, 1)]
    costs = prior_costs(gpu("h100"), 8).seconds((480, 480))
    assert list(costs) == [w.tier.name for w in default]
    assert all(a > b for a, b in zip(costs.values(), list(costs.values())[1:]))  # best first, dearest first
    assert prior_costs(None) is None


def test_priors_judge_unmeasured_tiers_and_a_measurement_replaces_them():
    full, fast, draft = Tier("full"), Tier("fast", steps=4), Tier("draft", steps=2)
    scheduler = Scheduler((full, fast, draft), priors={"full": 10.0, "fast": 1.0, "unknown": 0.1})
    decision = scheduler.choose(2.0)  # full's prior does not fit: not tried blind
    assert decision.tier == fast and decision.estimate == 1.0 and not scheduler.measured(fast)
    assert scheduler.estimate(draft) is None and scheduler.choose(1.1).tier == draft  # no prior: tried
    scheduler.record(fast, 1.5)  # the first measurement replaces the prior (no smoothing with it)
    assert scheduler.estimate(fast) == 1.5 and scheduler.measured(fast)
    scheduler.record(fast, 0.5)
    assert scheduler.estimate(fast) == 0.5  # a lower cost replaces the estimate at once (load has gone)
    scheduler.record(fast, 1.5)
    assert scheduler.estimate(fast) == 1.0  # a higher one is smoothed
    for _ in range(30):
        scheduler.choose(0.01)  # skips: measured estimates relax, priors do not
    assert scheduler.estimate(full) == 10.0 and scheduler.estimate(fast) < 0.1


def test_profile_carries_the_simulated_ladder_and_priors_across_processes():
    generator = SimulatedGenerator(SimulatedOptions(simulate="h100x2"), sleep=lambda s: None)
    profile = pickle.loads(pickle.dumps(GeneratorProfile.of(generator)))
    assert profile.tiers == generator.tiers and profile.tiers[0].name == "full"
    priors = profile.priors((480, 480), 81, 9)
    assert priors == generator.prior_costs.seconds((480, 480))
    expected = chunk_time(Hardware(gpu("h100"), 2), DEFAULT_EFFICIENCY, 480, 480, 4, 1).chunk_seconds
    assert priors["steps4"] == pytest.approx(expected) and math.isfinite(priors["full"])
    assert GeneratorProfile.of(object()).priors((480, 480), 81, 9) == {}
    assert profile.priors((480, 470), 81, 9) == {}  # a size the model cannot take: no priors, no failure


def test_generator_declaration_reads_the_calibration_and_survives_a_broken_one(tmp_path, monkeypatch, caplog):
    from model.infinitetalk.live_tiers import declare_ladder

    monkeypatch.setenv("LIVEDUB_CALIBRATION", str(tmp_path / "none.json"))
    tiers, priors = declare_ladder(40, 5.0, 4.0, None)
    assert [t.name for t in tiers] == ["full", "steps8", "steps4", "steps4_half", "draft"] and priors is None
    tiers, priors = declare_ladder(40, 5.0, 4.0, "NVIDIA H100 80GB HBM3", count=4)
    assert priors.hardware == Hardware(gpu("h100"), 4) and priors.efficiency == DEFAULT_EFFICIENCY
    stages = chunk_flops(480, 480)
    slow = {stage: 1.0 for stage in STAGES}  # one second a stage: far below the default efficiencies
    write_calibration(tmp_path / "none.json", "NVIDIA H100 80GB HBM3", "bf16", (480, 480), 81, slow)
    _, calibrated = declare_ladder(40, 5.0, 4.0, "NVIDIA H100 80GB HBM3", count=4)
    assert calibrated.efficiency.dit == pytest.approx(stages.dit.total / gpu("h100").bf16_flops)
    assert calibrated.seconds((480, 480))["steps4"] > priors.seconds((480, 480))["steps4"]
    (tmp_path / "none.json").write_text("{")
    _, fallback = declare_ladder(40, 5.0, 4.0, "NVIDIA H100 80GB HBM3")
    assert fallback.efficiency == DEFAULT_EFFICIENCY and "bad calibration file" in caplog.text
