"""Triton ops (torch.ops.mnv4.uib_triton / mqa_triton) against the composites in mnv4_reference.functional.

On a CPU-only torch, tests/conftest.py sets TRITON_INTERPRET=1 before triton is imported, so the kernels run
in Triton's interpreter on CPU tensors (these tests run, never skip, in CI). With a CUDA device they run on it.

Tolerances (rel_err = ||out - ref|| / ||ref||, against the fp32 composite):
  fp32  1e-5: the interpreter's tl.dot is numpy's fp32 matmul (exact fp32 products, another summation order
        than torch's conv), the kernels ask for IEEE fp32 dots on GPUs too (no TF32); observed <= 4e-7.
        1e-5 is the project's fp32 contract.
  fp16  2e-3 = 4 * 2^-11: inputs are rounded to fp16 first (the reference sees the same rounded values in
        fp32), then the kernel rounds ~4 intermediates to fp16 for the tensor-core dots (uib: s, d; mqa: xn,
        q, p, o) with fp32 accumulation. Observed <= 7e-4; the fp16 composite itself is at <= 1e-3.
  bf16  1.6e-2 = 4 * 2^-8, same reasoning at bf16's unit roundoff. Under the interpreter bf16 tl.dot is wrong
        (it multiplies the raw uint16 bit patterns), so the kernels upcast bf16 dots to fp32 there
        (UPCAST_DOT) and this test then checks the bf16 loads/stores and the upcast path; on a GPU it checks
        the native bf16 dots.
"""

import importlib
import os
import re

# On a GPU each kernel gets one config (mnv4_kernels/triton/_tuning.py): the tests check numerics, and
# autotuning every new shape over 5-11 configs would compile each of them first. Read when the Triton ops are
# imported, so it is set here, before that import (benches/gpu_run.sh also sets it for the whole process).
os.environ.setdefault("MNV4_TRITON_ONE_CONFIG", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import mnv4_kernels  # noqa: F401,E402  loads _C, which declares the mnv4 library
import mnv4_kernels.triton  # noqa: F401,E402  registers mnv4::uib_triton and mnv4::mqa_triton
from mnv4_kernels.ops import output_memory_format  # noqa: E402
from mnv4_reference import functional as F  # noqa: E402
from mnv4_reference.testing import mqa_battery, random_mqa_args, random_uib_args, rel_err, uib_battery  # noqa: E402

pytestmark = pytest.mark.triton

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRET else "cuda"
if not INTERPRET and not torch.cuda.is_available():  # a CUDA torch on a machine without a GPU
    pytest.skip("Triton needs a CUDA device, or TRITON_INTERPRET=1 (set by conftest on CPU-only torch)",
                allow_module_level=True)

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
UIB = uib_battery(small=True)
MQA = mqa_battery(small=True)

# Beyond the battery: shapes that cross the interpreter config's blocks (16 channels, 8x8 regions), so the
# Cin / mid / Cout / C loops, several output-channel tiles, several pixel tiles and padded heads are exercised.
UIB_EXTRA = [
    dict(n=1, cin=20, h=9, w=6, mid=20, cout=20, k_start=3, k_mid=5, stride=1, activation="gelu", seed=200),
    dict(n=1, cin=17, h=9, w=11, mid=20, cout=18, k_start=5, k_mid=3, stride=2, activation="relu", seed=201),
    dict(n=1, cin=20, h=12, w=10, mid=34, cout=20, k_start=0, k_mid=5, stride=1, activation="none", seed=202),
    dict(n=1, cin=18, h=11, w=9, mid=40, cout=36, k_start=5, k_mid=0, stride=2, activation="gelu", seed=203),
    dict(n=1, cin=33, h=10, w=17, mid=20, cout=17, k_start=0, k_mid=0, stride=1, activation="relu", seed=204),
]
MQA_EXTRA = [
    dict(n=1, c=40, h=9, w=10, num_heads=8, key_dim=48, kv_stride=2, seed=300),  # real dk, DKP padding
    dict(n=2, c=20, h=7, w=9, num_heads=3, key_dim=16, value_dim=24, kv_stride=1, seed=301),  # heads pad to 4
    dict(n=1, c=24, h=12, w=11, num_heads=4, key_dim=16, kv_stride=1, kv_dw=True, seed=302),  # M = 132
    dict(n=1, c=18, h=6, w=7, num_heads=2, key_dim=32, cout=40, residual=False, kv_stride=2, seed=303),
]


def _cast(args, dtype):
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) else a for a in args)


