"""Plain-PyTorch composites of the fused ops, on folded weights.

`uib` and `mqa` take exactly the arguments of `torch.ops.mnv4.uib` / `torch.ops.mnv4.mqa` (BatchNorm already
folded into conv weight + bias, layer scale folded into the last projection) and compute the block with
ordinary torch ops, step by step as the spec writes it. They are the oracle every kernel is tested against
(CPU, CUDA, Triton) and the "PyTorch op chain" the benchmarks compare with. Nothing here imports
mnv4_kernels.
"""

import math

import torch
import torch.nn.functional as F

__all__ = ["uib", "mqa", "activation_fn"]


def activation_fn(name):
    if name == "relu":
        return F.relu
    if name == "gelu":
        return lambda t: F.gelu(t, approximate="none")
    if name == "none":
        return lambda t: t
    raise ValueError(f"activation must be 'relu', 'gelu' or 'none'; got {name!r}")


def _dw(x, w, b, stride):
    k = w.shape[-1]
    return F.conv2d(x, w, b, stride=stride, padding=k // 2, groups=x.shape[1])


def uib(x, start_dw_w, start_dw_b, expand_w, expand_b, mid_dw_w, mid_dw_b, proj_w, proj_b,
        stride=1, residual=False, activation="relu"):
    """start dw (no act) -> expand 1x1 + act -> mid dw + act -> proj 1x1 -> (+ x).

    The stride sits on the mid dw when there is one, else on the start dw.
    """
    act = activation_fn(activation)
    h = x
    if start_dw_w is not None:
        h = _dw(h, start_dw_w, start_dw_b, stride if mid_dw_w is None else 1)
    elif mid_dw_w is None and stride != 1:
        raise ValueError("stride=2 needs a depthwise conv to carry it")
    h = act(F.conv2d(h, expand_w.reshape(expand_w.shape[0], -1, 1, 1), expand_b))
    if mid_dw_w is not None:
        h = act(_dw(h, mid_dw_w, mid_dw_b, stride))
    h = F.conv2d(h, proj_w.reshape(proj_w.shape[0], -1, 1, 1), proj_b)
    return h + x if residual else h


def mqa(x, norm_scale, norm_shift, q_w, k_dw_w, k_dw_b, k_w, v_dw_w, v_dw_b, v_w, o_w,
        num_heads, kv_stride=1, residual=True):
    """Mobile MQA: one shared K head and one shared V head, K/V optionally down-sampled by a dw conv.

    xn = x*scale + shift; q = Wq xn; k = Wk dw_k(xn); v = Wv dw_v(xn);
    o_h = softmax(q_h k^T / sqrt(dk)) v for each head h; out = Wo [o_1..o_h] (+ x).
    """
    B, C, H, W = x.shape
    xn = x * norm_scale.view(1, -1, 1, 1) + norm_shift.view(1, -1, 1, 1)
    q = F.conv2d(xn, q_w.reshape(q_w.shape[0], -1, 1, 1))  # [B, h*dk, H, W], channel = head*dk + d
    dk = q_w.shape[0] // num_heads
    k_in = _dw(xn, k_dw_w, k_dw_b, kv_stride) if k_dw_w is not None else xn
    v_in = _dw(xn, v_dw_w, v_dw_b, kv_stride) if v_dw_w is not None else xn
    if k_dw_w is None and kv_stride != 1:
        raise ValueError("kv_stride=2 needs the K/V depthwise weights")
    k = F.conv2d(k_in, k_w.reshape(k_w.shape[0], -1, 1, 1)).flatten(2)  # [B, dk, M]
    v = F.conv2d(v_in, v_w.reshape(v_w.shape[0], -1, 1, 1)).flatten(2)  # [B, dv, M]
    dv = v.shape[1]
    q = q.reshape(B, num_heads, dk, H * W).transpose(-1, -2)  # [B, h, N, dk]
    logits = (q * (1.0 / math.sqrt(dk))) @ k.unsqueeze(1)  # [B, h, N, M]
    o = logits.softmax(dim=-1) @ v.transpose(-1, -2).unsqueeze(1)  # [B, h, N, dv]
    o = o.transpose(-1, -2).reshape(B, num_heads * dv, H, W)  # channel = head*dv + d
    y = F.conv2d(o, o_w.reshape(o_w.shape[0], -1, 1, 1))
    return x + y if residual else y
