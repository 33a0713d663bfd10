"""torch.ops.mnv4.uib on the CPU (csrc/cpu/uib.cpp) against the composite mnv4_reference.functional.uib.

Correctness over the edge-case battery (NCHW, channels_last, non-contiguous; fp32, fp16, bf16), output
layout vs the fake kernel, opcheck, torch.compile / torch.export, zero batch, rejected input (in a
subprocess that must exit normally), and the scalar microkernels end to end (MNV4_CPU_ISA=scalar).
"""

import os
import textwrap

import pytest
import torch

import mnv4_kernels
from mnv4_kernels import ops as mops
from mnv4_reference import functional as F
from mnv4_reference.testing import (NON_CONTIGUOUS_KINDS, UIB_FORMS, OpModule, non_contiguous, random_uib_args,
                                    rel_err, run_script, uib_battery)
from bf16_reference import BF16_TOL, F16_TOL, f16_on_kernels, staged_uib
from nan_reference import assert_nan_like, conv2d_inside_taps

BATTERY = uib_battery()
FP32_TOL = 1e-5
# fp16: the op computes in fp32 from the fp16 inputs and rounds once at the end, so against the fp32
# composite on the same (upcast) inputs the only error is that rounding: |fl(y) - y| <= u |y| element-wise,
# hence rel_err <= u (u = 2^-11) plus the fp32 compute error (<= FP32_TOL). bf16 keeps each stage's output in
# bf16 (csrc/cpu/uib.cpp): against the composite rounded at the same points (bf16_reference.py), BF16_TOL.
UNIT_ROUNDOFF = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}


def _ids(cases):
    return [f"{i}-cin{c['cin']}-mid{c['mid']}-hw{c['h']}x{c['w']}-ks{c['k_start']}-km{c['k_mid']}-s{c['stride']}"
            for i, c in enumerate(cases)]


def _upcast(args):
    return tuple(a.float() if isinstance(a, torch.Tensor) else a for a in args)


def _expected_strides(args):
    return mops._uib_fake(*args).stride()


def test_cpu_kernel_registered():
    assert mnv4_kernels.backends()["cpu"].available
    assert "uib" in mnv4_kernels.backends()["cpu"].ops
    assert torch.ops.mnv4_cpu.isa() in ("avx512", "avx2_fma", "neon", "scalar")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", BATTERY, ids=_ids(BATTERY))
def test_battery_fp32(case, layout):
    args = random_uib_args(**case, channels_last=layout == "channels_last")
    out = torch.ops.mnv4.uib(*args)
    ref = F.uib(*args)
    assert out.dtype == torch.float32
    assert out.stride() == _expected_strides(args)
    assert rel_err(out, ref) <= FP32_TOL


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", BATTERY[::3], ids=_ids(BATTERY[::3]))
def test_battery_low_precision(case, dtype):
    for cl in (False, True):
        args = random_uib_args(**case, dtype=dtype, channels_last=cl)
        out = torch.ops.mnv4.uib(*args)
        assert out.dtype == dtype and out.stride() == _expected_strides(args)
        if dtype == torch.bfloat16 or f16_on_kernels():  # stages rounded to dtype: see bf16_reference.py
            assert rel_err(out, staged_uib(*args)) <= (BF16_TOL if dtype == torch.bfloat16 else F16_TOL)
        else:
            assert rel_err(out, F.uib(*_upcast(args))) <= UNIT_ROUNDOFF[dtype] + FP32_TOL


NONCONTIG_CASES = [c for c in BATTERY if c["h"] > 1 and c["w"] > 1][::4]


@pytest.mark.parametrize("kind", NON_CONTIGUOUS_KINDS)
@pytest.mark.parametrize("case", NONCONTIG_CASES, ids=_ids(NONCONTIG_CASES))
def test_non_contiguous(case, kind):
    args = list(random_uib_args(**case))
    args[0] = non_contiguous(args[0], kind)
    assert not args[0].is_contiguous()
    out = torch.ops.mnv4.uib(*args)
    assert out.stride() == _expected_strides(args)
    assert rel_err(out, F.uib(*args)) <= FP32_TOL


