"""Autograd of mnv4::uib / mnv4::mqa and their Triton twins (mnv4_kernels.ops.register_autograd).

The backward recomputes the block through mnv4_reference.functional and differentiates it, so the gradients
must equal the composite's own (rel <= 1e-4 in fp32: the forward values come from the kernels, the
gradients from the same composite, so only the summation order of the recomputation differs), and the
forward must keep nothing but its inputs.
"""

import pytest
import torch

import mnv4_kernels  # noqa: F401  registers the ops' fakes and autograd
from mnv4_reference import functional as F
from mnv4_reference.testing import UIB_FORMS, random_mqa_args, random_uib_args, rel_err

TOL = 1e-4


def _leaves(args):
    return [a.detach().clone().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args]


def _grads(fn, args, seed=1):
    """(output, [grad of every tensor argument, None where absent]) of sum(out * g) for a fixed random g."""
    args = _leaves(args)
    out = fn(*args)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.dtype)
    (out * g).sum().backward()
    return out, [a.grad if isinstance(a, torch.Tensor) else None for a in args]


# mqa's k_dw_b shifts every key by the same vector k_w @ b: each query's logits move by one constant, which
# the softmax cancels, so its gradient is zero up to rounding.
MQA_K_DW_B = 5


def _compare(op, composite, args, zero_grads=()):
    out, got = _grads(op, args)
    want_out, want = _grads(composite, args)
    assert rel_err(out, want_out) <= 1e-5
    for i, (a, gw) in enumerate(zip(args, want)):
        if not isinstance(a, torch.Tensor):
            continue
        assert got[i] is not None, f"argument {i} got no gradient"
        if i in zero_grads:
            assert got[i].abs().max() <= 1e-5 and gw.abs().max() <= 1e-5, i
            continue
        assert gw.abs().max() > 0, f"argument {i}: the composite's gradient is zero (the test would be vacuous)"
        assert rel_err(got[i], gw) <= TOL, (i, rel_err(got[i], gw))


UIB_CASES = []
for _form, (_s, _m) in UIB_FORMS.items():
    for _stride in (1, 2):
        if _stride == 2 and not (_s or _m):
            continue
        UIB_CASES.append(pytest.param(dict(k_start=3 if _s else 0, k_mid=5 if _m else 0, stride=_stride),
                                      id=f"{_form}-s{_stride}"))


