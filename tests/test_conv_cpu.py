"""torch.ops.mnv4_cpu.conv on the CPU (csrc/cpu/conv.cpp) against plain torch in float64: act(conv2d(x, weight,
bias, stride, padding k // 2)) [-> 1x1 projection + bias] [+ x].

Correctness over a shape battery (kernel 1 / 3 / 5 / 7, stride 1 / 2, channels 1, 3, below / at / above the
vector widths, images 1x1, odd, even and wider than tall, so every border case of the in-place / padded-strip
split is hit; with and without the fused projection and the residual; weights contiguous and output-channel
innermost; 1 and 2 threads), the real MobileNetV4 shapes (stem, Conv-S cn convs, FusedIB), x layouts
(NCHW, channels_last, non-contiguous) with the output strides vs the fake kernel, fp16 / bf16, in-place weight
updates after the weight was packed, opcheck, torch.compile / torch.export, zero batch, and rejected input (in
a subprocess that must exit normally).
"""

import platform
import textwrap

import pytest
import torch
import torch.nn.functional as TF

import mnv4_kernels  # noqa: F401  (registers the op and its fake)
from mnv4_kernels import ops as mops
from mnv4_reference.testing import NON_CONTIGUOUS_KINDS, OpModule, non_contiguous, rel_err, run_script
from bf16_reference import BF16_TOL, F16_TOL, f16_on_kernels, staged_conv
from nan_reference import assert_nan_like, conv2d_inside_taps

conv = torch.ops.mnv4_cpu.conv
FP32_TOL = 1e-5
UNIT_ROUNDOFF = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}  # see test_pointwise_cpu.py
ACTS = {"relu": torch.relu, "gelu": lambda t: TF.gelu(t, approximate="none"), "none": lambda t: t}