def test_ambiguous_layouts_follow_the_fake_kernel():
    # C == 1 or H == W == 1: NCHW- and channels_last-contiguous at once -> NCHW output, as the fake says.
    for case in (dict(n=2, cin=1, h=5, w=4, mid=8, cout=3), dict(n=2, cin=6, h=1, w=1, mid=8, cout=3)):
        args = random_uib_args(**case, channels_last=True)
        out = torch.ops.mnv4.uib(*args)
        assert out.stride() == _expected_strides(args)
        assert rel_err(out, F.uib(*args)) <= FP32_TOL


def test_batch_8_larger_block():
    # A real MobileNetV4-Conv-M layer shape (3.1) at batch 8: many bands and tasks in flight.
    args = random_uib_args(8, 256, 7, 7, 1024, 256, k_start=5, k_mid=5, channels_last=True, seed=7)
    assert rel_err(torch.ops.mnv4.uib(*args), F.uib(*args)) <= FP32_TOL
    args = random_uib_args(1, 80, 28, 28, 160, 80, k_start=3, k_mid=3, seed=8)
    assert rel_err(torch.ops.mnv4.uib(*args), F.uib(*args)) <= FP32_TOL


def test_threads_do_not_change_the_result():
    args = random_uib_args(1, 24, 13, 11, 72, 24, k_start=3, k_mid=5, seed=3)
    old = torch.get_num_threads()
    try:
        outs = []
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            outs.append(torch.ops.mnv4.uib(*args))
    finally:
        torch.set_num_threads(old)
    ref = F.uib(*args)
    for o in outs:
        assert rel_err(o, ref) <= FP32_TOL


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_zero_batch(layout):
    args = random_uib_args(1, 8, 6, 5, 16, 12, stride=2, channels_last=layout == "channels_last")
    x = args[0][:0]
    out = torch.ops.mnv4.uib(x, *args[1:])
    assert out.shape == (0, 12, 3, 3)
    assert out.stride() == _expected_strides((x,) + args[1:])


OPCHECK_CASES = {
    "contiguous": dict(n=2, cin=5, h=6, w=7, mid=12, cout=5, k_start=3, k_mid=5),
    "channels_last": dict(n=1, cin=8, h=5, w=5, mid=16, cout=6, k_start=5, k_mid=3, stride=2, channels_last=True),
    "non_contiguous": dict(n=2, cin=4, h=6, w=6, mid=8, cout=4, k_start=3, k_mid=0, activation="gelu"),
}


@pytest.mark.parametrize("name", list(OPCHECK_CASES))
def test_opcheck(name):
    args = list(random_uib_args(**OPCHECK_CASES[name]))
    if name == "non_contiguous":
        args[0] = non_contiguous(args[0], "sliced")
    torch.library.opcheck(torch.ops.mnv4.uib.default, tuple(args))


def test_compile_and_export():
    args = random_uib_args(2, 16, 9, 9, 48, 16, k_start=3, k_mid=5, channels_last=True, seed=11)
    m = OpModule(mnv4_kernels.uib, args[1:]).eval()
    x = args[0]
    want = torch.relu(F.uib(*args)) + 1.0
    compiled = torch.compile(m, fullgraph=True, backend="inductor")
    assert rel_err(compiled(x), want) <= FP32_TOL
    ep = torch.export.export(m, (x,))
    assert any("mnv4.uib" in str(n.target) for n in ep.graph.nodes)
    assert rel_err(ep.module()(x), want) <= FP32_TOL


