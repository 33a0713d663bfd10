"""bf16 on the CPU ops: mnv4::uib, mnv4_cpu::conv and mnv4_cpu::pointwise on bf16 activations (the bf16
microkernels of csrc/cpu/kernels/interface/ukernels_bf16.h), and the bf16 fused model end to end.

The ops keep every activation they write in bf16 (the uib's S, E, M tiles, the conv's projection row, the output)
and compute each stage in fp32 from bf16 inputs and bf16-rounded weights, with fp32 biases, rounding the stage's
output to bf16 once; on a convert-on-load bf16 table (no bf16 dot product: avx512, avx2, neon, scalar) the uib
keeps S, E, M in fp32 and the conv its projection's input, and each rounds only its output. Their reference is the
plain-torch composite computed in fp32 from the same bf16 inputs and weights, rounded to bf16 at the same points
(bf16_reference.py; staged_uib and staged_conv follow the running table). Tolerance: BF16_TOL = 2^-8, the unit
roundoff of bf16. Both sides round the same real values, up to the fp32 summation order (relative differences
~1e-6); they differ only where such a difference moves a value across a bf16 rounding boundary, a one-ulp
difference (<= 2^-7 relative) at a small fraction of the elements (about 1e-6 / 2^-8 of them), which then
propagates through the later stages scaled by their weights. The norm-wise relative error therefore stays far below
2^-8 (it is 0 on most cases here); a wrong operand, tap, bias or residual gives far more.

Accuracy contract (DESIGN.md): for each of the twelve models, the bf16 fused model's logits against the fp32
reference have a relative error at most 1.5x (fuse.LOW_PRECISION_ERROR_FACTOR) that of the reference itself
run in bf16 by PyTorch, both measured here on the same input. The same holds for fp16 (`fuse(ref,
dtype=torch.float16)` against the reference run in fp16 by PyTorch; test_accuracy_contract_fp16).
"""

import copy
import os
import textwrap

import pytest
import torch
import torch.nn.functional as TF

import mnv4_kernels
from mnv4_kernels import fuse
from mnv4_kernels.fuse import LOW_PRECISION_ERROR_FACTOR
from mnv4_reference.randomize import randomized_model
from mnv4_reference.testing import random_uib_args, rel_err, run_script, uib_battery
from conftest import SHARED
from bf16_reference import BF16_TOL, F16_TOL, round_to, staged_conv as _staged_conv, staged_uib as _staged_uib
from nan_reference import assert_nan_like

bf = torch.bfloat16


def _pythonpath():
    """This process's import path, so the subprocess imports the same package and this module."""
    import sys
    return os.pathsep.join([os.path.dirname(os.path.abspath(__file__))] + [p for p in sys.path if p])


def _check(out, ref, x, dtype=bf):
    """out (in dtype: bf16, or fp16 for tests/test_fp16_cpu.py) against ref within that dtype's tolerance, NaN
    where ref has NaN; channels_last exactly when x is."""
    assert out.dtype == dtype
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    assert out.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
    assert_nan_like(out.float(), ref, BF16_TOL if dtype == bf else F16_TOL)


BATTERY = uib_battery()[::2] + [c for c in uib_battery() if c.get("residual")]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", BATTERY, ids=[f"{i}" for i in range(len(BATTERY))])
def test_uib_bf16(case, layout):
    args = random_uib_args(**case, dtype=bf, channels_last=layout == "channels_last")
    out = torch.ops.mnv4.uib(*args)
    _check(out, _staged_uib(*args), args[0])