def _to(args, device):
    return tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)


def _case_id(case):
    return "-".join(f"{k}{v}" for k, v in case.items() if k != "seed")


def _check(op, composite, args, dtype):
    """Run op on args in dtype, compare with the fp32 composite on the same (rounded) values, check strides."""
    args = _to(_cast(args, dtype), DEVICE)
    out = op(*args)
    ref = composite(*_cast(_to(args, "cpu"), torch.float32))
    assert out.dtype == dtype
    want = torch.empty(ref.shape, memory_format=output_memory_format(args[0])).stride()
    assert out.shape == ref.shape and out.stride() == want, (out.shape, out.stride(), want)
    err = rel_err(out, ref)
    assert err <= TOL[dtype], f"rel_err {err:.3g} > {TOL[dtype]:.3g}"


# ---------------------------------------------------------------- registration and schemas


def _signature(op):
    s = op.default._schema
    args = [(a.name, str(a.type), a.default_value, a.kwarg_only) for a in s.arguments]
    return args, [str(r.type) for r in s.returns]


@pytest.mark.parametrize("name", ["uib", "mqa"])
def test_schema_matches_cpp_op(name):
    ref = _signature(getattr(torch.ops.mnv4, name))
    got = _signature(getattr(torch.ops.mnv4, f"{name}_triton"))
    assert got == ref


def test_import_registers_once():
    mod = importlib.import_module("mnv4_kernels.triton")
    again = importlib.import_module("mnv4_kernels.triton")
    assert mod is again
    assert torch.ops.mnv4.uib_triton.default is not None and torch.ops.mnv4.mqa_triton.default is not None


# ---------------------------------------------------------------- uib vs the composite


# Every case in NCHW; channels_last on every other battery case (all forms, strides, kernel sizes still covered)
# and the extra cases, to keep the interpreted run short.
UIB_FP32 = [(c, False) for c in UIB + UIB_EXTRA] + [(c, True) for c in UIB[1::2] + UIB_EXTRA]


@pytest.mark.parametrize("case,channels_last", UIB_FP32,
                         ids=[_case_id(c) + ("-cl" if cl else "-nchw") for c, cl in UIB_FP32])
def test_uib_fp32(case, channels_last):
    _check(torch.ops.mnv4.uib_triton, F.uib, random_uib_args(**case, channels_last=channels_last), torch.float32)


@pytest.mark.parametrize("case", UIB[::2] + UIB_EXTRA[:2], ids=_case_id)
def test_uib_fp16(case):
    cl = case["seed"] % 4 == 0  # half of them channels_last
    _check(torch.ops.mnv4.uib_triton, F.uib, random_uib_args(**case, channels_last=cl), torch.float16)


@pytest.mark.parametrize("case", UIB[1::6], ids=_case_id)
def test_uib_bf16(case):
    _check(torch.ops.mnv4.uib_triton, F.uib, random_uib_args(**case), torch.bfloat16)


def test_uib_noncontiguous():
    """x neither NCHW- nor channels_last-contiguous (a strided view) and transposed-view weights."""
    args = list(random_uib_args(n=2, cin=12, h=9, w=14, mid=24, cout=12, k_start=3, k_mid=5, seed=210))
    args[0] = args[0][:, :, :, ::2]  # [2, 12, 9, 7] view, stride 2 along W
    ew = args[3].reshape(24, 12)
    args[3] = ew.t().contiguous().t()  # same values, column-major [24, 12]
    assert not args[0].is_contiguous() and not args[0].is_contiguous(memory_format=torch.channels_last)
    assert not args[3].is_contiguous()
    _check(torch.ops.mnv4.uib_triton, F.uib, tuple(args), torch.float32)


