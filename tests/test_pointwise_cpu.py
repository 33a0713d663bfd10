"""torch.ops.mnv4_cpu.pointwise on the CPU (csrc/cpu/pointwise.cpp) against plain torch (F.linear / F.conv2d
+ relu / exact gelu / identity, in float64).

Correctness over a shape battery (2-D and 4-D x; channels 1, below / at / above multiples of 8 and 16, the real
head shapes; weights contiguous, output-channel-innermost and 2-D / 4-D; both task schedules with 1 and 2
threads), x layouts (NCHW, channels_last, non-contiguous) with the output strides vs the fake kernel, fp16 /
bf16, opcheck, torch.compile / torch.export, zero batch, and rejected input (in a subprocess that must exit
normally).
"""

import textwrap

import pytest
import torch
import torch.nn.functional as TF

import mnv4_kernels  # noqa: F401  (registers the op and its fake)
from mnv4_kernels import ops as mops
from mnv4_reference.testing import NON_CONTIGUOUS_KINDS, OpModule, non_contiguous, rel_err, run_script
from nan_reference import assert_nan_like

pointwise = torch.ops.mnv4_cpu.pointwise
FP32_TOL = 1e-5
# As in test_uib_cpu.py: the op computes in fp32 from the low-precision inputs and rounds once at the end, so
# against the fp32 computation on the same (upcast) inputs rel_err <= u (fp16: 2^-11, bf16: 2^-8) + FP32_TOL.
UNIT_ROUNDOFF = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}
ACTS = {"relu": torch.relu, "gelu": lambda t: TF.gelu(t, approximate="none"), "none": lambda t: t}


def reference(x, weight, bias, activation, dtype=torch.float64):
    """act(conv1x1 / linear(x, weight) + bias) in `dtype` (float64 by default), any weight / x strides."""
    x = x.to(dtype)
    o, c = weight.shape[0], weight.shape[1]
    b = None if bias is None else bias.to(dtype)
    if x.dim() == 2:
        y = TF.linear(x, weight.to(dtype).reshape(o, c), b)
    else:
        y = TF.conv2d(x, weight.to(dtype).reshape(o, c, 1, 1), b)
    return ACTS[activation](y)


