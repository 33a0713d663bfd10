"""torch.ops.mnv4_cpu.mean on the CPU (csrc/cpu/pool.cpp), the fused heads' global average pool, against the mean
in float64 of the same values: shapes (channels 1 and below / at / above a vector, the heads' 960; planes 1x1,
odd, even, one row / column), x layouts (NCHW, channels_last, non-contiguous), fp32 / bf16 / fp16 (summed in fp32,
rounded once), 1 and 2 threads with batches large enough to be split, NaN and infinities, empty batch and
plane, opcheck, torch.compile, and rejected input (in a subprocess that must exit normally).
"""

import textwrap

import pytest
import torch

import mnv4_kernels  # noqa: F401  (registers the op and its fake)
from mnv4_reference.testing import NON_CONTIGUOUS_KINDS, OpModule, non_contiguous, rel_err, run_script
from nan_reference import assert_nan_like

mean = torch.ops.mnv4_cpu.mean
# the fp32 sum of H*W terms (<= 2^-24 * H*W relative to the sum of |x|, here <= 1e-5 of it) and, below fp32, one
# rounding of the result (fp16: 2^-11, bf16: 2^-8 relative)
UNIT_ROUNDOFF = {torch.float32: 0.0, torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}

SHAPES = [(1, 960, 7, 7), (1, 960, 8, 8), (3, 17, 7, 7), (2, 16, 1, 1), (2, 15, 3, 5), (1, 1, 6, 4), (4, 33, 1, 9),
          (5, 8, 11, 1), (64, 1280, 2, 2)]  # the last: 64 images over the threads


def reference(x):
    return x.double().mean((2, 3))


def check(got, x):
    want = reference(x)
    assert got.dtype == x.dtype and got.shape == want.shape
    bound = UNIT_ROUNDOFF[x.dtype] * want.abs() + 1e-5 * x.double().abs().mean((2, 3)) + 1e-30
    err = (got.double() - want).abs()
    assert (err <= bound).all(), f"max error {float(err.max()):.3g} over the bound at {int((err > bound).sum())}"


def _x(shape, dtype, layout, seed):
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3 + 1).to(dtype)
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    return x if layout == "nchw" else non_contiguous(x, layout)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", *NON_CONTIGUOUS_KINDS])
def test_battery(layout, dtype, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for i, shape in enumerate(SHAPES):
            x = _x(shape, dtype, layout, seed=i)
            check(mean(x), x)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_nan_and_infinities_as_in_torch(layout, dtype):
    """A NaN makes its own (image, channel) NaN and nothing else; +inf gives +inf; +inf with -inf gives NaN."""
    x = _x((3, 20, 5, 6), dtype, layout, seed=7)
    x[0, 3, 2, 4] = float("nan")
    x[1, 5, 0, 0] = float("inf")
    x[2, 19, 4, 5] = float("inf")
    x[2, 19, 1, 1] = float("-inf")
    x[2, 0, 4, 5] = float("-inf")
    got, want = mean(x).double(), reference(x)
    finite = want.isfinite()
    assert int(want.isnan().sum()) == 2 and int(want.isinf().sum()) == 2
    assert_nan_like(got[~want.isinf()], want[~want.isinf()], 1e-2)
    assert torch.equal(got[want.isinf()], want[want.isinf()])  # +inf and -inf, signs kept
    assert (got[finite] - want[finite]).abs().max() <= 1e-2 * want[finite].abs().max()


def test_empty_batch_and_plane():
    assert mean(torch.randn(0, 7, 3, 3)).shape == (0, 7)
    x = torch.randn(2, 3, 0, 4)
    empty_plane = mean(x)  # 0 / 0: NaN, as torch's mean
    assert empty_plane.shape == (2, 3) and torch.equal(empty_plane.isnan(), x.mean((2, 3)).isnan())
    assert empty_plane.isnan().all()


def test_opcheck_and_compile():
    for layout in ("nchw", "channels_last"):
        torch.library.opcheck(mean.default, (_x((2, 12, 5, 4), torch.float32, layout, seed=3),))
    x = _x((2, 24, 6, 5), torch.float32, "channels_last", seed=4)
    m = OpModule(mean, ()).eval()  # relu(mean(x)) + 1
    compiled = torch.compile(m, fullgraph=True, backend="inductor")
    assert rel_err(compiled(x), torch.relu(reference(x)) + 1) <= 1e-6


BAD_INPUT_SCRIPT = textwrap.dedent(r"""
    import torch, mnv4_kernels
    from mnv4_reference.testing import check_rejections
    x = torch.randn(2, 8, 5, 4)
    def call(x=x):
        return torch.ops.mnv4_cpu.mean(x)
    cases = {
        "mnv4_cpu::mean: x must be 4-D [N, C, H, W]; got ndim 3": dict(x=x[0]),
        "mnv4_cpu::mean: x must be 4-D [N, C, H, W]; got ndim 2": dict(x=x[:, :, 0, 0]),
        "mnv4_cpu::mean: x must be float32, float16 or bfloat16; got Int": dict(x=x.int()),
        "mnv4_cpu::mean: x must be float32, float16 or bfloat16; got Double": dict(x=x.double()),
    }
    raise SystemExit(check_rejections(call, cases))
""")


def test_bad_input_raises_in_subprocess():
    assert "checked 4" in run_script(BAD_INPUT_SCRIPT).stdout