def test_uib_zero_batch():
    args = _to(random_uib_args(n=1, cin=8, h=5, w=5, mid=16, cout=8, stride=2), DEVICE)
    x = args[0][:0]
    out = torch.ops.mnv4.uib_triton(x, *args[1:])
    assert out.shape == (0, 8, 3, 3)


# ---------------------------------------------------------------- mqa vs the composite


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "cl"])
@pytest.mark.parametrize("case", MQA + MQA_EXTRA, ids=_case_id)
def test_mqa_fp32(case, channels_last):
    _check(torch.ops.mnv4.mqa_triton, F.mqa, random_mqa_args(**case, channels_last=channels_last), torch.float32)


@pytest.mark.parametrize("case", MQA + MQA_EXTRA[:2], ids=_case_id)
def test_mqa_fp16(case):
    cl = case["seed"] % 2 == 1
    _check(torch.ops.mnv4.mqa_triton, F.mqa, random_mqa_args(**case, channels_last=cl), torch.float16)


@pytest.mark.parametrize("case", MQA[::3] + MQA_EXTRA[:1], ids=_case_id)
def test_mqa_bf16(case):
    _check(torch.ops.mnv4.mqa_triton, F.mqa, random_mqa_args(**case), torch.bfloat16)


def test_mqa_noncontiguous():
    args = list(random_mqa_args(n=2, c=16, h=6, w=12, num_heads=2, key_dim=16, kv_stride=2, seed=310))
    args[0] = args[0][:, :, :, ::2]
    qw = args[3].reshape(32, 16)
    args[3] = qw.t().contiguous().t()
    assert not args[0].is_contiguous() and not args[3].is_contiguous()
    _check(torch.ops.mnv4.mqa_triton, F.mqa, tuple(args), torch.float32)


def test_mqa_zero_batch():
    args = _to(random_mqa_args(n=1, c=8, h=4, w=4, num_heads=2, key_dim=8, kv_stride=2), DEVICE)
    out = torch.ops.mnv4.mqa_triton(args[0][:0], *args[1:])
    assert out.shape == (0, 8, 4, 4)


# ---------------------------------------------------------------- NaN propagation
# A NaN must reach exactly the outputs it reaches in the plain-torch composite (torch.relu / F.gelu keep NaN).
# Placed in x (spreads through the dw windows, then the 1x1 convs) and in a 1x1 weight: a depthwise weight's
# NaN is left out, because torch's own convs disagree at the image border there (fp32 skips padded taps,
# float64 multiplies them: NaN * 0). Under the interpreter tl.maximum keeps NaN either way (numpy), so these
# tests check the data flow; that no NaN-dropping max/min is compiled for the GPU is checked on the TTIR
# (test_kernels_compile_for_sm90).

def _nan_check(op, composite, args, dtype=torch.float32):
    args = _to(_cast(args, dtype), DEVICE)
    out = op(*args).cpu().float()
    ref = composite(*_cast(_to(args, "cpu"), torch.float32))
    mask = ref.isnan()
    assert mask.any(), "the case must produce a NaN"
    assert torch.equal(out.isnan(), mask), (
        f"NaN mask differs: {int(out.isnan().sum())} NaN in the op, {int(mask.sum())} in the composite")
    assert rel_err(out[~mask], ref[~mask]) <= TOL[dtype]


def _poison(t, index):
    t = t.clone()
    t[index] = float("nan")
    return t


NAN_UIB = [
    (dict(n=2, cin=9, h=7, w=8, mid=20, cout=9, k_start=3, k_mid=5, stride=1, activation="relu", seed=500), "x"),
    (dict(n=1, cin=9, h=9, w=7, mid=20, cout=11, k_start=0, k_mid=3, stride=2, activation="relu", seed=501), "x"),
    (dict(n=1, cin=8, h=6, w=9, mid=24, cout=8, k_start=5, k_mid=0, stride=1, activation="gelu", seed=502), "x"),
    (dict(n=1, cin=12, h=5, w=6, mid=20, cout=7, k_start=0, k_mid=0, stride=1, activation="relu", seed=503), "x"),
    (dict(n=1, cin=9, h=6, w=7, mid=20, cout=9, k_start=3, k_mid=3, stride=1, activation="relu", seed=504),
     "expand_w"),
    (dict(n=1, cin=9, h=6, w=7, mid=20, cout=10, k_start=0, k_mid=5, stride=2, activation="none", seed=505),
     "proj_w"),
]


