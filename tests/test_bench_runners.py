"""The end-to-end runner behind `run`, `bench` and benches/e2e_cpu.py: every baseline computes the reference's
logits on the same input, a baseline that cannot be built is skipped with its reason, and names are checked;
the register peaks (benches/peak.c) and the bounds a record carries (bench.e2e_bounds)."""

import copy
import sys

import pytest
import torch

from mnv4_kernels import baselines, bench, report


@pytest.fixture(scope="module")
def case():
    return bench.e2e_reference("mobilenetv4_conv_small", 64, 2, seed=3)


def test_reference_is_the_same_in_every_process(case):
    """benches compare runs on the same weights: e2e_reference is a function of its arguments, not of the global
    RNG (which it leaves as it was)."""
    torch.manual_seed(123)
    before = torch.rand(4)
    torch.manual_seed(123)
    ref, x = bench.e2e_reference("mobilenetv4_conv_small", 64, 2, seed=3)
    assert torch.equal(torch.rand(4), before)
    ref0, x0 = case
    first = ref0.state_dict()
    assert torch.equal(x, x0) and first.keys() == ref.state_dict().keys()
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in first.items())
    other, _ = bench.e2e_reference("mobilenetv4_conv_small", 64, 2, seed=4)
    assert not torch.equal(other.state_dict()["conv_stem.weight"], first["conv_stem.weight"])


NAMES = ["ours-fp32", "eager-fp32", "onnxruntime-fp32", "openvino-f32", "openvino-bf16", "ours-bf16"]


@pytest.fixture(scope="module")
def record(case):
    ref, x = case
    return bench.e2e_case(ref, x, NAMES, threads=2, repeats=2, warmup=1, blocks=dict(inner=1, settle=0, gap_s=0),
                          log=lambda *_: None)


def test_every_baseline_computes_the_reference(record):
    rec, names = record, NAMES
    assert list(rec["candidates"]) == names and rec["skipped"] == {} and rec["relative_to"] == "ours-fp32"
    c = rec["candidates"]
    for n in ("ours-fp32", "eager-fp32", "onnxruntime-fp32", "openvino-f32"):
        assert c[n]["rel_err_vs_reference_fp32"] <= 1e-5, n
    assert c["openvino-f32"]["precision"] == "f32"
    # bf16 runs stay near the reference but are not it (a runtime silently computing fp32 would be ~1e-6);
    # OpenVINO says which precision it ran (f32 on a CPU without bf16 instructions)
    bf16 = ["ours-bf16"] + (["openvino-bf16"] if c["openvino-bf16"]["precision"] == "bf16" else [])
    for n in bf16:
        assert 1e-4 < c[n]["rel_err_vs_reference_fp32"] < 0.2, n
    assert all(v["median_ms"] > 0 and v["samples"] == 2 for v in c.values())
    assert c["ours-fp32"]["time_over_first"] == 1.0