def random_pointwise_args(n, c, o, hw=None, bias=True, activation="relu", weight_dim=None, innermost=False,
                          channels_last=False, dtype=torch.float32, seed=0, inference=False):
    """(x, weight, bias, activation): x [n, c] (hw None) or [n, c, *hw]; weight [o, c] or [o, c, 1, 1]
    (weight_dim, default: as x), optionally stored output-channel innermost, optionally an inference tensor
    (not cacheable: the op reads it in place). Fresh random values, never 0."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    x = rnd(n, c) if hw is None else rnd(n, c, *hw)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight_dim = weight_dim or (2 if hw is None else 4)
    w = rnd(o, c, scale=c ** -0.5)
    if weight_dim == 4:
        w = w.reshape(o, c, 1, 1)
    if innermost:
        w = mops.channels_innermost(w)
    if inference:
        with torch.inference_mode():
            w = w.clone(memory_format=torch.preserve_format)
        assert w.is_inference()
    b = rnd(o, scale=0.5) if bias else None
    return x, w, b, activation


def _pixels(case):
    return case["n"] * (case["hw"][0] * case["hw"][1] if case["hw"] else 1)


def _schedule(case, threads):
    # Mirrors the task split in csrc/cpu/pointwise.cpp (input-channel blocks for <= 4 rows and >= 64 input
    # channels from a weight read in place or with < 16 output channels per thread, 48-pixel blocks when
    # there are at least as many pixels as output channels, else channel blocks); used only to check that
    # the battery runs all three.
    if _pixels(case) <= 4 and case["c"] >= 64 and (case.get("inference") or case["o"] < 16 * threads):
        return "k"
    p = _pixels(case)
    return "pixels" if (p >= 48 * threads and p >= case["o"]) or case["o"] < 16 * threads else "channels"


def _battery():
    chans = [(1, 1), (1, 33), (5, 8), (8, 16), (16, 17), (17, 33), (33, 96), (96, 5), (24, 32), (7, 48)]
    geoms = [(1, None), (3, None), (1, (1, 1)), (3, (7, 7)), (1, (5, 3)), (1, (7, 7)), (2, (5, 3))]
    cases = []
    i = 0
    for c, o in chans:
        for n, hw in geoms:
            cases.append(dict(n=n, c=c, o=o, hw=hw, activation=("relu", "gelu", "none")[i % 3], bias=i % 4 != 3,
                              weight_dim=((2, 4)[(i // 2) % 2]), innermost=i % 2 == 1,
                              channels_last=hw is not None and i % 3 == 1, seed=i))
            i += 1
    # the real classifier head (batch 1): conv_head 960 -> 1280 (1x1 on the pooled map, or a linear) + act,
    # and the classifier 1280 -> 1000; weights packed (cached) and read in place (inference tensors)
    for n, c, o, hw, act in ((1, 960, 1280, None, "relu"), (1, 960, 1280, (1, 1), "gelu"),
                             (1, 1280, 1000, None, "none"), (2, 1280, 1000, None, "none")):
        for innermost, inference in ((False, False), (True, False), (False, True), (True, True)):
            cases.append(dict(n=n, c=c, o=o, hw=hw, activation=act, bias=True, weight_dim=None,
                              innermost=innermost, channels_last=False, seed=i, inference=inference))
            i += 1
    # many pixels with many output channels (the pixel schedule with several blocks and a remainder)
    cases.append(dict(n=2, c=40, o=72, hw=(9, 11), activation="gelu", bias=True, weight_dim=None,
                      innermost=True, channels_last=True, seed=i))
    cases.append(dict(n=1, c=33, o=40, hw=(13, 10), activation="relu", bias=False, weight_dim=None,
                      innermost=False, channels_last=False, seed=i + 1))
    return cases


BATTERY = _battery()


def _ids(cases):
    def one(i, c):
        geo = "x".join(map(str, c["hw"])) if c["hw"] else "2d"
        return (f"{i}-n{c['n']}-c{c['c']}-o{c['o']}-{geo}-{c['activation']}{'' if c['bias'] else '-nobias'}"
                f"-w{c['weight_dim'] or 'x'}d{'-inner' if c['innermost'] else ''}{'-cl' if c['channels_last'] else ''}"
                f"{'-inf' if c.get('inference') else ''}")
    return [one(i, c) for i, c in enumerate(cases)]


def test_pointwise_registered():
    assert "pointwise" in dir(torch.ops.mnv4_cpu)
    x, w, b, act = random_pointwise_args(2, 4, 3)
    assert pointwise(x, w).shape == (2, 3)  # bias and activation default to None / "none"
    assert rel_err(pointwise(x, w), reference(x, w, None, "none")) <= FP32_TOL


@pytest.mark.parametrize("threads", [1, 2])
def test_battery_covers_every_schedule(threads):
    kinds = {_schedule(c, threads) for c in BATTERY}
    assert kinds == {"k", "pixels", "channels"}
    # the channel schedule on 4-D input too, not only on 2-D
    assert any(_schedule(c, threads) == "channels" and c["hw"] for c in BATTERY)


@pytest.mark.parametrize("num_threads", [1, 2], indirect=True, ids=["1t", "2t"])
@pytest.mark.parametrize("case", BATTERY, ids=_ids(BATTERY))
def test_battery_fp32(case, num_threads):
    x, w, b, act = random_pointwise_args(**case)
    out = pointwise(x, w, b, act)
    assert out.dtype == torch.float32 and out.shape == mops._pointwise_fake(x, w, b, act).shape
    assert rel_err(out, reference(x, w, b, act)) <= FP32_TOL
    assert out.stride() == mops._pointwise_fake(x, w, b, act).stride()


def _sliced_weight(w):
    """w with its input channels two apart (NaN between): a weight that is neither contiguous nor innermost."""
    wide = torch.full((w.shape[0], 2 * w.shape[1]) + tuple(w.shape[2:]), float("nan"), dtype=w.dtype)
    wide[:, ::2] = w
    return wide[:, ::2]


X_LAYOUTS = ("nchw", "channels_last") + NON_CONTIGUOUS_KINDS


@pytest.mark.parametrize("weight_kind", ["contiguous", "innermost", "sliced"])
@pytest.mark.parametrize("layout", X_LAYOUTS)
@pytest.mark.parametrize("n,c,o,hw", [(2, 24, 40, (7, 7)), (1, 17, 33, (5, 3)), (3, 9, 5, (6, 4))],
                         ids=["pixels", "channels", "small"])
def test_x_layouts(n, c, o, hw, layout, weight_kind):
    x, w, b, act = random_pointwise_args(n, c, o, hw, activation="gelu", innermost=weight_kind == "innermost",
                                         channels_last=layout == "channels_last", seed=c + o)
    if layout in NON_CONTIGUOUS_KINDS:
        x = non_contiguous(x, layout)
        assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    if weight_kind == "sliced":
        w = _sliced_weight(w)
        assert not w.is_contiguous()
    out = pointwise(x, w, b, act)
    assert rel_err(out, reference(x, w, b, act)) <= FP32_TOL
    assert out.stride() == mops._pointwise_fake(x, w, b, act).stride()
    want_cl = layout == "channels_last"
    assert out.is_contiguous(memory_format=torch.channels_last if want_cl else torch.contiguous_format)


@pytest.mark.parametrize("kind", ["transposed", "sliced"])
def test_2d_x_layouts(kind):
    x, w, b, act = random_pointwise_args(5, 19, 37, activation="relu", seed=3)
    if kind == "transposed":
        x = x.t().contiguous().t()
    else:
        wide = torch.full((5, 38), float("nan"))
        wide[:, ::2] = x
        x = wide[:, ::2]
    assert not x.is_contiguous()
    out = pointwise(x, _sliced_weight(w), b, act)
    assert rel_err(out, reference(x, w, b, act)) <= FP32_TOL
    assert out.is_contiguous() and out.stride() == mops._pointwise_fake(x, w, b, act).stride()


def test_ambiguous_layouts_follow_the_fake_kernel():
    # C == 1 or H == W == 1: NCHW- and channels_last-contiguous at once -> NCHW output, as the fake says.
    for n, c, o, hw in ((2, 1, 8, (5, 4)), (2, 6, 8, (1, 1)), (1, 40, 48, (1, 1))):
        x, w, b, act = random_pointwise_args(n, c, o, hw, channels_last=True, activation="relu")
        out = pointwise(x, w, b, act)
        assert rel_err(out, reference(x, w, b, act)) <= FP32_TOL
        assert out.stride() == mops._pointwise_fake(x, w, b, act).stride(), (n, c, o, hw)


LOW_PRECISION_CASES = BATTERY[::4]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("case", LOW_PRECISION_CASES, ids=_ids(LOW_PRECISION_CASES))
def test_battery_low_precision(case, dtype):
    x, w, b, act = random_pointwise_args(**dict(case, dtype=dtype))
    assert x.dtype == w.dtype == dtype and (b is None or b.dtype == dtype)
    out = pointwise(x, w, b, act)
    assert out.dtype == dtype
    ref = reference(x.float(), w.float(), None if b is None else b.float(), act, dtype=torch.float32)
    assert rel_err(out, ref) <= UNIT_ROUNDOFF[dtype] + FP32_TOL
    assert out.stride() == mops._pointwise_fake(x, w, b, act).stride()


OPCHECK_CASES = {
    "2d": dict(n=3, c=10, o=20, hw=None, activation="gelu"),
    "nchw": dict(n=2, c=8, o=5, hw=(4, 3), activation="relu", innermost=True),
    "channels_last": dict(n=2, c=12, o=17, hw=(5, 5), activation="none", bias=False, channels_last=True),
}


@pytest.mark.parametrize("name", list(OPCHECK_CASES))
def test_opcheck(name):
    args = random_pointwise_args(**OPCHECK_CASES[name])
    torch.library.opcheck(pointwise.default, args)


def test_compile_and_export():
    x, w, b, act = random_pointwise_args(2, 16, 24, (6, 5), activation="gelu", innermost=True,
                                         channels_last=True, seed=11)
    m = OpModule(pointwise, (w, b, act)).eval()
    want = torch.relu(reference(x, w, b, act)) + 1.0
    compiled = torch.compile(m, fullgraph=True, backend="inductor")
    assert rel_err(compiled(x), want) <= FP32_TOL
    ep = torch.export.export(m, (x,))
    assert any("mnv4_cpu.pointwise" in str(n.target) for n in ep.graph.nodes)
    assert rel_err(ep.module()(x), want) <= FP32_TOL


@pytest.mark.parametrize("hw,cl", [(None, False), ((4, 3), False), ((4, 3), True)], ids=["2d", "nchw", "cl"])
def test_zero_batch(hw, cl):
    x, w, b, act = random_pointwise_args(1, 8, 12, hw, channels_last=cl)
    x = x[:0]
    out = pointwise(x, w, b, act)
    assert out.shape == ((0, 12) if hw is None else (0, 12) + hw)
    assert out.dtype == torch.float32
    assert out.stride() == mops._pointwise_fake(x, w, b, act).stride()


BAD_INPUT_SCRIPT = textwrap.dedent(r"""
    import torch, mnv4_kernels
    from mnv4_reference.testing import check_rejections
    pointwise = torch.ops.mnv4_cpu.pointwise
    x = torch.randn(2, 8, 5, 4)
    good = dict(x=x, weight=torch.randn(16, 8, 1, 1), bias=torch.randn(16), act="relu")
    def call(**kw):
        a = dict(good, **kw)
        return pointwise(a["x"], a["weight"], a["bias"], a["act"])
    cases = {
        "x must be 2-D [N, C] or 4-D": dict(x=x[0]),
        "x must be float32, float16 or bfloat16; got Int": dict(x=x.int()),
        "x must be float32, float16 or bfloat16; got Long": dict(x=x[:, :, 0, 0].long(),
                                                                 weight=torch.randn(16, 8)),
        "weight must have 8 input channels; got shape [16, 7, 1, 1]": dict(weight=torch.randn(16, 7, 1, 1)),
        "weight must have 8 input channels; got shape [16, 9]": dict(x=x[:, :, 0, 0], weight=torch.randn(16, 9)),
        "weight must be a 1x1 conv weight [out, in, 1, 1]; got shape [16, 8, 3, 3]":
            dict(weight=torch.randn(16, 8, 3, 3)),
        "weight must be a 1x1 conv weight [out, in, 1, 1]; got shape [16, 8, 1]": dict(weight=torch.randn(16, 8, 1)),
        "bias must have shape [16]; got [15]": dict(bias=torch.randn(15)),
        "bias must have shape [16]; got [16, 1]": dict(bias=torch.randn(16, 1)),
        "weight has dtype Half but x has dtype Float": dict(weight=torch.randn(16, 8, 1, 1).half()),
        "bias has dtype BFloat16 but x has dtype Float": dict(bias=torch.randn(16).bfloat16()),
        "activation must be one of": dict(act="swish"),
    }
    raise SystemExit(check_rejections(call, cases))