# Shapes for MNV4_UIB_SPLIT=mid (mid-channel slices, then the projection over the whole mid tensor): 14x14 and
# 7x7 planes, and two larger start dws; mid not a multiple of the bf16 slab width (32 or 16), odd mid and Cout;
# residual on and off; stride 2 on the mid dw and on the start dw; start dw only, mid dw only, both, neither;
# gelu; batch 1 and 2.
MID_SPLIT_CASES = [
    dict(n=1, cin=24, h=14, w=14, mid=96, cout=24, k_start=3, k_mid=5, residual=True),
    dict(n=2, cin=17, h=7, w=7, mid=45, cout=9, k_start=3, k_mid=3, stride=2),
    dict(n=1, cin=16, h=7, w=7, mid=100, cout=33, k_start=5, k_mid=0),
    dict(n=2, cin=32, h=14, w=14, mid=72, cout=32, k_start=0, k_mid=5, residual=True, activation="gelu"),
    dict(n=1, cin=40, h=7, w=7, mid=161, cout=40, k_start=0, k_mid=0, residual=True),
    dict(n=1, cin=8, h=14, w=14, mid=40, cout=7, k_start=3, k_mid=0, stride=2),
    dict(n=2, cin=64, h=7, w=7, mid=256, cout=64, k_start=5, k_mid=5, residual=True),
    dict(n=1, cin=48, h=14, w=14, mid=193, cout=80, k_start=3, k_mid=5, stride=2),
    # start dws of >= 256K multiply-adds, which the slices compute once, in row bands (Conv-S's blocks.2.0)
    dict(n=1, cin=64, h=28, w=28, mid=192, cout=96, k_start=5, k_mid=5, stride=2),
    dict(n=2, cin=40, h=20, w=18, mid=80, cout=40, k_start=5, k_mid=0, residual=True),
]

# The row-band and image-group schedules' cases (the mid-channel slices take MID_SPLIT_CASES)
SCHEDULE_CASES = [dict(n=4, cin=24, h=7, w=7, mid=96, cout=24, k_start=3, k_mid=5, residual=True),
                  dict(n=5, cin=17, h=4, w=3, mid=40, cout=9, k_start=0, k_mid=3, stride=2),
                  dict(n=3, cin=16, h=6, w=6, mid=48, cout=16, k_start=5, k_mid=0)]