def test_missing_runtime_is_skipped_with_its_reason(case, monkeypatch):
    ref, x = case
    for mod in [m for m in sys.modules if m == "executorch" or m.startswith("executorch.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "executorch", None)  # import executorch... raises ImportError
    calls, skipped, _ = bench.e2e_candidates(ref, x, ["xnnpack-fp32", "ours-fp32"], log=lambda *_: None)
    assert list(calls) == ["ours-fp32"] and "executorch is not installed" in skipped["xnnpack-fp32"]


def test_baselines_refuse_what_they_cannot_run(case):
    ref, x = case
    with torch.inference_mode(), pytest.raises(baselines.BaselineUnavailable, match="inference_mode"):
        baselines.executorch_xnnpack(ref, x)
    with pytest.raises(baselines.BaselineUnavailable, match="fp32 CPU input"):
        baselines.onnxruntime_cpu(ref, x.bfloat16())
    calls, skipped, _ = bench.e2e_candidates(ref, x.bfloat16(), ["openvino-f32"], log=lambda *_: None)
    assert not calls and "fp32 CPU input" in skipped["openvino-f32"]


def test_openvino_precision_is_checked(case):
    with pytest.raises(ValueError, match="precision"):
        baselines.openvino_cpu(None, case[1], precision="fp8")


@pytest.mark.parametrize("spec", ["ours-int8", "openvino-fp16", "tensorrt-fp32", "ours"])
def test_unknown_candidate_names(spec):
    with pytest.raises(SystemExit, match="unknown end-to-end candidate"):
        bench.parse_e2e(spec)


def test_default_candidates():
    assert bench.default_e2e("cpu")[:2] == ["ours-fp32", "ours-bf16"]
    assert set(bench.E2E_FIXED) <= set(bench.default_e2e("cpu"))
    assert bench.default_e2e("cuda", torch.float16) == ["ours-fp16", "eager-fp16"]


def test_peaks_follow_the_cpu():
    """benches/peak.c builds and reports each peak the CPU has, and skips the others with the reason."""
    peaks = bench.peak_gflops(1)
    assert peaks["fma32"] and peaks["fma32"] > 0, peaks
    flags = report.cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags to compare with (not Linux)")
    for name, flag in (("vdpbf16ps", "avx512_bf16"), ("tdpbf16ps", "amx_bf16"), ("vfmadd231ph", "avx512_fp16")):
        if flag in flags and name != "tdpbf16ps":  # (AMX also needs the OS's permission)
            assert peaks[name] > 0 and name not in peaks["skipped"], peaks
        elif flag not in flags:
            assert peaks[name] is None and "the CPU has no" in peaks["skipped"][name], peaks
    best = bench.best_peaks(peaks, dict(peaks, fma32=peaks["fma32"] / 2))
    assert best["fma32"] == peaks["fma32"]


@pytest.mark.parametrize("amx", [False, True])
def test_record_carries_the_bounds(case, record, amx):
    """e2e_bounds on a real (tiny) record, with given peaks: every bound and the bf16 target's fractions."""
    ref, x = case
    flops = bench.model_flops(ref, x)
    peaks = dict(fma32=100.0, vdpbf16ps=200.0, tdpbf16ps=2000.0 if amx else None,
                 skipped={} if amx else {"tdpbf16ps": "the CPU has no AMX-TILE / AMX-BF16"})
    rec = copy.deepcopy(record)
    ov, ours = rec["candidates"]["openvino-bf16"], rec["candidates"]["ours-bf16"]
    ov["precision"] = "bf16"  # as OpenVINO reports it on a CPU with bf16 instructions
    bench.e2e_bounds(rec, flops, peaks, gemm_ceiling=50.0, bf16_gemm_ceiling=150.0)
    assert flops > 0 and rec["gflop"] == pytest.approx(flops / 1e9)
    assert rec["min_ms_at_fma_peak"] == pytest.approx(flops / 100e9 * 1e3)
    assert rec["min_ms_at_bf16_peak"] == pytest.approx(flops / 200e9 * 1e3)
    assert rec["min_ms_at_gemm_ceiling"] == pytest.approx(flops / 50e9 * 1e3)
    assert ("min_ms_at_amx_peak" in rec) == amx and ("tdpbf16ps" in rec["peaks_skipped"]) != amx
    t = rec["bf16_target"]
    assert t["target_ms"] == pytest.approx(bench.BF16_TARGET_OVER_OPENVINO * ov["median_ms"])
    assert t["target_needs_peak_fraction"] == pytest.approx(rec["min_ms_at_bf16_peak"] / t["target_ms"])
    assert t["ours_ms"] == ours["median_ms"]
    assert t["ours_peak_fraction"] == pytest.approx(rec["min_ms_at_bf16_peak"] / ours["median_ms"])
    assert ("target_needs_amx_peak_fraction" in t) == amx
    assert rec["min_ms_at_bf16_gemm_ceiling"] == pytest.approx(flops / 150e9 * 1e3)
    assert t["target_needs_bf16_gemm_ceiling_fraction"] == pytest.approx(rec["min_ms_at_bf16_gemm_ceiling"]
                                                                         / t["target_ms"])
    assert t["ours_bf16_gemm_ceiling_fraction"] == pytest.approx(rec["min_ms_at_bf16_gemm_ceiling"]
                                                                 / ours["median_ms"])
    assert all(c["gflops"] == pytest.approx(flops / c["median_ms"] / 1e6) for c in rec["candidates"].values())
    assert "bf16 target" in bench.e2e_bounds_line(rec)
    # no bf16 target where OpenVINO did not run at bf16 (a CPU without bf16 instructions); no bf16 bound
    # where the CPU lacks vdpbf16ps
    rec = copy.deepcopy(record)
    rec["candidates"]["openvino-bf16"]["precision"] = "f32"
    bench.e2e_bounds(rec, flops, dict(peaks, vdpbf16ps=None))
    assert rec["bf16_target"] is None and rec["min_ms_at_bf16_peak"] is None
    assert rec["min_ms_at_bf16_gemm_ceiling"] is None
    assert "n/a" in bench.e2e_bounds_line(rec)
