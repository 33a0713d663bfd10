"""fp16 on the f16 kernels: the CPU ops and the fused model on fp16 activations where the f16 table has fp16
arithmetic (aarch64 with FP16: neon_fp16, FMLA .8h), kernel_set.h's f16_kernels.

No CI machine runs neon_fp16 natively, so these tests run the same schedules on neon_fp16_emu, a portable table
with neon_fp16's arithmetic (fp16 fused multiply-adds in chunks of 8 products, then fp32 accumulation:
csrc/cpu/kernels/fallback/bf16_scalar.cpp), forced by MNV4_CPU_LP_ISA in a subprocess;
tests/test_microkernels.py checks, under qemu-aarch64, that the emulation and FMLA .8h agree bit for bit.
Elsewhere (x86) fp16 is computed in fp32 and its tests are test_bf16_model.test_accuracy_contract_fp16 and the
ops' fp16 cases.

References: the composites of bf16_reference.py, which follow x's dtype (fp16 operands, fp32 sums, each stored
stage rounded to fp16 where the kernels round it), within F16_TOL (bf16_reference.py: the chunked fp16 sums);
NaN where the composite has NaN and only there. The model: the accuracy contract of test_bf16_model.py (logits
within 1.5x the error of the reference run in fp16 by torch) for all twelve models, every step on the CPU ops.
"""

import os
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as TF

import mnv4_kernels  # noqa: F401  (registers the ops)

from mnv4_reference.testing import random_mqa_args, random_uib_args, run_script
from bf16_reference import F16_TOL, round_to, staged_conv, staged_mqa, staged_uib
from nan_reference import assert_nan_like

h = torch.float16
TABLE = "neon_fp16_emu"


def _check(out, ref, x):
    assert out.dtype == h
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    assert out.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
    assert_nan_like(out.float(), ref, F16_TOL)