def _check_uib_cases(cases, dtype=bf):
    """Each case (channels_last, in dtype) against the staged composite, then again with a NaN pixel channel in
    the last image: NaN where its taps reach, and only there."""
    for i, case in enumerate(cases):
        args = random_uib_args(**case, dtype=dtype, channels_last=True, seed=i)
        _check(torch.ops.mnv4.uib(*args), _staged_uib(*args), args[0], dtype)
        x = args[0].clone()
        x[-1, 1, x.shape[2] // 2, 1] = float("nan")
        args = (x,) + args[1:]
        ref = _staged_uib(*args)
        assert ref.isnan().any() and not ref.isnan().all()
        _check(torch.ops.mnv4.uib(*args), ref, x, dtype)


@pytest.mark.parametrize("split", ["rows", "mid", "images"])
def test_uib_bf16_schedules(split):
    """Each schedule the bf16 path takes, forced by MNV4_UIB_SPLIT, with 2 and 3 threads, against the staged
    composite; the mid-channel slices over MID_SPLIT_CASES, with a NaN in x as well."""
    script = textwrap.dedent("""
        import os, torch, test_bf16_model as t
        cases = t.MID_SPLIT_CASES if os.environ["MNV4_UIB_SPLIT"] == "mid" else t.SCHEDULE_CASES
        for threads in (2, 3):
            torch.set_num_threads(threads)
            t._check_uib_cases(cases)
        print("ok")
    """)
    env = dict(os.environ, MNV4_UIB_SPLIT=split, PYTHONPATH=_pythonpath())
    assert run_script(script, env=env).stdout.strip().endswith("ok")


def _table_skip(table):
    """Why `table` (a bf16 table name) cannot run on this CPU, or None."""
    import platform
    cpuinfo = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if table == "avx512" and " avx512bw " not in cpuinfo:
        return "the avx512 bf16 table needs an x86 CPU with AVX-512BW"
    if table == "avx2" and " avx2 " not in cpuinfo:
        return "the avx2 bf16 table needs an x86 CPU with AVX2"
    if table == "neon" and platform.machine() not in ("aarch64", "arm64"):
        return "the neon bf16 table needs an aarch64 CPU"
    return None


@pytest.mark.parametrize("table", ["avx512", "avx2", "neon", "scalar"])
def test_uib_bf16_forced_table(table):
    """The uib through each convert-on-load bf16 table (MNV4_CPU_LP_ISA) in a fresh process, where it keeps its
    intermediates in fp32 and rounds only its output: the battery in both layouts, then each schedule
    (MNV4_UIB_SPLIT) with 1 and 3 threads, with a NaN in x too, against staged_uib rounding at those points."""
    if _table_skip(table):
        pytest.skip(_table_skip(table))
    script = textwrap.dedent(f"""
        import os, torch, test_bf16_model as t
        from bf16_reference import uib_rounds_inside
        from mnv4_reference.testing import random_uib_args
        assert torch.ops.mnv4_cpu.lp_isa() == "{table}", torch.ops.mnv4_cpu.lp_isa()
        assert not uib_rounds_inside()
        for i, case in enumerate(t.BATTERY):
            for cl in (False, True):
                args = random_uib_args(**case, dtype=torch.bfloat16, channels_last=cl)
                t._check(torch.ops.mnv4.uib(*args), t._staged_uib(*args), args[0])
        for split, cs in (("rows", t.SCHEDULE_CASES), ("images", t.SCHEDULE_CASES), ("mid", t.MID_SPLIT_CASES)):
            os.environ["MNV4_UIB_SPLIT"] = split
            for threads in (1, 3):
                torch.set_num_threads(threads)
                t._check_uib_cases(cs)
        print("ok")
    """)
    out = run_script(script, timeout=600, env=dict(os.environ, MNV4_CPU_LP_ISA=table, PYTHONPATH=_pythonpath()))
    assert out.stdout.strip().endswith("ok"), out.stdout


@pytest.mark.parametrize("table", ["avx512", "avx2", "neon", "scalar"])
def test_conv_bf16_forced_table(table):
    """mnv4_cpu::conv through each convert-on-load bf16 table (MNV4_CPU_LP_ISA) in a fresh process, where it keeps
    the conv's output (the projection's input) in fp32 and rounds only the result: CONV_CASES in both layouts
    (NaN in x too), test_conv_cpu's battery (every third case: k 1/3/5/7, stride 1/2, borders, projection,
    residual, both x layouts) and its RGB image stems (the NCHW bands widened while converting, up to 256 x 256),
    with 1 and 3 threads, against staged_conv rounding at those points."""
    if _table_skip(table):
        pytest.skip(_table_skip(table))
    script = textwrap.dedent(f"""
        import torch, test_bf16_model as t, test_conv_cpu as c
        from bf16_reference import BF16_TOL, conv_rounds_inside, staged_conv
        from mnv4_reference.testing import rel_err
        assert torch.ops.mnv4_cpu.lp_isa() == "{table}", torch.ops.mnv4_cpu.lp_isa()
        assert not conv_rounds_inside()
        for threads in (1, 3):
            torch.set_num_threads(threads)
            for case in t.CONV_CASES:
                for layout in ("nchw", "channels_last"):
                    t._conv_case(case, layout)
            for case in c.BATTERY[::3]:
                args = c.random_conv_args(**dict(case, dtype=torch.bfloat16))
                pact = case.get("proj_activation") or "none"
                out = torch.ops.mnv4_cpu.conv(*args, False, pact)
                assert rel_err(out, staged_conv(*args, pact)) <= BF16_TOL, case
            for case in c.RGB_STEMS:
                args = c._rgb_args(case, torch.bfloat16, seed=40)
                out = torch.ops.mnv4_cpu.conv(*args, True)
                assert rel_err(out, staged_conv(*args)) <= BF16_TOL, case
        print("ok")
    """)
    out = run_script(script, timeout=600, env=dict(os.environ, MNV4_CPU_LP_ISA=table, PYTHONPATH=_pythonpath()))
    assert out.stdout.strip().endswith("ok"), out.stdout


@pytest.mark.parametrize("table", ["amx_emu", "amx_emu_portable"])
def test_conv_bf16_amx_tables(table):
    """mnv4_cpu::conv through the AMX kernel over its tile emulation (MNV4_CPU_LP_ISA; where the CPU has AMX,
    test_conv_cpu runs these on the native amx table too). There a window of at most 32 values (the 3-channel
    3x3 stems: 27) runs as one im2col product of K = 32 per pixel (conv.cpp): test_conv_cpu's C3_STEMS and
    RGB_STEMS (every border, band and tile remainder, projection, residual, both image layouts; the k = 5 stems
    as taps) with 1 and 2 threads, their NaN / inf sites in the image and in the weights (a corner weight outside
    the image on the border, where torch skips the tap), test_conv_cpu's battery cases whose window fits 32
    values (1 and 3 channels at k = 3, 1 at k = 5) and those with 2 channels (every window length the im2col
    copies: 3, 5, 6, 9), and CONV_CASES (the other shapes, as k taps), against staged_conv rounding the conv's
    output as a dot-product table does."""
    if table == "amx_emu" and _table_skip("avx512"):
        pytest.skip("the amx_emu table needs an x86 CPU with AVX-512BW (its epilogue)")
    script = textwrap.dedent(f"""
        import torch, test_bf16_model as t, test_conv_cpu as c
        from bf16_reference import BF16_TOL, conv_rounds_inside, staged_conv
        from mnv4_reference.testing import rel_err
        assert torch.ops.mnv4_cpu.lp_isa() == "{table}", torch.ops.mnv4_cpu.lp_isa()
        assert conv_rounds_inside()
        bf = torch.bfloat16
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for case in c.C3_STEMS:
                c.test_c3_stems(case, bf, threads)
            for case in c.RGB_STEMS:
                c.test_rgb_image_stems(case, bf, threads)
            for case in t.CONV_CASES:
                for layout in ("nchw", "channels_last"):
                    t._conv_case(case, layout)
            fits = [b for b in c.BATTERY if b["c"] * b.get("k", 3) ** 2 <= 32 and b.get("k", 3) > 1]
            for case in fits + [dict(b, c=2) for b in fits if b["c"] == 1 and b.get("k", 3) == 3]:
                args = c.random_conv_args(**dict(case, dtype=bf))
                pact = case.get("proj_activation") or "none"
                out = torch.ops.mnv4_cpu.conv(*args, False, pact)
                assert rel_err(out, staged_conv(*args, pact)) <= BF16_TOL, case
        for case in [c.C3_STEMS[i] for i in (3, 6, 7, 12, 14, 16)]:
            for act in ("relu", "none"):
                c.test_c3_stems_nonfinite(case, act, bf, 1)
        for case in c.RGB_STEMS[2:8]:
            c.test_rgb_image_stems_nan(case, bf)
        print("ok")
    """)
    out = run_script(script, timeout=900, env=dict(os.environ, MNV4_CPU_LP_ISA=table, PYTHONPATH=_pythonpath()))
    assert out.stdout.strip().endswith("ok"), out.stdout


def test_uib_bf16_nan():
    for stage in (0, 3, 5):  # a NaN in x, in the expand weight, in the mid dw weight's centre tap
        args = list(random_uib_args(n=2, cin=9, h=7, w=6, mid=27, cout=9, k_start=3, k_mid=5, dtype=bf,
                                    channels_last=True, seed=stage))
        t = args[stage].clone()
        if stage == 0:
            t[1, 4, 3, 2] = float("nan")
        elif stage == 3:
            t[5, 2] = float("nan")
        else:
            t[7, 0, 2, 2] = float("nan")
        args[stage] = t
        out = torch.ops.mnv4.uib(*args)
        ref = _staged_uib(*args)
        assert ref.isnan().any()
        _check(out, ref, args[0])


CONV_CASES = [  # (n, c, h, w, o, k, stride, proj P or None, residual, act, pact)
    (2, 3, 17, 15, 16, 3, 2, None, False, "relu", "none"),  # stem, NCHW image
    (1, 16, 9, 8, 40, 3, 2, 24, False, "relu", "none"),     # FusedIB, stride 2
    (2, 24, 7, 7, 72, 3, 1, 24, True, "relu", "none"),      # FusedIB with residual
    (1, 33, 6, 5, 17, 5, 1, None, False, "gelu", "none"),   # k 5, odd channels
    (1, 8, 1, 1, 20, 3, 1, 12, False, "relu", "relu"),      # 1 x 1 image, proj act (Conv-S cn pair)
]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", CONV_CASES, ids=[str(i) for i in range(len(CONV_CASES))])
def test_conv_bf16(case, layout):
    _conv_case(case, layout)


def _conv_case(case, layout, dtype=bf):
    """One CONV_CASES case in dtype against staged_conv (rounding as the running table), then with a NaN in x."""
    n, c, h, w, o, k, s, p, res, act, pact = case
    g = torch.Generator().manual_seed(n * c + h)
    x = torch.randn(n, c, h, w, generator=g).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    wt = (torch.randn(o, c, k, k, generator=g) / (c * k * k) ** 0.5).to(dtype)
    b = (0.1 * torch.randn(o, generator=g)).to(dtype)
    pw = (torch.randn(p, o, 1, 1, generator=g) / o ** 0.5).to(dtype) if p else None
    pb = (0.1 * torch.randn(p, generator=g)).to(dtype) if p else None
    out = torch.ops.mnv4_cpu.conv(x, wt, b, s, act, pw, pb, res, layout == "channels_last", pact)
    ref = _staged_conv(x, wt, b, s, act, pw, pb, res, pact)
    _check(out, ref, x, dtype)
    x2 = x.clone()
    x2[0, c // 2, h // 2, w // 2] = float("nan")
    _check(torch.ops.mnv4_cpu.conv(x2, wt, b, s, act, pw, pb, res, layout == "channels_last", pact),
           _staged_conv(x2, wt, b, s, act, pw, pb, res, pact), x2, dtype)


POINTWISE_SHAPES = [(2, 17, 5, 3), (1, 64, 1, 1), (3, 960), (1, 1280)]


@pytest.mark.parametrize("shape", POINTWISE_SHAPES)
@pytest.mark.parametrize("o", [7, 40, 1000])
def test_pointwise_bf16(shape, o):
    _pointwise_case(shape, o)


def _pointwise_case(shape, o, dtype=bf):
    """x [shape] in dtype (a NaN in the last channel of the first row) through a 1x1 conv to o channels + relu,
    against the composite in fp32 rounded once to dtype."""
    g = torch.Generator().manual_seed(o + shape[1])
    x = torch.randn(*shape, generator=g).to(dtype)
    if x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    c = shape[1]
    wt = (torch.randn(o, c, generator=g) / c ** 0.5).to(dtype)
    b = (0.1 * torch.randn(o, generator=g)).to(dtype)
    x[0, c - 1] = float("nan")
    out = torch.ops.mnv4_cpu.pointwise(x, wt if x.dim() == 2 else wt[:, :, None, None], b, "relu")
    ref = torch.relu(TF.linear(x.float().movedim(1, -1), wt.float(), b.float())).movedim(-1, 1)
    _check(out, round_to(ref, dtype), x, dtype)


# ---- the bf16 fused model ----

MODELS = ["mobilenetv4_conv_small", "mobilenetv4_conv_small_035", "mobilenetv4_conv_small_050",
          "mobilenetv4_conv_medium", "mobilenetv4_conv_large", "mobilenetv4_hybrid_medium",
          "mobilenetv4_hybrid_medium_075", "mobilenetv4_hybrid_large", "mobilenetv4_hybrid_large_075",
          "mobilenetv4_conv_aa_medium", "mobilenetv4_conv_blur_medium", "mobilenetv4_conv_aa_large"]
GOLDEN = {"mobilenetv4_conv_small": "mobilenetv4_conv_small_224",
          "mobilenetv4_hybrid_medium": "mobilenetv4_hybrid_medium_256"}


def _subject(name):
    """(reference model in fp32, input): the golden model and input where there is one, else a randomized
    model on a 2 x 3 x 96 x 96 input (small, and every stage keeps a plane of at least 3 x 3)."""
    if name in GOLDEN:
        from safetensors.torch import load_file
        from mnv4_reference import create_model
        folder = os.path.join(SHARED, "golden", GOLDEN[name])
        if os.path.isdir(folder):
            ref = create_model(name)
            ref.load_state_dict({k: v.float() for k, v in load_file(os.path.join(folder, "model.safetensors")).items()})
            return ref.eval(), load_file(os.path.join(folder, "io.safetensors"))["input"].float()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(5))
    # BN statistics from a batch that holds the input, at its resolution (randomize_): calibrated on other
    # images, the hybrids' residual stream drifts and their attention logits reach 1e2-1e4, the softmax
    # saturates, and every precision's error is 0.1-0.5, too large to tell a bug from rounding.
    calibration = torch.cat([x, torch.randn(14, 3, 96, 96, generator=torch.Generator().manual_seed(6))])
    return randomized_model(name, seed=3, calibration_input=calibration), x


def contract(name, dtype=bf):
    """(relative error of the fused model in `dtype`, of the reference run in `dtype` by torch), both against
    the fp32 reference, and the fused model."""
    ref, x = _subject(name)
    with torch.no_grad():
        want = ref(x)
        torch_low = copy.deepcopy(ref).to(dtype)(x.to(dtype)).float()
        fused = fuse(ref, backend="cpu", dtype=dtype)
        got = fused(x)
    assert got.dtype == dtype
    return rel_err(got.float(), want), rel_err(torch_low, want), fused


@pytest.mark.parametrize("name", MODELS)
def test_accuracy_contract(name):
    e_ours, e_torch, fused = contract(name)
    print(f"{name}: bf16 fused {e_ours:.3e}, torch bf16 {e_torch:.3e}")
    assert e_ours <= LOW_PRECISION_ERROR_FACTOR * e_torch, (e_ours, e_torch)
    # every step on the CPU ops, in one sequence call; only the anti-aliased and blur-pool models' stride-2
    # UIBs (a pool inside the block, which no op has) run as folded torch ops, as in fp32
    pooled = "_aa_" in name or "_blur_" in name
    backends = {b for _, _, b, _ in fused.steps}
    assert backends == ({"cpu", "composite"} if pooled else {"cpu"}), fused.summary()
    assert ("mnv4_cpu::sequence" in fused.summary()) == (not pooled), fused.summary()


@pytest.mark.parametrize("name", MODELS)
def test_accuracy_contract_fp16(name):
    """The same contract in fp16, against the reference run in fp16 by torch. On x86 the fp16 model keeps
    fp16 activations between steps and computes each step in fp32 (no fp16 microkernels there), so its error
    is about that of rounding those activations: on Zen 4, 0.40-1.15x torch fp16's (which also rounds inside
    each op), within the bound everywhere. torch's fp16 reference does not overflow here (activations stay
    below ~300, far from fp16's 65504) but is slow on the CPU: its fp16 convolutions take the reference path
    (aten::_slow_conv2d_forward, depthwise ones group by group), ~3.5 s for the golden Hybrid-M@256 against
    0.14 s in bf16, most of this test's time."""
    e_ours, e_torch, fused = contract(name, torch.float16)
    print(f"{name}: fp16 fused {e_ours:.3e}, torch fp16 {e_torch:.3e}")
    assert e_ours <= LOW_PRECISION_ERROR_FACTOR * e_torch, (e_ours, e_torch)
    pooled = "_aa_" in name or "_blur_" in name
    assert {b for _, _, b, _ in fused.steps} == ({"cpu", "composite"} if pooled else {"cpu"}), fused.summary()


@pytest.mark.parametrize("table", ["avx512", "avx2", "scalar"])
def test_accuracy_contract_forced_table(table):
    """The same contract through the convert-on-load (x86 with AVX-512; with AVX2) and scalar bf16 tables
    (MNV4_CPU_LP_ISA), one model; the subprocess checks that the table it asked for is the one that ran."""
    if _table_skip(table):
        pytest.skip(_table_skip(table))
    script = textwrap.dedent(f"""
        import torch, test_bf16_model as t
        assert torch.ops.mnv4_cpu.lp_isa() == "{table}", torch.ops.mnv4_cpu.lp_isa()
        e_ours, e_torch, _ = t.contract("mobilenetv4_conv_small_050")
        print(f"{{e_ours:.6e}} {{e_torch:.6e}}")
        assert e_ours <= t.LOW_PRECISION_ERROR_FACTOR * e_torch, (e_ours, e_torch)
        print("ok")
    """)
    out = run_script(script, env=dict(os.environ, MNV4_CPU_LP_ISA=table, PYTHONPATH=_pythonpath())).stdout
    assert out.strip().endswith("ok"), out