def reference(x, weight, bias, stride, activation, proj_w=None, proj_b=None, residual=False,
              dtype=torch.float64, proj_activation="none", conv2d=TF.conv2d):
    def t(v):
        return None if v is None else v.to(dtype)

    k = weight.shape[-1]
    y = ACTS[activation](conv2d(t(x), t(weight), t(bias), stride, k // 2))
    if proj_w is not None:
        y = ACTS[proj_activation](conv2d(y, t(proj_w), t(proj_b)))
    return y + t(x) if residual else y


def random_conv_args(n, c, o, hw, k=3, stride=1, proj=None, bias=True, proj_bias=True, residual=False,
                     activation="relu", innermost=False, channels_last=False, dtype=torch.float32, seed=0,
                     proj_activation=None):
    """(x, weight, bias, stride, activation, proj_w, proj_b, residual): fresh random values, never 0.
    proj_activation (a battery field) is not among them: the callers pass it to the op and the reference."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    x = rnd(n, c, *hw)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = rnd(o, c, k, k, scale=(c * k * k) ** -0.5)
    pw = rnd(proj, o, 1, 1, scale=o ** -0.5) if proj else None
    if innermost:
        w = mops.channels_innermost(w)
        pw = None if pw is None else mops.channels_innermost(pw)
    b = rnd(o, scale=0.5) if bias else None
    pb = rnd(proj, scale=0.5) if proj and proj_bias else None
    return x, w, b, stride, activation, pw, pb, residual


def _battery():
    geoms = [(1, (1, 1)), (2, (7, 7)), (1, (5, 3)), (1, (8, 9)), (2, (13, 10)), (1, (2, 6))]
    chans = [(1, 1), (3, 16), (3, 33), (8, 16), (17, 33), (32, 48), (16, 7)]
    cases = []
    i = 0
    for k in (1, 3, 5):
        for s in (1, 2):
            for c, o in chans:
                n, hw = geoms[i % len(geoms)]
                proj = (None, 7, 48)[i % 3]
                out = proj or o
                residual = s == 1 and out == c and i % 2 == 0
                # the projection's own activation (mnv4_cpu::sequence's conv + `cn` 1x1 steps)
                proj_act = ("none", "relu", "gelu", "none")[i % 4] if proj else "none"
                cases.append(dict(n=n, c=c, o=o, hw=hw, k=k, stride=s, proj=proj, residual=residual,
                                  proj_activation=proj_act,
                                  activation=("relu", "gelu", "none")[(i // 2) % 3], bias=i % 4 != 3,
                                  proj_bias=i % 5 != 4, innermost=i % 2 == 1, channels_last=i % 3 == 1, seed=i))
                i += 1
    # residual cases (stride 1, out channels == in channels), with and without the projection
    for k, c, o, proj, hw in ((3, 16, 16, None, (6, 5)), (3, 16, 40, 16, (7, 7)), (5, 24, 24, None, (9, 4)),
                              (1, 8, 32, 8, (3, 3))):
        cases.append(dict(n=2, c=c, o=o, hw=hw, k=k, stride=1, proj=proj, residual=True, activation="relu",
                          innermost=True, channels_last=True, seed=i))
        i += 1
    # an even kernel is rejected; an odd one above 5 runs (k = 7 on a 5x5 image: every pixel is a border one)
    cases.append(dict(n=1, c=4, o=9, hw=(5, 5), k=7, stride=2, activation="gelu", seed=i))
    cases.append(dict(n=1, c=4, o=9, hw=(11, 12), k=7, stride=1, proj=5, activation="relu", seed=i + 1))
    cases.append(dict(n=1, c=4, o=9, hw=(15, 16), k=7, stride=2, activation="relu", seed=i + 2))  # interior rows
    # interior rows without an interior column (W <= 2 * (k // 2) < H), and the transpose of that
    cases.append(dict(n=2, c=5, o=17, hw=(6, 2), k=3, stride=1, proj=6, activation="gelu", seed=i + 3))
    cases.append(dict(n=1, c=5, o=17, hw=(9, 6), k=7, stride=1, activation="relu", seed=i + 4))
    cases.append(dict(n=1, c=5, o=17, hw=(2, 6), k=3, stride=1, activation="none", seed=i + 5))
    # one image whose row bands do not come out even: 26 output rows over 2 threads in 10 bands of 2 or 3 rows
    cases.append(dict(n=1, c=8, o=16, hw=(51, 20), k=3, stride=2, proj=7, activation="relu", seed=i + 6))
    return cases


BATTERY = _battery()
# The MobileNetV4 shapes (batch 1, fp32): Conv-M stem 3 -> 32 s2 at 224; Conv-S cn 3x3 s2 32 -> 32 at 112,
# 32 -> 96 at 56; Conv-M FusedIB 3x3 s2 32 -> 128 -> 48 at 112 (Conv-L: 24 -> 96 -> 48, GELU in hybrid_large).
REAL = {
    "stem": dict(n=1, c=3, o=32, hw=(224, 224), stride=2, innermost=True, channels_last=True),
    "cn0": dict(n=1, c=32, o=32, hw=(112, 112), stride=2, innermost=True, channels_last=True),
    "cn1": dict(n=1, c=32, o=96, hw=(56, 56), stride=2, innermost=True, channels_last=True),
    "fused_ib": dict(n=2, c=32, o=128, hw=(112, 112), stride=2, proj=48, innermost=True, channels_last=True),
    "fused_ib_gelu": dict(n=1, c=24, o=96, hw=(96, 96), stride=2, proj=48, activation="gelu", innermost=True),
}


def _ids(cases):
    return [f"{i}-n{c['n']}-c{c['c']}-o{c['o']}-{c['hw'][0]}x{c['hw'][1]}-k{c.get('k', 3)}s{c.get('stride', 1)}"
            f"{'-p' + str(c['proj']) if c.get('proj') else ''}{'-res' if c.get('residual') else ''}"
            f"-{c.get('activation', 'relu')}" for i, c in enumerate(cases)]


def _check(args, tol=FP32_TOL, proj_activation="none"):
    """args: random_conv_args's 8, optionally + channels_last (the op's last arguments, not the reference's)."""
    if proj_activation != "none":
        args = (tuple(args) + (False,))[:9] + (proj_activation,)
    out = conv(*args)
    fake = mops._conv_fake(*args)
    assert out.dtype == args[0].dtype and out.shape == fake.shape
    assert out.stride() == fake.stride()
    assert rel_err(out, reference(*args[:8], proj_activation=proj_activation)) <= tol
    return out


def test_battery_covers_borders_and_options():
    assert {c["k"] for c in BATTERY} >= {1, 3, 5, 7} and {c["stride"] for c in BATTERY} == {1, 2}
    assert any(c["proj"] and c["residual"] for c in BATTERY) and any(c["residual"] and not c["proj"] for c in BATTERY)
    # images smaller than the kernel window (no interior pixel) and images with an interior
    assert any(c["hw"][0] <= c["k"] // 2 * 2 for c in BATTERY) and any(c["hw"][0] > c["k"] + 2 for c in BATTERY)
    # the projection's activation: each kind, with and without the residual after it
    acts = {(c.get("proj_activation"), c.get("residual")) for c in BATTERY if c.get("proj")}
    assert {"relu", "gelu", "none"} <= {a for a, _ in acts} and any(r and a != "none" for a, r in acts)


@pytest.mark.parametrize("num_threads", [1, 2], indirect=True, ids=["1t", "2t"])
@pytest.mark.parametrize("case", BATTERY, ids=_ids(BATTERY))
def test_battery_fp32(case, num_threads):
    _check(random_conv_args(**case), proj_activation=case.get("proj_activation") or "none")


@pytest.mark.parametrize("name", list(REAL))
def test_mobilenetv4_shapes(name):
    _check(random_conv_args(**REAL[name], seed=7))


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
def test_other_kernel_tables(isa):
    """The same op on the other microkernel tables of this CPU (MNV4_CPU_ISA is read once per process)."""
    script = textwrap.dedent(f"""
        import os, sys
        os.environ["MNV4_CPU_ISA"] = "{isa}"
        import torch, mnv4_kernels
        sys.path.insert(0, {repr(__file__.rsplit('/', 1)[0])})
        from test_conv_cpu import BATTERY, REAL, random_conv_args, reference
        from mnv4_reference.testing import rel_err
        worst = 0.0
        for case in BATTERY[::3] + [REAL["fused_ib_gelu"], REAL["cn1"]]:
            args = random_conv_args(**case)
            pact = case.get("proj_activation") or "none"
            worst = max(worst, rel_err(torch.ops.mnv4_cpu.conv(*args, False, pact),
                                       reference(*args, proj_activation=pact)))
        print("worst", worst, "table", torch.ops.mnv4_cpu.isa())
        raise SystemExit(0 if worst <= 1e-5 else 1)
    """)
    out = run_script(script).stdout
    table = out.split("table")[-1].strip()
    # scalar always exists, avx2 on every x86-64 CPU this runs on; avx512 falls back where the CPU lacks it
    want = {"scalar": "scalar", "avx2": "avx2_fma" if platform.machine() in ("x86_64", "AMD64") else table}
    assert table == want.get(isa, table), out


X_LAYOUTS = ("nchw", "channels_last") + NON_CONTIGUOUS_KINDS


@pytest.mark.parametrize("cl_out", [False, True], ids=["follow_x", "cl_out"])
@pytest.mark.parametrize("layout", X_LAYOUTS)
@pytest.mark.parametrize("proj", [None, 12])
def test_x_layouts(layout, proj, cl_out):
    """Every x layout (a channels_last x read in place, any other converted band by band inside the op), the
    output following x's layout or, with channels_last=True, channels_last."""
    args = list(random_conv_args(2, 8, 16, (9, 7), stride=2, proj=proj, activation="gelu",
                                 channels_last=layout == "channels_last", seed=3))
    if layout in NON_CONTIGUOUS_KINDS:
        args[0] = non_contiguous(args[0], layout)
        assert not args[0].is_contiguous() and not args[0].is_contiguous(memory_format=torch.channels_last)
    out = _check(tuple(args) + (cl_out,))
    want_cl = layout == "channels_last" or cl_out
    assert out.is_contiguous(memory_format=torch.channels_last if want_cl else torch.contiguous_format)


@pytest.mark.parametrize("num_threads", [1, 2], indirect=True, ids=["1t", "2t"])
@pytest.mark.parametrize("name", ["stem", "fused_ib"])
def test_nchw_image_to_channels_last(name, num_threads):
    """The fused models' stem call: the user's NCHW image in, channels_last out (row bands of 14-28 output
    rows at 224 px, each task converting its input rows and their halo)."""
    args = random_conv_args(**dict(REAL[name], channels_last=False), seed=8)
    assert args[0].is_contiguous()
    out = _check(args + (True,))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, conv(*args, False).contiguous(memory_format=torch.channels_last))


# RGB images (3 channels, NCHW) as the stems get them: each task converts its input rows to NHWC, 16 (fp32) or 32
# (bf16) pixels of the three planes at a time where the CPU has AVX-512, the rest pixel by pixel, so the bands'
# pixel counts cover below, at and above one block and not a multiple of it; H, W = 1, odd, even; stride 1 and 2;
# k 3 and 5; the real stems (Conv-S/M 224, Hybrid-M 256).
RGB_STEMS = [dict(n=1, hw=(1, 1), k=3, stride=2), dict(n=1, hw=(1, 7), k=3, stride=1),
             dict(n=2, hw=(4, 4), k=5, stride=2), dict(n=1, hw=(2, 16), k=3, stride=1), dict(n=2, hw=(5, 17), k=3, stride=2),
             dict(n=1, hw=(9, 33), k=5, stride=1), dict(n=3, hw=(31, 6), k=5, stride=2),
             dict(n=1, hw=(24, 35), k=3, stride=2, proj=8), dict(n=1, hw=(13, 12), k=3, stride=1, residual_o=3),
             dict(n=1, hw=(224, 224), k=3, stride=2), dict(n=1, hw=(256, 256), k=3, stride=2)]


def _rgb_args(case, dtype, seed):
    case = dict(case)
    o = case.pop("residual_o", 32)
    return random_conv_args(c=3, o=o, dtype=dtype, residual=o == 3, innermost=True, seed=seed, **case)


def _rgb_ids(cases):
    return [f"n{c['n']}-{c['hw'][0]}x{c['hw'][1]}-k{c['k']}s{c['stride']}" + ("-p" if c.get("proj") else "")
            + ("-res" if c.get("residual_o") else "") for c in cases]


@pytest.mark.parametrize("num_threads", [1, 2], indirect=True, ids=["1t", "2t"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", RGB_STEMS, ids=_rgb_ids(RGB_STEMS))
def test_rgb_image_stems(case, dtype, num_threads):
    args = _rgb_args(case, dtype, seed=40)
    assert args[0].is_contiguous() and args[0].shape[1] == 3
    out = conv(*args, True)
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    if dtype == torch.bfloat16:
        assert rel_err(out, staged_conv(*args)) <= BF16_TOL
    else:
        assert rel_err(out, reference(*args)) <= FP32_TOL


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", RGB_STEMS[2:8], ids=_rgb_ids(RGB_STEMS[2:8]))
def test_rgb_image_stems_nan(case, dtype):
    """A NaN pixel of the image in each plane, in the first and the last block of a band (the last: the pixel by
    pixel rest where there is one), or a NaN weight on a corner tap: NaN exactly where torch has it."""
    args = _rgb_args(case, dtype, seed=41)
    x = args[0]
    H, W = x.shape[2:]
    tol = BF16_TOL if dtype == torch.bfloat16 else FP32_TOL
    sites = [(0, (0, c, y, xx)) for c, y, xx in ((0, 0, 0), (1, H // 2, W // 2), (2, H - 1, W - 1), (1, H - 1, 0))]
    sites.append((1, (3, 2, 0, 0)))
    for slot, index in sites:
        t = args[slot].clone()
        t[index] = float("nan")
        a = tuple(args[:slot]) + (t,) + tuple(args[slot + 1:])
        out = conv(*a, True).float()
        up = tuple(v.float() if isinstance(v, torch.Tensor) else v for v in a)
        ref = reference(*up, dtype=torch.float32, conv2d=conv2d_inside_taps if slot == 1 else TF.conv2d)
        assert ref.isnan().any(), (slot, index)
        if dtype == torch.bfloat16:  # NaN where the fp32 reference has it; values as the staged bf16 one
            assert torch.equal(out.isnan(), ref.isnan()), (slot, index)
            staged = staged_conv(*a).float()  # torch's zero-padded taps: NaN on the border for a NaN corner weight
            keep = ~ref.isnan() & ~staged.isnan()  # empty for the corner weight with the projection after it
            assert not keep.any() or rel_err(out[keep], staged[keep]) <= tol
        else:
            assert_nan_like(out, ref, tol)


# The stems' shape, 3 input channels, 3x3, stride 2 (the microkernels' compile-time stem tile, 14 pixels a tile
# on AVX-512, with its 7-pixel and shorter remainders and the border strips), over H, W = 1, 2, 3, 7, 8, 15, 16,
# 224, 225 (each H with two Ws), 24, 32 and 40 output channels, NCHW and channels_last images.
_C3_HW = [1, 2, 3, 7, 8, 15, 16, 224, 225]
C3_STEMS = [dict(n=1 + (i + j) % 2, hw=(h, _C3_HW[(i + j) % 9]), o=(24, 32, 40)[(i + j) % 3],
                 channels_last=j == 3 and i % 3 == 1) for i, h in enumerate(_C3_HW) for j in (0, 3)]
C3_STEMS += [dict(n=1, hw=(224, 224), o=o, channels_last=False) for o in (24, 40)]


def _c3_ids(cases):
    return [f"n{c['n']}-{c['hw'][0]}x{c['hw'][1]}-o{c['o']}" + ("-cl" if c["channels_last"] else "") for c in cases]


def _c3_args(case, dtype, seed, activation="relu"):
    return random_conv_args(c=3, k=3, stride=2, innermost=True, dtype=dtype, seed=seed, activation=activation,
                            **case)


@pytest.mark.parametrize("num_threads", [1, 2], indirect=True, ids=["1t", "2t"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", C3_STEMS, ids=_c3_ids(C3_STEMS))
def test_c3_stems(case, dtype, num_threads):
    args = _c3_args(case, dtype, seed=90)
    out = conv(*args, True)
    assert out.dtype == dtype and out.shape[1] == case["o"]
    if dtype == torch.bfloat16:
        assert rel_err(out, staged_conv(*args)) <= BF16_TOL
    else:
        assert rel_err(out, reference(*args)) <= FP32_TOL


def _assert_nonfinite_like(out, ref, tol, values=None):
    """NaN, +inf and -inf exactly where ref has them; the finite rest within tol of `values` (default ref)."""
    for what in (torch.isnan, torch.isposinf, torch.isneginf):
        differ = what(out) != what(ref)
        assert not differ.any(), f"{what.__name__}: {int(differ.sum())} of {out.numel()} differ"
    values = ref if values is None else values
    keep = torch.isfinite(ref) & torch.isfinite(values)
    assert rel_err(out[keep], values[keep]) <= tol


# One NaN or infinity in the image (interior; the first pixel, on the padded border; the last pixel, where the
# tile's last pair ends) or in one weight (a corner tap, outside the image on the border, where torch skips it
# and the op must too; the centre tap).
C3_NONFINITE_SITES = {"x_nan_interior": (0, "mid", "nan"), "x_nan_first": (0, "first", "nan"),
                      "x_nan_last": (0, "last", "nan"), "x_inf_interior": (0, "mid", "inf"),
                      "x_inf_first": (0, "first", "-inf"), "x_inf_last": (0, "last", "inf"),
                      "w_nan_corner": (1, "corner", "nan"), "w_inf_corner": (1, "corner", "inf"),
                      "w_inf_centre": (1, "centre", "-inf")}


@pytest.mark.parametrize("num_threads", [1, 2], indirect=True, ids=["1t", "2t"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("activation", ["relu", "none"])
@pytest.mark.parametrize("case", [C3_STEMS[i] for i in (3, 6, 7, 12, 14, 16)],
                         ids=_c3_ids([C3_STEMS[i] for i in (3, 6, 7, 12, 14, 16)]))
def test_c3_stems_nonfinite(case, activation, dtype, num_threads):
    args = _c3_args(case, dtype, seed=91, activation=activation)
    x = args[0]
    n, _, H, W = x.shape
    tol = BF16_TOL if dtype == torch.bfloat16 else FP32_TOL
    for site, (slot, where, value) in C3_NONFINITE_SITES.items():
        index = {"mid": (n - 1, 1, H // 2, W // 2), "first": (0, 0, 0, 0), "last": (n - 1, 2, H - 1, W - 1),
                 "corner": (case["o"] // 2, 2, 0, 0), "centre": (1, 0, 1, 1)}[where]
        t = args[slot].clone()  # keeps the memory format
        t[index] = float(value)
        a = tuple(args[:slot]) + (t,) + tuple(args[slot + 1:])
        out = conv(*a, True).float()
        up = tuple(v.float() if isinstance(v, torch.Tensor) else v for v in a)
        ref = reference(*up, dtype=torch.float32, conv2d=conv2d_inside_taps if slot == 1 else TF.conv2d)
        assert where == "corner" or not torch.isfinite(ref).all(), site  # a 2-row image never uses that corner
        if dtype == torch.bfloat16:  # NaN / inf as the fp32 reference; values as the staged bf16 one
            _assert_nonfinite_like(out, ref, tol, values=staged_conv(*a).float())
        else:
            _assert_nonfinite_like(out, ref, tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("case", BATTERY[::5], ids=_ids(BATTERY[::5]))
def test_battery_low_precision(case, dtype):
    args = random_conv_args(**dict(case, dtype=dtype))
    pact = case.get("proj_activation") or "none"
    out = conv(*args, False, pact)
    assert out.dtype == dtype and out.stride() == mops._conv_fake(*args).stride()
    if dtype == torch.bfloat16 or f16_on_kernels():  # each stage's output kept in dtype: see bf16_reference.py
        assert rel_err(out, staged_conv(*args, pact)) <= (BF16_TOL if dtype == torch.bfloat16 else F16_TOL)
        return
    up = tuple(a.float() if isinstance(a, torch.Tensor) else a for a in args)
    assert rel_err(out, reference(*up, dtype=torch.float32, proj_activation=pact)) <= UNIT_ROUNDOFF[dtype] + FP32_TOL


def test_packed_weights_follow_in_place_updates():
    """Both weights are packed once per weight tensor (csrc/cpu/weight_cache.h): in-place updates of either
    must reach the next call."""
    args = random_conv_args(1, 8, 24, (10, 10), stride=2, proj=16, innermost=False, seed=5)
    first = _check(args)
    w, pw = args[1], args[5]
    with torch.no_grad():
        w[:12].mul_(-2.0)
    second = _check(args)
    assert rel_err(second, first) > 1e-2
    with torch.no_grad():
        pw.mul_(0.5)
    third = _check(args)
    assert rel_err(third, second) > 1e-2


@pytest.mark.parametrize("proj", [None, 12])
def test_inference_mode_weights_are_read_in_place(proj):
    """Inference tensors carry no version counter, so the op reads them unpacked (row-major, in place): the
    path a model built under torch.inference_mode() takes."""
    for innermost in (False, True):
        with torch.inference_mode():
            args = random_conv_args(2, 8, 40, (9, 10), stride=2, proj=proj, innermost=innermost, seed=9)
            assert args[1].is_inference()
            _check(args)
            args[1].mul_(-0.5)  # in place: read again, not from a cache
            _check(args)


OPCHECK_CASES = {
    "nchw": dict(n=2, c=5, o=8, hw=(6, 5), stride=2),
    "channels_last_proj": dict(n=2, c=8, o=12, hw=(5, 5), proj=6, activation="gelu", innermost=True,
                               channels_last=True, proj_activation="relu"),
    "residual": dict(n=1, c=6, o=6, hw=(4, 7), k=5, residual=True, activation="none", bias=False),
}


@pytest.mark.parametrize("cl_out", [False, True], ids=["follow_x", "cl_out"])
@pytest.mark.parametrize("name", list(OPCHECK_CASES))
def test_opcheck(name, cl_out):
    case = OPCHECK_CASES[name]
    torch.library.opcheck(conv.default,
                          random_conv_args(**case) + (cl_out, case.get("proj_activation") or "none"))


def test_compile_and_export():
    x, *rest = random_conv_args(2, 16, 32, (9, 8), stride=2, proj=24, activation="gelu", innermost=True,
                                channels_last=True, seed=11)
    m = OpModule(conv, tuple(rest)).eval()
    want = torch.relu(reference(x, *rest)) + 1.0
    compiled = torch.compile(m, fullgraph=True, backend="inductor")
    assert rel_err(compiled(x), want) <= FP32_TOL
    ep = torch.export.export(m, (x,))
    assert any("mnv4_cpu.conv" in str(n.target) for n in ep.graph.nodes)
    assert rel_err(ep.module()(x), want) <= FP32_TOL


@pytest.mark.parametrize("cl_out", [False, True], ids=["follow_x", "cl_out"])
@pytest.mark.parametrize("cl", [False, True], ids=["nchw", "cl"])
def test_zero_batch(cl, cl_out):
    args = list(random_conv_args(1, 8, 12, (5, 4), stride=2, proj=4, channels_last=cl)) + [cl_out]
    args[0] = args[0][:0]
    out = conv(*args)
    assert out.shape == (0, 4, 3, 2) and out.dtype == torch.float32
    assert out.stride() == mops._conv_fake(*args).stride()


BAD_INPUT_SCRIPT = textwrap.dedent(r"""
    import torch, mnv4_kernels
    from mnv4_reference.testing import check_rejections
    conv = torch.ops.mnv4_cpu.conv
    x = torch.randn(2, 8, 5, 4)
    good = dict(x=x, weight=torch.randn(16, 8, 3, 3), bias=torch.randn(16), stride=2, act="relu",
                pw=torch.randn(4, 16, 1, 1), pb=torch.randn(4), res=False)
    def call(**kw):
        a = dict(good, **kw)
        return conv(a["x"], a["weight"], a["bias"], a["stride"], a["act"], a["pw"], a["pb"], a["res"], False,
                    a.get("pact", "none"))
    cases = {
        "x must be 4-D [N, C, H, W]; got ndim 3": dict(x=x[0]),
        "x must be float32, float16 or bfloat16; got Int": dict(x=x.int()),
        "x must have at least one channel, row and column": dict(x=x[:, :, :0]),
        "weight must be [out, 8, k, k] (x has 8 channels); got shape [16, 7, 3, 3]":
            dict(weight=torch.randn(16, 7, 3, 3)),
        "weight must be [out, 8, k, k] (x has 8 channels); got shape [16, 8, 3]":
            dict(weight=torch.randn(16, 8, 3)),
        "weight must have a square, odd kernel; got shape [16, 8, 4, 4]": dict(weight=torch.randn(16, 8, 4, 4)),
        "weight must have a square, odd kernel; got shape [16, 8, 3, 5]": dict(weight=torch.randn(16, 8, 3, 5)),
        "weight must have at least one output channel":
            dict(weight=torch.randn(0, 8, 3, 3), bias=None, pw=None, pb=None),
        "bias must have shape [16]; got [15]": dict(bias=torch.randn(15)),
        "stride must be 1 or 2; got 3": dict(stride=3),
        "activation must be one of": dict(act="swish"),
        "proj_weight must have 16 input channels; got shape [4, 15, 1, 1]": dict(pw=torch.randn(4, 15, 1, 1)),
        "proj_weight must be a 1x1 conv weight [out, in, 1, 1]; got shape [4, 16, 3, 3]":
            dict(pw=torch.randn(4, 16, 3, 3)),
        "proj_bias must have shape [4]; got [5]": dict(pb=torch.randn(5)),
        "proj_bias given without proj_weight": dict(pw=None),
        "proj_activation 'relu' given without proj_weight": dict(pw=None, pb=None, pact="relu"),
        "proj_activation must be one of \"relu\", \"gelu\", \"none\"; got \"silu\"": dict(pact="silu"),
        "residual needs stride 1 and as many output channels as x has (8); got stride 2 and 4":
            dict(res=True),
        "residual needs stride 1 and as many output channels as x has (8); got stride 1 and 4":
            dict(res=True, stride=1),
        "weight has dtype Half but x has dtype Float": dict(weight=torch.randn(16, 8, 3, 3).half()),
        "proj_bias has dtype BFloat16 but x has dtype Float": dict(pb=torch.randn(4).bfloat16()),
    }
    raise SystemExit(check_rejections(call, cases))
""")


def test_bad_input_raises_in_subprocess():
    assert "checked 21" in run_script(BAD_INPUT_SCRIPT).stdout



# NaN as through plain torch: one NaN in x (a corner or an interior pixel) or in one weight (the centre tap, a
# bias, the projection) gives NaN exactly where torch has it; a NaN on a corner tap, outside the image at the
# borders, where conv2d_inside_taps has it (tests/nan_reference.py: those border outputs stay finite; torch's
# own convs differ there by implementation). The reference runs in fp32, the op's dtype.
# tests/test_nan.py reruns these under each microkernel table (MNV4_CPU_ISA).
CONV_NAN_SITES = ("x_corner", "x", "w_corner", "w_centre", "bias", "proj_w")
CONV_NAN_CASES = [dict(n=2, c=3, o=16, hw=(9, 8), k=3, stride=2),  # a stem
                  dict(n=1, c=3, o=16, hw=(7, 10), k=3, stride=2),
                  dict(n=1, c=8, o=17, hw=(7, 7), k=3, stride=1, proj=8, residual=True),
                  dict(n=1, c=5, o=9, hw=(6, 5), k=5, stride=1, proj=6),
                  dict(n=2, c=4, o=9, hw=(5, 11), k=5, stride=2)]


def _conv_with_nan(args, site):
    x, w = args[0], args[1]
    slot, index = {"x_corner": (0, (0, 0, 0, 0)), "x": (0, (0, 1, x.shape[2] // 2, x.shape[3] // 2)),
                   "w_corner": (1, (1, 0, 0, 0)), "w_centre": (1, (1, 0, w.shape[2] // 2, w.shape[3] // 2)),
                   "bias": (2, (2,)), "proj_w": (5, (1, 2, 0, 0))}[site]
    if args[slot] is None:
        return None
    t = args[slot].clone()  # keeps the memory format
    t[index] = float("nan")
    return tuple(args[:slot]) + (t,) + tuple(args[slot + 1:])


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("activation", ["relu", "gelu", "none"])
@pytest.mark.parametrize("case", CONV_NAN_CASES, ids=_ids(CONV_NAN_CASES))
def test_nan_propagates_as_in_torch(case, activation, layout):
    args = random_conv_args(**case, activation=activation, innermost=True, channels_last=layout == "channels_last",
                            seed=70)
    for site in CONV_NAN_SITES:
        a = _conv_with_nan(args, site)
        if a is None:
            continue
        out = conv(*a)
        ref = reference(*a, dtype=torch.float32, conv2d=conv2d_inside_taps if site == "w_corner" else TF.conv2d)
        assert ref.isnan().any(), site
        if site == "w_corner" and not case.get("proj"):  # the border outputs whose corner tap is outside
            assert not ref.isnan().all()
        assert_nan_like(out, ref, FP32_TOL)
