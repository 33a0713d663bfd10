"""torch.ops.mnv4_cpu.sequence (csrc/cpu/sequence.cpp): a chain of the CPU ops in one call, which the fused
models' forward uses on the CPU.

A program covering every step kind against plain torch in float64 (F.conv2d, mnv4_reference.functional's uib
and mqa composites, mean, linear); whole fused models against the reference model, through the one call
(asserted with the profiler) and bit-identical to their blocks called one by one; forward hooks keep the
per-block path; opcheck; rejected programs name what is wrong.
"""

import copy
import re

import pytest
import torch
import torch.nn.functional as TF

import mnv4_kernels
from mnv4_kernels import ops as mops
from mnv4_reference import functional as RF
from mnv4_reference import randomized_model
from mnv4_reference.testing import random_mqa_args, random_uib_args, rel_err
from bf16_reference import f16_on_kernels
from nan_reference import assert_nan_like

sequence = torch.ops.mnv4_cpu.sequence
FP32_TOL = 1e-5
CONV, POINTWISE, UIB, MQA, MEAN = range(5)
ACT = {"none": 0, "relu": 1, "gelu": 2}
TORCH_ACT = {"none": lambda t: t, "relu": torch.relu, "gelu": lambda t: TF.gelu(t, approximate="none")}


def _program(channels_last):
    """(x, tensors, program, float64 reference function): stem conv (s2, relu, channels_last out) -> FusedIB-like
    conv (3x3 + 1x1 projection with its own gelu, residual) -> conv 1x1 through pointwise (gelu) -> UIB
    ExtraDW (s2) -> MQA (kv stride 2) -> mean -> pointwise (relu) -> pointwise (classifier). Fresh random
    values."""
    g = torch.Generator().manual_seed(7)

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    x = rnd(2, 3, 19, 22)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    stem_w, stem_b = rnd(16, 3, 3, 3, scale=27 ** -0.5), rnd(16, scale=0.1)
    er_w, er_b = rnd(32, 16, 3, 3, scale=144 ** -0.5), rnd(32, scale=0.1)
    er_pw, er_pb = rnd(16, 32, 1, 1, scale=32 ** -0.5), rnd(16, scale=0.1)
    pw_w, pw_b = rnd(24, 16, 1, 1, scale=16 ** -0.5), rnd(24, scale=0.1)
    _, *uib = random_uib_args(1, 24, 1, 1, 72, 40, k_start=3, k_mid=5, stride=2, seed=3)
    _, *mqa = random_mqa_args(1, 40, 1, 1, num_heads=2, key_dim=16, kv_stride=2, seed=4)
    head_w, head_b = rnd(64, 40, scale=40 ** -0.5), rnd(64, scale=0.1)
    cls_w, cls_b = rnd(10, 64, scale=64 ** -0.5), rnd(10, scale=0.1)
    inner = mops.channels_innermost  # the weights' layout in a fused model (any layout is accepted)
    tensors = [inner(stem_w), stem_b, None, None,
               inner(er_w), er_b, inner(er_pw), er_pb,
               pw_w, pw_b,
               *uib[:8],
               *mqa[:10],
               inner(head_w), head_b,
               cls_w, cls_b]
    program = [CONV, 2, ACT["relu"], mops.seq_conv_flags(channels_last=True),
               CONV, 1, ACT["relu"], mops.seq_conv_flags(residual=True, proj_activation="gelu"),
               POINTWISE, 0, ACT["gelu"], 0,
               UIB, 2, ACT["relu"], 0,
               MQA, 2, 2, 1,
               MEAN, 0, 0, 0,
               POINTWISE, 0, ACT["relu"], 0,
               POINTWISE, 0, ACT["none"], 0]

    def reference(x):
        d = lambda t: None if t is None or isinstance(t, (int, bool, str)) else t.double()  # noqa: E731
        h = torch.relu(TF.conv2d(x.double(), d(stem_w), d(stem_b), 2, 1))
        h = TORCH_ACT["gelu"](TF.conv2d(torch.relu(TF.conv2d(h, d(er_w), d(er_b), 1, 1)), d(er_pw), d(er_pb))) + h
        h = TORCH_ACT["gelu"](TF.conv2d(h, d(pw_w), d(pw_b)))
        h = RF.uib(h, *[d(t) for t in uib[:8]], *uib[8:])
        h = RF.mqa(h, *[d(t) for t in mqa[:10]], *mqa[10:])
        h = torch.relu(TF.linear(h.mean((2, 3)), d(head_w), d(head_b)))
        return TF.linear(h, d(cls_w), d(cls_b))

    return x, tensors, program, reference


@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_program_vs_torch(channels_last, num_threads):
    x, tensors, program, reference = _program(channels_last)
    prev = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        got = sequence(x, tensors, program)
    finally:
        torch.set_num_threads(prev)
    want = reference(x)
    assert got.shape == (2, 10) and got.dtype == torch.float32
    assert want.abs().max() > 1e-2
    assert rel_err(got, want) <= FP32_TOL


