"""fp16 on the f16 kernels: the CPU ops and the fused model on fp16 activations where the f16 table has fp16
arithmetic (aarch64 with FP16: neon_fp16, FMLA .8h; x86 with AVX512-FP16: avx512fp16, vfmadd231ph),
kernel_set.h's f16_kernels.

Every CI machine runs these on two portable tables, forced by MNV4_CPU_LP_ISA in a subprocess:
  neon_fp16_emu: neon_fp16's arithmetic output by output (fp16 fused multiply-adds in chunks of 8 products,
    then fp32 accumulation: csrc/cpu/kernels/fallback/bf16_scalar.cpp);
  avx512fp16_emu: avx512fp16's kernel code over portable fp16 vectors (chunks of 16: fallback/f16_fma_emu.cpp).
tests/test_microkernels.py checks that each table computes the chunked fp16 arithmetic bit for bit, FMLA .8h
under qemu-aarch64 and vfmadd231ph where the CPU has it; there avx512fp16 runs these tests natively too.
Without a table forced, a CPU without fp16 arithmetic computes fp16 in fp32; the other files' fp16 tests follow
whichever path runs (bf16_reference.f16_on_kernels). The pointwise op (the heads) computes fp16 in fp32 on every
CPU.

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

import mnv4_kernels  # noqa: F401  (registers the ops)

from mnv4_reference.testing import random_mqa_args, random_uib_args, run_script
from bf16_reference import staged_uib

f16 = torch.float16


def _has_avx512fp16():
    from mnv4_kernels import report
    return all(f in report.cpu_flags() for f in ("avx512_fp16", "avx512bw", "avx512vl"))


# the tables these tests force: both emulations everywhere, the native one where the CPU has it
TABLES = ["neon_fp16_emu", "avx512fp16_emu"] + (["avx512fp16"] if _has_avx512fp16() else [])


def uib_checks():
    import test_bf16_model as t
    for case in t.BATTERY:
        for cl in (False, True):
            args = random_uib_args(**case, dtype=f16, channels_last=cl)
            t._check(torch.ops.mnv4.uib(*args), staged_uib(*args), args[0], f16)
    for split in ("rows", "mid", "images"):  # each schedule, forced; a NaN pixel in the last image too
        os.environ["MNV4_UIB_SPLIT"] = split
        t._check_uib_cases(t.MID_SPLIT_CASES if split == "mid" else t.SCHEDULE_CASES, f16)
    del os.environ["MNV4_UIB_SPLIT"]


def conv_checks():
    import test_bf16_model as t
    for case in t.CONV_CASES:
        for layout in ("nchw", "channels_last"):
            t._conv_case(case, layout, f16)


def pointwise_checks():
    import test_bf16_model as t
    for shape in t.POINTWISE_SHAPES:
        for o in (7, 40, 1000):
            t._pointwise_case(shape, o, f16)


def mqa_checks():
    import test_mqa_cpu as t
    for c in t.BF16_CASES:
        for cl in (False, True):
            t._check_lp(random_mqa_args(**c, dtype=f16, channels_last=cl))
    for c in t.MQA_NAN_CASES:
        t._nan_check(c, True, f16)


def model_checks():
    import test_bf16_model as t
    for name in t.MODELS:
        e_ours, e_torch, fused = t.contract(name, f16)
        print(f"{name}: fp16 fused {e_ours:.3e}, torch fp16 {e_torch:.3e}")
        assert e_ours <= t.LOW_PRECISION_ERROR_FACTOR * e_torch, (name, e_ours, e_torch)
        pooled = "_aa_" in name or "_blur_" in name
        assert {b for _, _, b, _ in fused.steps} == ({"cpu", "composite"} if pooled else {"cpu"}), fused.summary()


def _run(what, table):
    """`what` (a function of this module) in a fresh process on f16 table `table`, with 2 threads; the subprocess
    checks that the fp16 ops run that table."""
    script = textwrap.dedent(f"""
        import torch, mnv4_kernels, test_fp16_cpu as t
        assert torch.ops.mnv4_cpu.f16_isa() == "{table}", torch.ops.mnv4_cpu.f16_isa()
        torch.set_num_threads(2)
        t.{what}()
        print("ok")
    """)
    path = os.pathsep.join([os.path.dirname(os.path.abspath(__file__))] + [p for p in sys.path if p])
    out = run_script(script, timeout=1200, env=dict(os.environ, MNV4_CPU_LP_ISA=table, PYTHONPATH=path)).stdout
    assert out.strip().endswith("ok"), out
    return out


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("what", ["uib_checks", "conv_checks", "pointwise_checks", "mqa_checks"])
def test_ops_fp16_kernels(what, table):
    _run(what, table)


@pytest.mark.parametrize("table", TABLES)
def test_accuracy_contract_fp16_kernels(table):
    print(_run("model_checks", table))


def test_f16_isa_here():
    """What fp16 runs on this machine: neon_fp16 on aarch64 with FP16 arithmetic, avx512fp16 on x86 with
    AVX512-FP16, else fp32 (there the fp16 tests of the other files apply)."""
    import platform
    hp = False
    if platform.machine() in ("aarch64", "arm64") and os.path.exists("/proc/cpuinfo"):
        hp = " asimdhp" in open("/proc/cpuinfo").read()
    want = "neon_fp16" if hp else "avx512fp16" if _has_avx512fp16() else "fp32"
    if os.environ.get("MNV4_CPU_LP_ISA"):
        pytest.skip("MNV4_CPU_LP_ISA forces a table in this process")
    assert torch.ops.mnv4_cpu.f16_isa() == want