BAD_INPUT_SCRIPT = textwrap.dedent(r"""
    import torch, mnv4_kernels
    from mnv4_reference.testing import check_rejections, random_uib_args
    uib = torch.ops.mnv4.uib
    x, sw, sb, ew, eb, mw, mb, pw, pb, stride, res, act = random_uib_args(2, 8, 6, 6, 16, 8, k_start=3, k_mid=3)
    good = [x, sw, sb, ew, eb, mw, mb, pw, pb, 1, True, "relu"]
    def call(**kw):
        a = list(good)
        names = ["x", "sw", "sb", "ew", "eb", "mw", "mb", "pw", "pb", "stride", "res", "act"]
        for k, v in kw.items():
            a[names.index(k)] = v
        return uib(*a)
    cases = {
        "x must be 4-D": dict(x=x[0]),
        "expand_w must have 8 input channels": dict(ew=torch.randn(16, 7, 1, 1)),
        "start_dw_w must have 8 channels": dict(sw=torch.randn(7, 1, 3, 3)),
        "mid_dw_w must have 16 channels": dict(mw=torch.randn(15, 1, 3, 3)),
        "proj_w must have 16 input channels": dict(pw=torch.randn(8, 15, 1, 1)),
        "expand_b must have shape [16]": dict(eb=torch.randn(15)),
        "proj_b must have shape [8]": dict(pb=torch.randn(9)),
        "start_dw_b must have shape [8]": dict(sb=torch.randn(3)),
        "mid_dw_w must have an odd kernel size": dict(mw=torch.randn(16, 1, 4, 4)),
        "start_dw_w must be square": dict(sw=torch.randn(8, 1, 3, 5)),
        "stride must be 1 or 2": dict(stride=3, res=False),
        "residual=True needs stride=1": dict(stride=2),
        "residual=True needs Cin == Cout": dict(pw=torch.randn(6, 16, 1, 1), pb=torch.randn(6)),
        "expand_w has dtype": dict(ew=ew.double()),
        "x must be float32, float16 or bfloat16": dict(x=x.double()),
        "activation must be one of": dict(act="swish"),
        "mid_dw_w and mid_dw_b must be given together": dict(mb=None),
        "start_dw_w and start_dw_b must be given together": dict(sb=None),
        "stride=2 needs a depthwise conv": dict(sw=None, sb=None, mw=None, mb=None, stride=2, res=False),
    }
    raise SystemExit(check_rejections(call, cases))
""")


def test_bad_input_raises_in_subprocess():
    assert "checked 19" in run_script(BAD_INPUT_SCRIPT).stdout


ENV_SCRIPT = textwrap.dedent(r"""
    import os, platform, sys, torch, mnv4_kernels
    from mnv4_reference import functional as F
    from mnv4_reference.testing import random_uib_args, rel_err, uib_battery
    want_isa = os.environ.get("MNV4_CPU_ISA")
    if want_isa == "scalar":
        assert torch.ops.mnv4_cpu.isa() == "scalar", torch.ops.mnv4_cpu.isa()
    if want_isa == "avx2" and platform.machine() in ("x86_64", "AMD64"):  # the AVX2 NHWC kernels too
        assert torch.ops.mnv4_cpu.isa() == "avx2_fma", torch.ops.mnv4_cpu.isa()
    torch.set_num_threads(int(sys.argv[1]))
    worst = 0.0
    cases = uib_battery()[int(sys.argv[2])::2]
    for i, c in enumerate(cases):
        args = random_uib_args(**c, channels_last=bool(i % 2))
        worst = max(worst, rel_err(torch.ops.mnv4.uib(*args), F.uib(*args)))
    for n, cl in ((1, False), (5, True)):  # 7x7 layers: batch 1; batch 5 (groups of images with a remainder)
        for ks, km in ((5, 5), (0, 0), (3, 0), (0, 3)):
            args = random_uib_args(n, 24, 7, 7, 96, 24, k_start=ks, k_mid=km, seed=5, channels_last=cl)
            worst = max(worst, rel_err(torch.ops.mnv4.uib(*args), F.uib(*args)))
    # start dws large enough (>= 256K multiply-adds) that the mid-channel slices compute them once, in row bands
    for c in ({"n": 1, "cin": 64, "h": 28, "w": 28, "mid": 192, "cout": 96, "k_start": 5, "k_mid": 5, "stride": 2},
              {"n": 2, "cin": 40, "h": 20, "w": 18, "mid": 80, "cout": 40, "k_start": 5, "k_mid": 0, "residual": True}):
        args = random_uib_args(**c, channels_last=True)
        worst = max(worst, rel_err(torch.ops.mnv4.uib(*args), F.uib(*args)))
    print("worst", worst, torch.ops.mnv4_cpu.isa())
    raise SystemExit(0 if worst <= 1e-5 else 1)
""")