@pytest.mark.parametrize("act", ["relu", "gelu"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", UIB_CASES)
def test_uib_grads_equal_composite(case, layout, act):
    cin = cout = 12
    args = random_uib_args(2, cin, 7, 6, 40, cout, activation=act, channels_last=layout == "channels_last",
                           seed=3, **case)
    assert args[10] == (case["stride"] == 1)  # residual whenever the shape allows it
    _compare(torch.ops.mnv4.uib, F.uib, args)


def test_uib_grads_without_residual_and_odd_sizes():
    args = random_uib_args(1, 9, 5, 9, 27, 17, k_start=5, k_mid=3, stride=1, residual=False, activation="none",
                           seed=4)
    _compare(torch.ops.mnv4.uib, F.uib, args)


@pytest.mark.parametrize("kv_stride,kv_dw", [(1, False), (1, True), (2, True)])
def test_mqa_grads_equal_composite(kv_stride, kv_dw):
    args = random_mqa_args(2, 16, 6, 5, num_heads=4, key_dim=8, kv_stride=kv_stride, kv_dw=kv_dw, seed=5)
    _compare(torch.ops.mnv4.mqa, F.mqa, args, zero_grads=(MQA_K_DW_B,))


def test_mqa_grads_without_residual():
    args = random_mqa_args(1, 12, 5, 5, num_heads=2, key_dim=8, value_dim=12, cout=10, kv_stride=2,
                           residual=False, seed=6)
    _compare(torch.ops.mnv4.mqa, F.mqa, args, zero_grads=(MQA_K_DW_B,))


def test_only_requested_grads_and_none_for_absent():
    """x alone requires grad: only x gets one; absent dw weights are None, not zeros."""
    args = list(random_uib_args(1, 8, 5, 5, 16, 8, k_start=0, k_mid=3, seed=7))
    x = args[0].clone().requires_grad_(True)
    w = args[3].clone().requires_grad_(True)
    args[0], args[3] = x, w
    torch.ops.mnv4.uib(*args).sum().backward()
    assert x.grad is not None and w.grad is not None
    assert args[1] is None and args[2] is None
    assert all(a.grad is None for a in args[4:9] if isinstance(a, torch.Tensor))
    # and without any input requiring grad, the output does not either
    plain = random_uib_args(1, 8, 5, 5, 16, 8, seed=7)
    assert not torch.ops.mnv4.uib(*plain).requires_grad


@pytest.mark.parametrize("op", ["uib", "mqa"])
def test_forward_saves_only_its_inputs(op):
    """The activation-checkpointing trade: nothing but the op's own inputs is kept for the backward."""
    if op == "uib":
        args = _leaves(random_uib_args(2, 8, 9, 9, 48, 8, seed=8))
    else:
        args = _leaves(random_mqa_args(1, 16, 6, 6, num_heads=2, key_dim=8, kv_stride=2, seed=8))
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = getattr(torch.ops.mnv4, op)(*args)
    inputs = [a for a in args if isinstance(a, torch.Tensor)]
    assert len(saved) == len(inputs)
    assert all(any(s is a for a in inputs) for s in saved)
    out.sum().backward()
    assert all(a.grad is not None for a in inputs)


@pytest.mark.parametrize("op", ["uib", "mqa"])
def test_opcheck_with_grad(op):
    """opcheck's test_autograd_registration (and the AOT dispatch with a backward) on inputs requiring grad."""
    if op == "uib":
        args = _leaves(random_uib_args(1, 8, 5, 6, 16, 8, k_start=3, k_mid=3, seed=9))
    else:
        args = _leaves(random_mqa_args(1, 8, 5, 5, num_heads=2, key_dim=8, kv_stride=2, seed=9))
    torch.library.opcheck(getattr(torch.ops.mnv4, op).default, tuple(args),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))


def _tiny_net_params(seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return torch.nn.Parameter(torch.randn(*shape, generator=g) * scale)

    uib1 = random_uib_args(1, 8, 1, 1, 32, 8, k_start=3, k_mid=3, seed=seed + 1)[1:9]
    uib2 = random_uib_args(1, 8, 1, 1, 24, 16, k_start=0, k_mid=5, stride=2, seed=seed + 2)[1:9]
    mqa = random_mqa_args(1, 16, 1, 1, num_heads=2, key_dim=8, kv_stride=2, seed=seed + 3)[1:11]
    p = dict(stem_w=r(8, 3, 3, 3, scale=0.3), stem_b=r(8, scale=0.1), cls_w=r(5, 16, scale=0.25),
             cls_b=r(5, scale=0.1))
    for prefix, ts in (("u1_", uib1), ("u2_", uib2), ("m_", mqa)):
        for i, t in enumerate(ts):
            p[f"{prefix}{i}"] = None if t is None else torch.nn.Parameter(t.clone())
    return p


def _tiny_net(p, x, uib, mqa):
    h = torch.relu(torch.nn.functional.conv2d(x, p["stem_w"], p["stem_b"], padding=1))
    h = uib(h, *[p[f"u1_{i}"] for i in range(8)], 1, True, "relu")
    h = uib(h, *[p[f"u2_{i}"] for i in range(8)], 2, False, "gelu")
    h = mqa(h, *[p[f"m_{i}"] for i in range(10)], 2, 2, True)
    return torch.nn.functional.linear(h.mean((2, 3)), p["cls_w"], p["cls_b"])


def test_sgd_steps_equal_composite_network():
    """A few SGD steps of a small network built from the ops land on the same weights as the same network
    built from the composites."""
    x = torch.randn(4, 3, 12, 10, generator=torch.Generator().manual_seed(11))
    y = torch.tensor([0, 3, 1, 4])
    nets = {}
    for name, (uib, mqa) in {"ops": (torch.ops.mnv4.uib, torch.ops.mnv4.mqa), "composite": (F.uib, F.mqa)}.items():
        p = _tiny_net_params()
        params = [v for v in p.values() if v is not None]
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        losses = []
        for _ in range(4):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(_tiny_net(p, x, uib, mqa), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        nets[name] = (p, losses)
    (p_ops, l_ops), (p_ref, l_ref) = nets["ops"], nets["composite"]
    assert l_ref[-1] < l_ref[0]  # it trains
    assert l_ops == pytest.approx(l_ref, rel=1e-4)
    start = _tiny_net_params()
    for k, v in p_ref.items():
        if v is None:
            continue
        moved = (v - start[k]).detach()
        if k == f"m_{MQA_K_DW_B - 1}":  # the mqa slice starts at norm_scale (argument 1)
            assert moved.abs().max() <= 1e-5 and (p_ops[k] - start[k]).abs().max() <= 1e-5
            continue
        assert moved.abs().max() > 0, k
        assert rel_err(p_ops[k] - start[k], moved) <= TOL, (k, rel_err(p_ops[k] - start[k], moved))


@pytest.mark.triton
@pytest.mark.parametrize("op", ["uib", "mqa"])
def test_triton_twins_grads_equal_composite(op):
    """The *_triton ops carry the same autograd (runs under TRITON_INTERPRET=1 on CPU, see conftest)."""
    import os

    import mnv4_kernels.triton  # noqa: F401  registers mnv4::uib_triton / mqa_triton and their autograd

    device = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("Triton needs a CUDA device or TRITON_INTERPRET=1")
    if op == "uib":
        args = random_uib_args(1, 8, 5, 6, 16, 8, k_start=3, k_mid=3, activation="gelu", device=device, seed=12)
        _compare(torch.ops.mnv4.uib_triton, F.uib, args)
    else:
        args = random_mqa_args(1, 8, 5, 5, num_heads=2, key_dim=8, kv_stride=2, device=device, seed=12)
        _compare(torch.ops.mnv4.mqa_triton, F.mqa, args, zero_grads=(MQA_K_DW_B,))
    torch.library.opcheck(getattr(torch.ops.mnv4, f"{op}_triton").default, tuple(_leaves(args)),
                          test_utils=("test_schema", "test_autograd_registration"))


# ---- the CPU-only ops without a backward (csrc/cpu/no_backward.cpp) ----

def _refused(out, op):
    """out needs a gradient, and the backward through it refuses, naming the op."""
    assert out.requires_grad
    with pytest.raises(RuntimeError, match=f"derivative for {op} is not implemented"):
        out.float().sum().backward()


def test_cpu_only_ops_refuse_a_backward():
    """mnv4_cpu::conv, pointwise, mean and sequence: where an input requires grad, the backward raises (torch's
    fallback for custom ops gave those inputs no gradient at all); without one, the output needs none."""
    cpu = torch.ops.mnv4_cpu
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 6, 5, generator=g)
    w3, w1, b = torch.randn(8, 4, 3, 3, generator=g), torch.randn(8, 4, 1, 1, generator=g), torch.randn(8, generator=g)
    cases = {"mnv4_cpu::conv": lambda x_, w_: cpu.conv(x_, w_, b, 1, "relu"),
             "mnv4_cpu::pointwise": lambda x_, w_: cpu.pointwise(x_, w_, b, "relu"),
             "mnv4_cpu::mean": lambda x_, w_: cpu.mean(x_)}
    weights = {"mnv4_cpu::conv": w3, "mnv4_cpu::pointwise": w1, "mnv4_cpu::mean": None}
    for op, fn in cases.items():
        w = weights[op]
        assert not fn(x, w).requires_grad
        _refused(fn(x.clone().requires_grad_(True), w), op)
        if w is not None:
            _refused(fn(x, w.clone().requires_grad_(True)), op)
        with torch.no_grad():
            assert not fn(x.clone().requires_grad_(True), w).requires_grad


def test_fused_model_refuses_a_backward():
    """A fused model on the CPU ops: x requiring grad gives an output whose backward raises (through the one
    sequence call, and block by block with a forward hook: the head's pointwise, the first op the backward
    meets), rather than leaving x.grad None."""
    from mnv4_reference import randomized_model
    fused = mnv4_kernels.fuse(randomized_model("mobilenetv4_conv_small", seed=0), backend="cpu")
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    _refused(fused(x), "mnv4_cpu::sequence")
    handle = fused.blocks[0].register_forward_hook(lambda *a: None)
    try:
        _refused(fused(x), "mnv4_cpu::pointwise")
    finally:
        handle.remove()
    assert x.grad is None and not fused(x.detach()).requires_grad
