"""NaN propagates through the CPU ops and the fused models as through plain torch (DESIGN.md: "NaN propagates as
through torch.relu / gelu").

The op files' NaN tests (test_{uib,mqa,conv,pointwise,sequence}_cpu.py, `-k nan`: every UIB form, both layouts,
NaN in x and in a weight) run in-process on this CPU's default microkernel table; here they run again in a
fresh process under each table forced by MNV4_CPU_ISA (scalar, avx2, avx512 on x86-64) and under the UIB
schedules other than row bands forced by MNV4_UIB_SPLIT (mid-channel slices, whole images per task). Then whole fused models: a checkpoint with one NaN stem weight gives NaN
logits where the reference model does, and a NaN pixel in one image makes that image's logits NaN and no
other's.
"""

import os
import platform
import subprocess
import sys

import pytest
import torch

import mnv4_kernels
from mnv4_reference import randomized_model
from nan_reference import assert_nan_like

TESTS = os.path.dirname(os.path.abspath(__file__))
OP_FILES = [os.path.join(TESTS, f"test_{op}_cpu.py") for op in ("uib", "mqa", "conv", "pointwise", "sequence")]
X86 = platform.machine() in ("x86_64", "AMD64")

# Checks that the requested table is the one in use (where this CPU has it), then runs the NaN tests.
DRIVER = r"""
import os, sys, torch, pytest, mnv4_kernels
want = {"scalar": "scalar", "avx2": "avx2_fma", "avx512": "avx512"}.get(os.environ.get("MNV4_CPU_ISA"))
have = torch.ops.mnv4_cpu.isa()
if want and have != want and not (want == "avx512" and sys.argv[1] == "no-avx512"):
    raise SystemExit(f"MNV4_CPU_ISA={os.environ['MNV4_CPU_ISA']} gave the {have} table")
print("table", have)
raise SystemExit(pytest.main(["-q", "-p", "no:cacheprovider", "-k", "nan", *sys.argv[2:]]))
"""


def _has_avx512():
    try:
        with open("/proc/cpuinfo") as f:
            return " avx512f" in f.read()
    except OSError:
        return False


@pytest.mark.parametrize("env", [
    {"MNV4_CPU_ISA": "scalar"},
    pytest.param({"MNV4_CPU_ISA": "avx2"}, marks=pytest.mark.skipif(not X86, reason="an x86-64 table")),
    pytest.param({"MNV4_CPU_ISA": "avx512"}, marks=pytest.mark.skipif(not X86, reason="an x86-64 table")),
    {"MNV4_UIB_SPLIT": "mid"},
    {"MNV4_UIB_SPLIT": "images"},
], ids=["scalar", "avx2", "avx512", "uib-mid", "uib-images"])
def test_op_nan_tests_under_each_table_and_schedule(env):
    files = OP_FILES[:1] if "MNV4_UIB_SPLIT" in env else OP_FILES
    r = subprocess.run([sys.executable, "-c", DRIVER, "avx512" if _has_avx512() else "no-avx512", *files],
                       cwd=os.path.dirname(TESTS), env=dict(os.environ, **env), capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert " passed" in r.stdout and " failed" not in r.stdout, r.stdout[-3000:]


@pytest.mark.parametrize("name", ["mobilenetv4_conv_small", "mobilenetv4_hybrid_medium"])
def test_fused_model_nan_as_the_reference(name):
    ref = randomized_model(name, seed=3, num_classes=50, input_size=(64, 64))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    fused = mnv4_kernels.fuse(ref)
    assert {b for *_, b in fused.block_backends} == {"cpu"}  # the CPU ops, not the reference backend
    with torch.no_grad():
        # a NaN pixel in image 0: its logits all NaN, image 1's finite
        xn = x.clone()
        xn[0, 1, 40, 9] = float("nan")
        want, got = ref(xn), fused(xn)
        assert want[0].isnan().all() and not want[1].isnan().any()
        assert_nan_like(got, want, 1e-5)
        # one NaN stem weight (a corner tap): the reference's logits are NaN, and so are the fused model's
        ref.conv_stem.weight[5, 1, 0, 0] = float("nan")
        fused = mnv4_kernels.fuse(ref)
        want, got = ref(x), fused(x)
        assert want.isnan().any()
        assert torch.equal(got.isnan(), want.isnan())