# The microkernel tables end to end (scalar, and avx2 on a CPU whose default is avx512, forced by
# MNV4_CPU_ISA), and the schedules of the fused pass (MNV4_UIB_SPLIT: row bands with a rolling window,
# mid-channel slices with a reduction, or several whole channels_last images per task),
# whatever this machine's thread count would pick, with 1 to 6 threads (6: three slices per image at batch 2).
@pytest.mark.parametrize("env,threads,half", [
    ({"MNV4_CPU_ISA": "scalar"}, 2, 0),
    ({"MNV4_CPU_ISA": "avx2"}, 2, 1),
    ({"MNV4_CPU_ISA": "scalar", "MNV4_UIB_SPLIT": "mid"}, 3, 1),
    ({"MNV4_UIB_SPLIT": "mid"}, 3, 0),
    ({"MNV4_UIB_SPLIT": "mid"}, 2, 1),
    ({"MNV4_UIB_SPLIT": "mid"}, 6, 0),
    ({"MNV4_UIB_SPLIT": "rows"}, 3, 1),
    ({"MNV4_UIB_SPLIT": "rows"}, 1, 0),
    ({"MNV4_UIB_SPLIT": "images"}, 2, 0),
    ({"MNV4_UIB_SPLIT": "images"}, 1, 1),
], ids=["scalar", "avx2", "scalar-mid", "mid-3t", "mid-2t", "mid-6t", "rows-3t", "rows-1t", "images-2t", "images-1t"])
def test_forced_paths_end_to_end(env, threads, half):
    e = dict(os.environ, **env)
    run_script(ENV_SCRIPT, str(threads), str(half), timeout=600, env=e)


def _sliced_weight(w):
    """w with one of its dims of size > 1 read two apart (NaN between): neither contiguous nor innermost."""
    d = 1 if w.shape[1] > 1 else 3  # 1x1 weights: the input channels; depthwise [C, 1, k, k]: the columns
    shape = list(w.shape)
    shape[d] *= 2
    wide = torch.full(shape, float("nan"), dtype=w.dtype)
    idx = [slice(None)] * 4
    idx[d] = slice(None, None, 2)
    wide[tuple(idx)] = w
    return wide[tuple(idx)]


def _padded_innermost(w):
    """Output channel innermost (unit stride) as channels_innermost, but each run of O values padded to O + 3
    (NaN in the padding): a reader that assumes the innermost pitch is O shows it."""
    o = w.shape[0]
    buf = torch.full(tuple(w.permute(1, 2, 3, 0).shape[:3]) + (o + 3,), float("nan"), dtype=w.dtype)
    buf[..., :o] = w.permute(1, 2, 3, 0)
    return buf[..., :o].permute(3, 0, 1, 2)


WEIGHT_STRIDE_KINDS = {"innermost": mops.channels_innermost, "sliced": _sliced_weight,
                       "padded_innermost": _padded_innermost}
WEIGHT_STRIDE_CASES = [c for c in BATTERY if c["h"] > 1 and c["w"] > 1 and c["k_start"] and c["k_mid"]][::3] + \
    [c for c in BATTERY if c.get("residual") or not (c["k_start"] or c["k_mid"])][:3]


# The uib weights in other strides (the NHWC path reads channels_innermost weights in place, any others via a
# copy), the biases as every-other-element views: same result as the composite. Weight positions in the
# schema: start_dw_w 1, expand_w 3, mid_dw_w 5, proj_w 7; their biases follow them.
@pytest.mark.parametrize("kind", list(WEIGHT_STRIDE_KINDS))
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", WEIGHT_STRIDE_CASES, ids=_ids(WEIGHT_STRIDE_CASES))
def test_weight_strides(case, layout, kind):
    args = list(random_uib_args(**case, channels_last=layout == "channels_last"))
    ref = F.uib(*args)
    for i in (1, 3, 5, 7):
        if args[i] is not None:
            w = WEIGHT_STRIDE_KINDS[kind](args[i])
            assert torch.equal(w, args[i])
            if kind != "innermost" or (args[i].shape[0] > 1 and args[i][0].numel() > 1):
                assert not w.is_contiguous(), (i, kind, w.shape, w.stride())
            args[i] = w
            b = args[i + 1]
            args[i + 1] = torch.full((2 * b.numel(),), float("nan"), dtype=b.dtype)[::2].copy_(b)
    out = torch.ops.mnv4.uib(*args)
    assert rel_err(out, ref) <= FP32_TOL
    assert out.stride() == _expected_strides(args)