""")


def test_bad_input_raises_in_subprocess():
    assert "checked 12" in run_script(BAD_INPUT_SCRIPT).stdout


def test_packed_weight_follows_in_place_updates():
    """The op packs the weight once per weight tensor (csrc/cpu/weight_cache.h): an in-place update of the
    weight must reach the next call (pixel and channel schedules, and few rows from a packed head weight)."""
    for p, c, o in ((200, 24, 40), (3, 24, 96), (2, 160, 128)):
        x = torch.randn(p, c)
        w = torch.randn(o, c)
        b = torch.randn(o)
        first = pointwise(x, w, b, "relu")
        assert rel_err(first, reference(x, w, b, "relu")) <= FP32_TOL
        with torch.no_grad():
            w[: o // 2].mul_(-2.0)
        second = pointwise(x, w, b, "relu")
        assert rel_err(second, reference(x, w, b, "relu")) <= FP32_TOL
        assert rel_err(second, first) > 1e-2


# NaN as through plain torch (F.linear / conv2d + relu / gelu): a NaN in x, in one weight or in the bias gives
# NaN exactly where torch has it. tests/test_nan.py reruns these under each microkernel table (MNV4_CPU_ISA).
@pytest.mark.parametrize("layout", ["2d", "nchw", "channels_last"])
@pytest.mark.parametrize("activation", ["relu", "gelu", "none"])
def test_nan_propagates_as_in_torch(activation, layout):
    for i, (n, c, o) in enumerate(((3, 17, 40), (2, 64, 9), (2, 8, 16))):
        hw = None if layout == "2d" else (5, 3)
        x, w, b, act = random_pointwise_args(n, c, o, hw, activation=activation, innermost=i % 2 == 1,
                                             channels_last=layout == "channels_last", seed=80 + i)
        for site in ("x", "weight", "bias"):
            args = [x, w, b]
            t = args[("x", "weight", "bias").index(site)].clone()
            t[(0, 1, 0, 0)[:t.dim()] if site != "bias" else (2,)] = float("nan")
            args[("x", "weight", "bias").index(site)] = t
            out, ref = pointwise(*args, act), reference(*args, act)
            assert ref.isnan().any() and not ref.isnan().all(), site
            assert_nan_like(out, ref, FP32_TOL)
