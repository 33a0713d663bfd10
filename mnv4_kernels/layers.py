"""The real MobileNetV4 layer table, derived from the reference model (never typed a second time).

`layer_table(model_name, res)` builds the reference model (randomised so every block matters), fuses it on
the reference backend, runs one image through it with forward hooks on the UIB and MQA blocks, and returns
one `Layer` per block: its name, kind, input shape and the folded op arguments. Tests, `bench` and the
scripts in benches/ all take their shapes from here.
"""

import functools
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from .model import FusedMQA, FusedUIB

# The five models the paper reports, at their native (paper) resolution.
MAIN_MODELS = (("mobilenetv4_conv_small", 224), ("mobilenetv4_conv_medium", 256), ("mobilenetv4_conv_large", 384),
               ("mobilenetv4_hybrid_medium", 256), ("mobilenetv4_hybrid_large", 384))


@dataclass
class Layer:
    model: str
    res: int
    name: str  # blocks.S.B as in timm
    kind: str  # "uib" | "mqa"
    in_shape: Tuple[int, int, int]  # (C, H, W) of the block input
    out_shape: Tuple[int, int, int]
    module: torch.nn.Module  # the FusedUIB / FusedMQA holding the folded weights

    @property
    def label(self):
        c, h, w = self.in_shape
        return f"{self.model.replace('mobilenetv4_', '')}@{self.res} {self.name} {self.kind} {self.form} {c}x{h}x{w}"

    @property
    def form(self):
        m = self.module
        if self.kind == "mqa":
            return f"h{m.num_heads}d{m.q_w.shape[0] // m.num_heads}kv{m.kv_stride}"
        s = int(m.start_dw_w.shape[-1]) if m.start_dw_w is not None else 0
        k = int(m.mid_dw_w.shape[-1]) if m.mid_dw_w is not None else 0
        name = {(True, True): "ExtraDW", (False, True): "IB", (True, False): "ConvNext", (False, False): "FFN"}
        return f"{name[(s > 0, k > 0)]}({s},{k})e{m.expand_w.shape[0] // m.expand_w.shape[1]}s{m.stride}"

    def args(self, dtype: Optional[torch.dtype] = None, device=None, cpu_layout: bool = False):
        """The op's arguments after x (weights cast/moved as asked), in schema order. cpu_layout=True: the UIB
        weights stored as fuse() stores them for the CPU op (ops.channels_innermost; same values)."""
        from .ops import channels_innermost

        m = self.module

        def t(v):
            return None if v is None else v.to(device=device or v.device, dtype=dtype or v.dtype)

        if self.kind == "uib":
            w = (lambda v: None if v is None else channels_innermost(t(v))) if cpu_layout else t
            return (w(m.start_dw_w), t(m.start_dw_b), w(m.expand_w), t(m.expand_b), w(m.mid_dw_w),
                    t(m.mid_dw_b), w(m.proj_w), t(m.proj_b), m.stride, m.residual, m.activation)
        return (t(m.norm_scale), t(m.norm_shift), t(m.q_w), t(m.k_dw_w), t(m.k_dw_b), t(m.k_w), t(m.v_dw_w),
                t(m.v_dw_b), t(m.v_w), t(m.o_w), m.num_heads, m.kv_stride, m.residual)

    def flops(self, batch=1):
        """Multiply-adds x 2 of the block (the dense work; activations and softmax exp not counted)."""
        m = self.module
        c, h, w = self.in_shape
        cout, ho, wo = self.out_shape
        if self.kind == "uib":
            mid = m.expand_w.shape[0]
            ks = m.start_dw_w.shape[-1] if m.start_dw_w is not None else 0
            km = m.mid_dw_w.shape[-1] if m.mid_dw_w is not None else 0
            s_start = m.stride if (ks and not km) else 1
            h1, w1 = (h - 1) // s_start + 1, (w - 1) // s_start + 1
            macs = c * ks * ks * h1 * w1 + c * mid * h1 * w1 + mid * km * km * ho * wo + mid * cout * ho * wo
        else:
            hd = m.q_w.shape[0]
            dk = hd // m.num_heads
            dv = m.v_w.shape[0]
            n = h * w
            hk, wk = (h - 1) // m.kv_stride + 1, (w - 1) // m.kv_stride + 1
            mm = hk * wk
            dw = 2 * c * 9 * mm if m.k_dw_w is not None else 0
            macs = c * hd * n + dw + c * (dk + dv) * mm + m.num_heads * n * mm * (dk + dv) + m.num_heads * dv * cout * n
        return 2 * batch * macs

    def bytes(self, batch=1, itemsize=4):
        """Compulsory traffic: input and output once, every weight once."""
        c, h, w = self.in_shape
        cout, ho, wo = self.out_shape
        weights = sum(b.numel() for b in self.module.buffers())
        return itemsize * (batch * (c * h * w + cout * ho * wo) + weights)


@functools.lru_cache(maxsize=None)
def layer_table(model_name: str, res: int, seed: int = 0):
    """Every UIB and MQA block of `model_name` at input res x res, in network order (a tuple of Layer)."""
    from mnv4_reference import randomized_model

    from .fuse import fuse

    ref = randomized_model(model_name, seed=seed)
    fused = fuse(ref, backend="reference")
    found, hooks = [], []
    for name, m in zip(fused.block_names, fused.blocks):
        if isinstance(m, (FusedUIB, FusedMQA)):
            kind = "uib" if isinstance(m, FusedUIB) else "mqa"

            def hook(mod, inp, out, name=name, kind=kind):
                found.append(Layer(model_name, res, name, kind, tuple(inp[0].shape[1:]), tuple(out.shape[1:]), mod))

            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            fused(torch.randn(1, 3, res, res))
    finally:
        for h in hooks:
            h.remove()
    return tuple(found)


def unique_layers(layers):
    """Drop repeats: layers with the same kind, form and shapes time the same (keeps the first, counts)."""
    seen = {}
    for l in layers:
        key = (l.kind, l.form, l.in_shape, l.out_shape)
        if key in seen:
            seen[key][1] += 1
        else:
            seen[key] = [l, 1]
    return [(l, n) for l, n in seen.values()]