def test_zero_batch_and_low_precision():
    x, tensors, program, reference = _program(True)
    empty = sequence(x[:0], tensors, program)
    assert empty.shape == (0, 10)
    # bf16 activations and weights: each step is its op (computed in fp32, output rounded to bf16; the ops'
    # own tests hold them to the composites), so the chain equals the ops called one after another
    xb, t = x.bfloat16(), [None if v is None else v.bfloat16() for v in tensors]
    got = sequence(xb, t, program)
    assert got.dtype == torch.bfloat16 and torch.equal(got, _ops_one_by_one(xb, t))
    assert rel_err(got, reference(x)) <= 0.02  # still the same network: 8 steps of bf16 rounding (0.004 here)


def _ops_one_by_one(x, t):
    """_program's steps as separate op calls."""
    ops, cpu = torch.ops.mnv4, torch.ops.mnv4_cpu
    h = cpu.conv(x, t[0], t[1], 2, "relu", None, None, False, True)
    h = cpu.conv(h, t[4], t[5], 1, "relu", t[6], t[7], True, False, "gelu")
    h = cpu.pointwise(h, t[8], t[9], "gelu")
    h = ops.uib(h, *t[10:18], 2, False, "relu")
    h = ops.mqa(h, *t[18:28], 2, 2, True)
    return cpu.pointwise(cpu.pointwise(cpu.mean(h), t[28], t[29], "relu"), t[30], t[31], "none")


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_fp16_chain(channels_last):
    """fp16 x and constants where the ops compute fp16 in fp32 (x86): the chain in fp32 from end to end, rounded
    to fp16 once (op by op each step would round its output), so it equals the fp32 chain on the same values;
    the fp32 copies are made once, also under inference_mode; mixed dtypes are still refused. Where the ops run
    the f16 kernels (bf16_reference.f16_on_kernels): the chain equals the ops called one after another, as in
    bf16."""
    x, tensors, program, reference = _program(channels_last)
    xh, th = x.half(), [None if v is None else v.half() for v in tensors]
    if f16_on_kernels():
        got = sequence(xh, th, program)
        assert got.dtype == torch.float16 and torch.equal(got, _ops_one_by_one(xh, th))
        assert rel_err(got, reference(x)) <= 5e-3  # 8 steps of fp16 rounding and chunked fp16 sums
        with pytest.raises(RuntimeError, match="dtype"):
            sequence(xh, tensors, program)
        return
    want = sequence(xh.float(), [None if v is None else v.float() for v in th], program).half()
    entries = torch.ops.mnv4_cpu.packed_cache_entries

    def new_entries(fn):
        before = entries()
        out = fn()
        return out, entries() - before

    fresh = [None if v is None else v.clone() for v in th]
    got, outside = new_entries(lambda: sequence(xh, fresh, program))
    with torch.inference_mode():
        # as many cache entries (fp32 copies and their packed forms) as outside it, then no more
        got_inside, inside = new_entries(lambda: sequence(xh, th, program))
        again, more = new_entries(lambda: sequence(xh, th, program))
    assert outside > 0 and inside == outside and more == 0, (outside, inside, more)
    assert got.dtype == torch.float16 and all(torch.equal(t, want) for t in (got, got_inside, again))
    assert rel_err(got, reference(x)) <= 2e-3  # fp16 rounding of the inputs and the result only
    with pytest.raises(RuntimeError, match="mixed dtypes"):
        sequence(xh, tensors, program)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_opcheck(channels_last):
    x, tensors, program, _ = _program(channels_last)
    torch.library.opcheck(sequence.default, (x, tensors, program))