def test_packed_weights_of_views_sharing_storage():
    """proj_w as the transposed view of expand_w (one storage, one offset, other strides): the packed-weight
    cache keys on the strides too, so each weight gets its own packed copy."""
    for k_mid in (3, 0):
        args = list(random_uib_args(2, 24, 5, 5, 24, 24, k_start=0, k_mid=k_mid, channels_last=True, seed=31))
        args[7] = args[3].transpose(0, 1)
        assert args[7].untyped_storage().data_ptr() == args[3].untyped_storage().data_ptr()
        assert rel_err(torch.ops.mnv4.uib(*args), F.uib(*args)) <= FP32_TOL, k_mid


# The NHWC path packs the 1x1 weights once per weight tensor (csrc/cpu/weight_cache.h). A stale entry would
# silently compute with old weights: these tests change, free and replace weights between calls.
def _cl_args(seed, **kw):
    return list(random_uib_args(1, 16, 7, 7, 48, 16, k_start=3, k_mid=3, channels_last=True, seed=seed, **kw))


def test_packed_weights_follow_in_place_updates():
    args = _cl_args(21)
    assert rel_err(torch.ops.mnv4.uib(*args), F.uib(*args)) <= FP32_TOL
    before = torch.ops.mnv4.uib(*args)
    with torch.no_grad():
        args[3].mul_(1.5)   # expand_w, in place: same storage, new version
        args[7][:, :5].neg_()  # proj_w, part of it through a view
    after = torch.ops.mnv4.uib(*args)
    assert rel_err(after, F.uib(*args)) <= FP32_TOL
    assert rel_err(after, before) > 1e-2


def test_packed_weights_of_freed_tensors_are_not_reused():
    import gc
    for seed in range(6):  # new weights, often at the addresses of the previous ones
        args = _cl_args(100 + seed)
        assert rel_err(torch.ops.mnv4.uib(*args), F.uib(*args)) <= FP32_TOL, seed
        del args
        gc.collect()
    args = _cl_args(200)
    torch.ops.mnv4.uib(*args)
    n = torch.ops.mnv4_cpu.packed_cache_entries()
    assert n >= 2
    del args
    gc.collect()
    assert torch.ops.mnv4_cpu.packed_cache_entries() <= n - 2  # the freed weights' entries are gone


@pytest.mark.parametrize("huge", ["1", "0"])
def test_packed_weights_in_either_page_kind(huge, monkeypatch):
    """The packed copies live in chunks advised for huge pages, or (MNV4_HUGEPAGES=0) in 4 KB-page chunks; a
    change of the setting opens a new chunk. Several blocks' weights share a chunk either way."""
    monkeypatch.setenv("MNV4_HUGEPAGES", huge)
    cases = [_cl_args(400 + i) for i in range(3)]
    for args in cases:
        assert rel_err(torch.ops.mnv4.uib(*args), F.uib(*args)) <= FP32_TOL
    for args in cases:  # again, from the cached copies
        assert rel_err(torch.ops.mnv4.uib(*args), F.uib(*args)) <= FP32_TOL


def test_inference_mode_weights_are_read_in_place():
    with torch.inference_mode():
        args = _cl_args(300)  # inference tensors: no version counter, so never cached
        assert rel_err(torch.ops.mnv4.uib(*args), F.uib(*args)) <= FP32_TOL
        args[3].mul_(0.5)
        assert rel_err(torch.ops.mnv4.uib(*args), F.uib(*args)) <= FP32_TOL