@pytest.mark.parametrize("case,where", NAN_UIB, ids=[_case_id(c) + "-" + w for c, w in NAN_UIB])
def test_uib_nan_propagates(case, where):
    args = list(random_uib_args(**case, channels_last=case["seed"] % 2 == 1))
    if where == "x":
        args[0] = _poison(args[0], (case["n"] - 1, 1, case["h"] // 2, case["w"] // 2))
    elif where == "expand_w":
        args[3] = _poison(args[3], (3, 2))  # one mid channel: everything after the expansion
    else:
        args[7] = _poison(args[7], (4, 5))  # one output channel
    _nan_check(torch.ops.mnv4.uib_triton, F.uib, tuple(args))


def test_uib_nan_propagates_fp16():
    case = dict(n=1, cin=9, h=7, w=6, mid=20, cout=9, k_start=3, k_mid=5, stride=1, activation="relu", seed=506)
    args = list(random_uib_args(**case, channels_last=True))
    args[0] = _poison(args[0], (0, 4, 3, 2))
    _nan_check(torch.ops.mnv4.uib_triton, F.uib, tuple(args), torch.float16)


NAN_MQA = [
    (dict(n=2, c=12, h=5, w=6, num_heads=2, key_dim=16, kv_stride=2, seed=510), "x"),
    (dict(n=1, c=12, h=4, w=5, num_heads=2, key_dim=16, kv_stride=1, seed=511), "x"),
    (dict(n=1, c=12, h=5, w=6, num_heads=2, key_dim=16, kv_stride=2, seed=512), "o_w"),
    (dict(n=1, c=12, h=5, w=4, num_heads=3, key_dim=16, kv_stride=1, residual=False, cout=10, seed=513), "k_w"),
]


@pytest.mark.parametrize("case,where", NAN_MQA, ids=[_case_id(c) + "-" + w for c, w in NAN_MQA])
def test_mqa_nan_propagates(case, where):
    """A NaN in x or k_w reaches every score row through the shared K (softmax max and sum); one in o_w only its
    output channel."""
    args = list(random_mqa_args(**case, channels_last=case["seed"] % 2 == 1))
    if where == "x":
        args[0] = _poison(args[0], (case["n"] - 1, 3, case["h"] // 2, case["w"] // 2))
    elif where == "o_w":
        args[10] = _poison(args[10], (5, 7))
    else:
        args[6] = _poison(args[6], (2, 4))
    _nan_check(torch.ops.mnv4.mqa_triton, F.mqa, tuple(args))


# ---------------------------------------------------------------- opcheck

# All four default test_utils apply (test_schema, test_autograd_registration, test_faketensor,
# test_aot_dispatch_dynamic): none is skipped.
OPCHECK_UIB = [
    dict(n=1, cin=8, h=5, w=7, mid=16, cout=8, k_start=3, k_mid=5, stride=1, channels_last=True, seed=400),
    dict(n=2, cin=5, h=6, w=6, mid=12, cout=7, k_start=0, k_mid=3, stride=2, activation="gelu", seed=401),
    dict(n=1, cin=6, h=4, w=5, mid=16, cout=6, k_start=5, k_mid=0, stride=1, activation="none", seed=402),
]
OPCHECK_MQA = [
    dict(n=1, c=8, h=5, w=7, num_heads=2, key_dim=8, kv_stride=2, channels_last=True, seed=410),
    dict(n=2, c=6, h=4, w=4, num_heads=1, key_dim=16, kv_stride=1, residual=False, cout=9, seed=411),
]


@pytest.mark.parametrize("case", OPCHECK_UIB, ids=_case_id)
def test_opcheck_uib(case):
    args = _to(random_uib_args(**case), DEVICE)
    torch.library.opcheck(torch.ops.mnv4.uib_triton.default, args)


@pytest.mark.parametrize("case", OPCHECK_MQA, ids=_case_id)
def test_opcheck_mqa(case):
    args = _to(random_mqa_args(**case), DEVICE)
    torch.library.opcheck(torch.ops.mnv4.mqa_triton.default, args)


def test_opcheck_noncontiguous_input():
    args = list(_to(random_uib_args(n=1, cin=8, h=6, w=10, mid=16, cout=8, seed=420), DEVICE))
    args[0] = args[0][:, :, :, 1::2]
    torch.library.opcheck(torch.ops.mnv4.uib_triton.default, tuple(args))


def test_compile_fullgraph():
    """torch.compile(fullgraph=True) through AOTAutograd (aot_eager: no inductor codegen needed here)."""
    uargs = _to(random_uib_args(n=1, cin=8, h=6, w=5, mid=16, cout=8, k_start=3, k_mid=3, seed=430), DEVICE)
    margs = _to(random_mqa_args(n=1, c=8, h=5, w=4, num_heads=2, key_dim=8, kv_stride=2, seed=431), DEVICE)

    def f(ua, ma):
        return torch.ops.mnv4.uib_triton(*ua), torch.ops.mnv4.mqa_triton(*ma)

    u, m = torch.compile(f, fullgraph=True, backend="aot_eager")(uargs, margs)
    assert rel_err(u, F.uib(*_to(uargs, "cpu"))) <= 1e-5
    assert rel_err(m, F.mqa(*_to(margs, "cpu"))) <= 1e-5


# ---------------------------------------------------------------- bad input

def _uib_bad():
    base = dict(n=1, cin=8, h=6, w=6, mid=16, cout=8, k_start=3, k_mid=3, stride=1, residual=True)

    def mk(**kw):
        return list(random_uib_args(**{**base, **kw}))

    cases = []

    def case(name, mutate, **kw):  # mutate(args) in place; the error message must name `name`
        cases.append(pytest.param(mk(**kw), mutate, name, id=f"{name}-{len(cases)}"))

    case("x", lambda a: a.__setitem__(0, a[0][0]))  # 3-D
    case("x", lambda a: a.__setitem__(0, a[0].to(torch.int32)))
    case("x", lambda a: a.__setitem__(0, a[0][:, :, :0]))  # no rows
    case("start_dw_b", lambda a: a.__setitem__(2, None))
    case("start_dw_w", lambda a: a.__setitem__(1, a[1][:4]))  # wrong channels
    case("start_dw_w", lambda a: a.__setitem__(1, torch.randn(8, 1, 2, 2)))  # even kernel
    case("start_dw_w", lambda a: a.__setitem__(1, torch.randn(8, 1, 3, 5)))  # not square
    case("start_dw_w", lambda a: a.__setitem__(1, a[1].half()))  # mixed dtype
    case("expand_w", lambda a: a.__setitem__(3, a[3][:, :4]))
    case("expand_w", lambda a: a.__setitem__(3, torch.randn(16, 8, 3, 3)))  # not 1x1
    case("expand_b", lambda a: a.__setitem__(4, a[4][:3]))
    case("mid_dw_w", lambda a: a.__setitem__(5, a[5][:3]))
    case("mid_dw_w", lambda a: a.__setitem__(5, torch.randn(16, 2, 3, 3)))  # not depthwise
    case("mid_dw_b", lambda a: a.__setitem__(6, torch.randn(15)))
    case("proj_w", lambda a: a.__setitem__(7, torch.randn(8, 15, 1, 1)))
    case("proj_b", lambda a: a.__setitem__(8, torch.randn(9)))
    case("stride", lambda a: a.__setitem__(9, 3), residual=False)
    case("stride", lambda a: a.__setitem__(9, 2), k_start=0, k_mid=0, residual=False)  # FFN cannot stride
    case("residual", lambda a: a.__setitem__(9, 2))  # residual with stride 2
    case("residual", lambda a: None, cout=5)  # residual with Cin != Cout
    case("activation", lambda a: a.__setitem__(11, "swish"))
    return cases


def _mqa_bad():
    base = dict(n=1, c=8, h=5, w=5, num_heads=2, key_dim=8, kv_stride=2)
    cases = []

    def case(name, mutate, **kw):
        cases.append(pytest.param(list(random_mqa_args(**{**base, **kw})), mutate, name, id=f"{name}-{len(cases)}"))

    case("x", lambda a: a.__setitem__(0, a[0].reshape(1, 8, 25)))
    case("x", lambda a: a.__setitem__(0, a[0].double()))
    case("norm_scale", lambda a: a.__setitem__(1, a[1][:7]))
    case("norm_shift", lambda a: a.__setitem__(2, a[2].half()))
    case("num_heads", lambda a: a.__setitem__(11, 0))
    case("num_heads", lambda a: a.__setitem__(11, 3))  # does not divide 16
    case("q_w", lambda a: a.__setitem__(3, torch.randn(16, 7, 1, 1)))
    case("k_w", lambda a: a.__setitem__(6, torch.randn(4, 8, 1, 1)))  # dk 8 expected
    case("v_w", lambda a: a.__setitem__(9, torch.randn(8, 9, 1, 1)))
    case("o_w", lambda a: a.__setitem__(10, torch.randn(8, 15, 1, 1)))
    case("kv_stride", lambda a: a.__setitem__(12, 3))
    case("kv_stride", lambda a: None, kv_dw=False)  # stride 2 without the dw weights
    case("k_dw_b", lambda a: a.__setitem__(5, None))
    case("v_dw_w", lambda a: (a.__setitem__(7, None), a.__setitem__(8, None)))  # k dw without v dw
    case("v_dw_w", lambda a: (a.__setitem__(7, torch.randn(8, 1, 5, 5))))  # kernel sizes differ
    case("residual", lambda a: None, cout=6)
    return cases


@pytest.mark.parametrize("args,mutate,name", _uib_bad())
def test_uib_bad_input(args, mutate, name):
    mutate(args)
    with pytest.raises(RuntimeError, match=rf"\b{re.escape(name)}\b"):
        torch.ops.mnv4.uib_triton(*_to(args, DEVICE))


@pytest.mark.parametrize("args,mutate,name", _mqa_bad())
def test_mqa_bad_input(args, mutate, name):
    mutate(args)
    with pytest.raises(RuntimeError, match=rf"\b{re.escape(name)}\b"):
        torch.ops.mnv4.mqa_triton(*_to(args, DEVICE))


def test_cpu_tensor_without_interpreter_is_rejected():
    """Outside the interpreter the kernels need CUDA tensors: a CPU x gets a clear error naming x (run in a
    fresh process without TRITON_INTERPRET; it must exit normally, not die of a signal)."""
    import subprocess
    import sys

    code = ("import torch, mnv4_kernels.triton\n"
            "from mnv4_reference.testing import random_uib_args\n"
            "try:\n"
            "    torch.ops.mnv4.uib_triton(*random_uib_args(1, 8, 4, 4, 16, 8))\n"
            "except RuntimeError as e:\n"
            "    print('REJECTED', e)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "REJECTED" in r.stdout and "x must be a CUDA tensor" in r.stdout, r.stdout + r.stderr[-2000:]


def test_kernels_compile_for_sm90():
    """The interpreter does not lower the kernels; Triton's bundled ptxas does, without a GPU: every kernel
    (uib in its four forms, hoisted and chunked A tile; mqa K/V and attention, 4 and 8 heads) compiles for
    sm_90 in fp16 (bf16 takes the same path; fp32 IEEE dots compile for minutes: left to the GPU run), and
    no uib kernel (ReLU, GELU and none) holds a NaN-dropping max/min in its TTIR (aot_check exits non-zero)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-m", "mnv4_kernels.triton.aot_check", "--arch", "90", "--dtypes", "fp16"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "compiled 8 kernels for sm_90" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