def uib_checks():
    import test_bf16_model as t
    for case in t.BATTERY:
        for cl in (False, True):
            args = random_uib_args(**case, dtype=h, channels_last=cl)
            _check(torch.ops.mnv4.uib(*args), staged_uib(*args), args[0])
    for split in ("rows", "mid", "images"):  # each schedule, forced; a NaN pixel in the last image too
        os.environ["MNV4_UIB_SPLIT"] = split
        cases = t.MID_SPLIT_CASES if split == "mid" else t.SCHEDULE_CASES
        for i, case in enumerate(cases):
            args = random_uib_args(**case, dtype=h, channels_last=True, seed=i)
            _check(torch.ops.mnv4.uib(*args), staged_uib(*args), args[0])
            x = args[0].clone()
            x[-1, 1, x.shape[2] // 2, 1] = float("nan")
            args = (x,) + args[1:]
            ref = staged_uib(*args)
            assert ref.isnan().any() and not ref.isnan().all()
            _check(torch.ops.mnv4.uib(*args), ref, x)
    del os.environ["MNV4_UIB_SPLIT"]


def conv_checks():
    import test_bf16_model as t
    for n, c, hh, w, o, k, s, p, res, act, pact in t.CONV_CASES:
        for cl in (False, True):
            g = torch.Generator().manual_seed(n * c + hh)
            x = torch.randn(n, c, hh, w, generator=g).to(h)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            wt = (torch.randn(o, c, k, k, generator=g) / (c * k * k) ** 0.5).to(h)
            b = (0.1 * torch.randn(o, generator=g)).to(h)
            pw = (torch.randn(p, o, 1, 1, generator=g) / o ** 0.5).to(h) if p else None
            pb = (0.1 * torch.randn(p, generator=g)).to(h) if p else None
            for xx in (x, x.clone().index_put_((torch.tensor(0), torch.tensor(c // 2), torch.tensor(hh // 2),
                                                 torch.tensor(w // 2)), torch.tensor(float("nan"), dtype=h))):
                out = torch.ops.mnv4_cpu.conv(xx, wt, b, s, act, pw, pb, res, cl, pact)
                _check(out, staged_conv(xx, wt, b, s, act, pw, pb, res, pact), xx)


def pointwise_checks():
    for shape in [(2, 17, 5, 3), (1, 64, 1, 1), (3, 960), (1, 1280)]:
        for o in (7, 40, 1000):
            g = torch.Generator().manual_seed(o + shape[1])
            x = torch.randn(*shape, generator=g).to(h)
            if x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            c = shape[1]
            wt = (torch.randn(o, c, generator=g) / c ** 0.5).to(h)
            b = (0.1 * torch.randn(o, generator=g)).to(h)
            x[0, c - 1] = float("nan")
            out = torch.ops.mnv4_cpu.pointwise(x, wt if x.dim() == 2 else wt[:, :, None, None], b, "relu")
            ref = torch.relu(TF.linear(x.float().movedim(1, -1), wt.float(), b.float())).movedim(-1, 1)
            _check(out, round_to(ref, h), x)


def mqa_checks():
    import test_mqa_cpu as t
    for c in t.BF16_CASES:
        for cl in (False, True):
            args = random_mqa_args(**c, dtype=h, channels_last=cl)
            out = torch.ops.mnv4.mqa(*args)
            assert out.dtype == h and out.stride() == t._expected_strides(args)
            assert_nan_like(out.float(), staged_mqa(*args), F16_TOL)
    for c in t.MQA_NAN_CASES:
        t._nan_check(c, True, h)


def model_checks():
    import test_bf16_model as t
    for name in t.MODELS:
        e_ours, e_torch, fused = t.contract(name, h)
        print(f"{name}: fp16 fused {e_ours:.3e}, torch fp16 {e_torch:.3e}")
        assert e_ours <= t.LOW_PRECISION_ERROR_FACTOR * e_torch, (name, e_ours, e_torch)
        pooled = "_aa_" in name or "_blur_" in name
        assert {b for _, _, b, _ in fused.steps} == ({"cpu", "composite"} if pooled else {"cpu"}), fused.summary()


def _run(what):
    """`what` (a function of this module) in a fresh process on the emulated table, with 2 threads; the
    subprocess checks that the fp16 ops run that table."""
    script = textwrap.dedent(f"""
        import torch, mnv4_kernels, test_fp16_cpu as t
        assert torch.ops.mnv4_cpu.f16_isa() == "{TABLE}", torch.ops.mnv4_cpu.f16_isa()
        torch.set_num_threads(2)
        t.{what}()
        print("ok")
    """)
    path = os.pathsep.join([os.path.dirname(os.path.abspath(__file__))] + [p for p in sys.path if p])
    out = run_script(script, timeout=1200, env=dict(os.environ, MNV4_CPU_LP_ISA=TABLE, PYTHONPATH=path)).stdout
    assert out.strip().endswith("ok"), out
    return out


@pytest.mark.parametrize("what", ["uib_checks", "conv_checks", "pointwise_checks", "mqa_checks"])
def test_ops_fp16_kernels(what):
    _run(what)


def test_accuracy_contract_fp16_kernels():
    print(_run("model_checks"))


def test_f16_isa_here():
    """What fp16 runs on this machine: neon_fp16 on aarch64 with FP16 arithmetic, else fp32 (x86 has no f16
    table; there the fp16 tests of the other files apply)."""
    import platform
    hp = False
    if platform.machine() in ("aarch64", "arm64") and os.path.exists("/proc/cpuinfo"):
        hp = " asimdhp" in open("/proc/cpuinfo").read()
    want = "neon_fp16" if hp else "fp32"
    if os.environ.get("MNV4_CPU_LP_ISA"):
        pytest.skip("MNV4_CPU_LP_ISA forces a table in this process")
    assert torch.ops.mnv4_cpu.f16_isa() == want