# NaN as through the composite (DESIGN.md: "NaN propagates as through torch.relu / gelu"): a NaN in x (an
# interior and a corner pixel) or in one weight (a dw weight's centre tap or corner tap, an expand weight, a
# proj bias) gives NaN exactly where the composite has it, and the other outputs as usual. A corner tap lies
# outside the image at the borders: there the composite's dw convs are conv2d_inside_taps (tests/
# nan_reference.py: torch's own convs differ there by implementation). tests/test_nan.py reruns these under
# each microkernel table (MNV4_CPU_ISA) and schedule (MNV4_UIB_SPLIT).
NAN_SITES = ("x", "x_corner", "start_dw_corner", "start_dw_centre", "mid_dw_corner", "mid_dw_centre", "expand_w",
             "proj_b")


def _with_nan(args, site):
    """args with one NaN at `site` (x: channel 1, the middle pixel; x_corner: channel 0, pixel (0, 0); a dw
    weight: channel 1's tap (0, 0) or its centre; expand_w: [1, 0]; proj_b: [0]), or None where the block has
    no such tensor."""
    slot = {"x": 0, "x_corner": 0, "start_dw_corner": 1, "start_dw_centre": 1, "expand_w": 3, "mid_dw_corner": 5,
            "mid_dw_centre": 5, "proj_b": 8}[site]
    if args[slot] is None:
        return None
    t = args[slot].clone()  # keeps x's memory format
    if site == "x":
        index = (0, 1, t.shape[2] // 2, t.shape[3] // 2)
    elif site.endswith("centre"):
        index = (1, 0, t.shape[2] // 2, t.shape[3] // 2)
    else:
        index = {"x_corner": (0, 0, 0, 0), "proj_b": (0,)}.get(site, (1, 0, 0, 0))
    t[index] = float("nan")
    return args[:slot] + (t,) + args[slot + 1:]


def _dw_inside_taps(x, w, b, stride):
    return conv2d_inside_taps(x, w, b, stride, groups=x.shape[1])


NAN_CASES = [dict(n=2, cin=11, h=9, w=7, mid=40, cout=11, stride=1),  # residual
             dict(n=1, cin=8, h=8, w=8, mid=24, cout=16, stride=2),
             dict(n=1, cin=5, h=1, w=6, mid=16, cout=9, stride=1)]


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("activation", ["relu", "gelu", "none"])
@pytest.mark.parametrize("form", list(UIB_FORMS))
def test_nan_propagates_as_in_the_composite(form, activation, layout, monkeypatch):
    has_s, has_m = UIB_FORMS[form]
    checked = 0
    for i, case in enumerate(NAN_CASES):
        if case["stride"] == 2 and not (has_s or has_m):
            continue
        args = random_uib_args(**case, k_start=(3, 5, 3)[i] if has_s else 0, k_mid=(5, 3, 3)[i] if has_m else 0,
                               activation=activation, seed=40 + i, channels_last=layout == "channels_last")
        for site in NAN_SITES:
            a = _with_nan(args, site)
            if a is None:
                continue
            out = torch.ops.mnv4.uib(*a)
            with monkeypatch.context() as m:
                if site.endswith("corner") and site != "x_corner":
                    m.setattr(F, "_dw", _dw_inside_taps)
                ref = F.uib(*a)
            # (a 1-row image never reaches a dw weight's top row: then no output is NaN)
            assert ref.isnan().any() or (site.endswith("dw_corner") and case["h"] == 1), site
            assert_nan_like(out, ref, FP32_TOL)
            checked += 1
    assert checked >= 8


def test_nan_in_low_precision():
    for dtype in (torch.float16, torch.bfloat16):
        args = _with_nan(random_uib_args(2, 11, 9, 7, 40, 11, dtype=dtype, seed=3, channels_last=True), "x")
        out, ref = torch.ops.mnv4.uib(*args), F.uib(*_upcast(args))
        assert out.dtype == dtype
        assert torch.equal(out.isnan(), ref.isnan())
        assert not out.isnan().all()