def _ran_sequence(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = fn()
    return out, any(e.key == "mnv4_cpu::sequence" for e in prof.key_averages())


# Uncalibrated random models (see test_mqa_cpu.py: the fp32 reference stays within ~6e-7 of fp64).
MODELS = [("mobilenetv4_conv_small", (2, 3, 96, 80)), ("mobilenetv4_conv_medium", (1, 3, 97, 75)),
          ("mobilenetv4_conv_large", (2, 3, 64, 64)), ("mobilenetv4_hybrid_medium_075", (2, 3, 96, 96))]


@pytest.mark.parametrize("name,shape", MODELS, ids=[n for n, _ in MODELS])
def test_fused_models_in_one_call(name, shape):
    ref = randomized_model(name, calibrate=False)
    fused = mnv4_kernels.fuse(ref, backend="cpu")
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, used = _ran_sequence(lambda: fused(x))
        one_by_one = fused.forward_head(fused.forward_features(x))
        want = ref(x)
    assert used
    assert torch.equal(got, one_by_one)  # the same kernels, in the same order
    assert want.abs().max() > 1e-2
    assert rel_err(got, want) <= FP32_TOL


def test_conv_small_pairs_run_as_one_step():
    """Conv-S's stages 0 and 1 (k x k conv -> 1x1 conv, each with relu) are one conv step each, the 1x1 conv as
    its projection with the projection's relu; the logits are those of the blocks one by one (above)."""
    fused = mnv4_kernels.fuse(randomized_model("mobilenetv4_conv_small", calibrate=False), backend="cpu")
    program, refs = fused._sequence()
    steps = [program[i:i + 4] for i in range(0, len(program), 4)]
    assert len(steps) == 1 + len(fused.blocks) - 2 + 3  # stem, blocks less the two merged 1x1s, head (3)
    merged = [s for s in steps if s[0] == CONV and s[3] >> 2 == ACT["relu"]]
    assert len(merged) == 2
    proj = [m for m, k in refs if k == "weight" and m is not None and m.weight.shape[-1] == 1]
    assert proj[:2] == [fused.blocks[1], fused.blocks[3]]  # blocks.0.1, blocks.1.1 as projections
    unmerged, _ = fused._sequence(merge=False)  # benches/forward_cpu.py's other candidate; the plan is kept
    assert len(unmerged) == len(program) + 8 and fused._sequence()[0] == program


def test_hooks_and_other_backends_keep_the_blocks():
    ref = randomized_model("mobilenetv4_conv_small", calibrate=False)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    fused = mnv4_kernels.fuse(ref, backend="cpu")
    seen = []
    handle = fused.blocks[3].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        got, used = _ran_sequence(lambda: fused(x))
    handle.remove()
    assert not used and len(seen) == 1
    with torch.no_grad():
        assert torch.equal(fused(x), got)
    # a block replaced after fusing: the program follows it (a copy with its weights doubled; then a block on
    # torch convs, which leaves no program)
    changed = copy.deepcopy(fused.blocks[5])
    for name, buf in changed.named_buffers():
        if name.endswith("_w") or name == "weight":
            buf.mul_(2.0)
    fused.blocks[5] = changed
    with torch.no_grad():
        swapped, used = _ran_sequence(lambda: fused(x))
        assert used and torch.equal(swapped, fused.forward_head(fused.forward_features(x)))
    assert (swapped - got).abs().max() > 1e-3
    fused.blocks[5] = mnv4_kernels.fuse(ref, backend="reference").blocks[5]
    with torch.no_grad():
        _, used = _ran_sequence(lambda: fused(x))
    assert not used
    # a model that does not run on the CPU ops alone (torch convs; anti-aliased blocks) has no program
    assert mnv4_kernels.fuse(ref, backend="reference")._sequence() is None
    aa = randomized_model("mobilenetv4_conv_aa_medium", calibrate=False)
    assert mnv4_kernels.fuse(aa, backend="cpu")._sequence() is None


def test_bad_programs_name_the_problem():
    x, tensors, program, _ = _program(True)
    cases = {
        "4 ints per step": (tensors, program[:-1]),
        "at least one step": ([], []),
        "unknown op code 9": (tensors, [9, 0, 0, 0] + program[4:]),
        "take 32 tensors; got 31": (tensors[:-1], program),
        "tensors[4] (step 1's weight) must not be None": (tensors[:4] + [None] + tensors[5:], program),
        "tensors[12] (step 3's expand_w)": (tensors[:12] + [None] + tensors[13:], program),
        "activation code": (tensors, program[:2] + [7] + program[3:]),
        "program step 1: activation code must be 0 (none), 1 (relu) or 2 (gelu); got 5":
            (tensors, program[:7] + [1 + 4 * 5] + program[8:]),
        "mean needs a 4-D input": (tensors[:-2], program[:-4] + [MEAN, 0, 0, 0]),
    }
    for fragment, (t, p) in cases.items():
        with pytest.raises(RuntimeError, match=re.escape(fragment)):
            sequence(x, t, p)
    # a step's own checks still apply (the uib weight does not match the channels reaching it)
    bad = list(tensors)
    bad[12] = tensors[12][:, :8]  # expand_w for 8 input channels; 24 reach the block
    with pytest.raises(RuntimeError, match="mnv4::uib.*expand_w"):
        sequence(x, bad, program)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_nan_propagates_as_in_torch(channels_last):
    """A NaN in image 0 makes all its logits NaN and none of image 1's; a NaN on the UIB's mid dw centre tap
    (set in place on the tensor the program and the reference share) all of them, as in torch."""
    x, tensors, program, reference = _program(channels_last)
    x = x.clone()  # keeps the memory format
    x[0, 1, 5, 7] = float("nan")
    got, want = sequence(x, tensors, program), reference(x)
    assert want[0].isnan().all() and not want[1].isnan().any()
    assert_nan_like(got, want, FP32_TOL)
    x, tensors, program, reference = _program(channels_last)
    assert tensors[14].shape == (72, 1, 5, 5)  # the UIB's mid dw weight
    tensors[14][3, 0, 2, 2] = float("nan")
    got, want = sequence(x, tensors, program), reference(x)
    assert want.isnan().all()
    assert_nan_like(got, want, FP32_TOL)
