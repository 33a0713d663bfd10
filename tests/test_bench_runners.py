"""The end-to-end runner behind `run`, `bench` and benches/e2e_cpu.py: every baseline computes the reference's
logits on the same input, a baseline that cannot be built is skipped with its reason, and names are checked."""

import sys

import pytest
import torch

from mnv4_kernels import baselines, bench


@pytest.fixture(scope="module")
def case():
    return bench.e2e_reference("mobilenetv4_conv_small", 64, 2, seed=3)


def test_every_baseline_computes_the_reference(case):
    ref, x = case
    names = ["ours-fp32", "eager-fp32", "onnxruntime-fp32", "openvino-f32", "openvino-bf16", "ours-bf16"]
    rec = bench.e2e_case(ref, x, names, threads=2, repeats=2, warmup=1, blocks=dict(inner=1, settle=0, gap_s=0),
                         log=lambda *_: None)
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
