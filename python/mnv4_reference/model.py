"""Pure-PyTorch MobileNetV4 whose state dict equals timm's (names, shapes, dtypes).

Every model is written once as timm-style block strings per stage (`ARCH_DEFS`) decoded by `decode_block`;
`create_model(name)` builds it. Semantics follow shared/spec/MNV4_ARCHITECTURE.md sections 1-3:

- conv (no bias) -> BatchNorm (eps 1e-5) -> activation where the spec says so, symmetric padding
  ((s - 1) + (k - 1)) // 2;
- `cn` ConvBnAct, `er` FusedIB (EdgeResidual), `uir` UIB (stride on dw_mid if present, else dw_start;
  activation after pw_exp and dw_mid only), `mqa` Mobile MQA (pre-norm BN, one shared K/V head,
  optional stride-2 dw + BN on K and V, layer scale, residual);
- anti-aliased variants: the stride-2 conv runs at stride 1, then BN, act, then AvgPool2d(2, 2) or a
  BlurPool ([1,2,1] x [1,2,1] / 16, zero pad 1, stride 2; its filter a non-persistent buffer).

Nothing here imports mnv4_kernels.
"""

import math
import re
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MODEL_NAMES", "MobileNetV4", "create_model", "make_divisible", "decode_block", "model_config",
           "ARCH_DEFS", "BlockArgs", "ConvNormAct", "ConvBnAct", "EdgeResidual", "UniversalInvertedResidual",
           "MobileAttention", "MultiQueryAttention2d", "LayerScale2d", "BlurPool2d", "apply_activation"]


# ----------------------------------------------------------------------------------------------------------
# Block tables (timm block-string grammar, spec 2.5). One list per stage; the first block of a stage carries
# the stride, the builder forces stride 1 on every later block.
# ----------------------------------------------------------------------------------------------------------

_CONV_SMALL = [
    ["cn_r1_k3_s2_e1_c32", "cn_r1_k1_s1_e1_c32"],
    ["cn_r1_k3_s2_e2_c96", "cn_r1_k1_s1_e4_c64"],
    ["uir_r1_a5_k5_s2_e3_c96", "uir_r4_a0_k3_s1_e2_c96", "uir_r1_a3_k0_s1_e4_c96"],
    ["uir_r1_a3_k3_s2_e6_c128", "uir_r1_a5_k5_s1_e4_c128", "uir_r1_a0_k5_s1_e4_c128",
     "uir_r1_a0_k5_s1_e3_c128", "uir_r2_a0_k3_s1_e4_c128"],
    ["cn_r1_k1_s1_c960"],
]

_CONV_MEDIUM = [
    ["er_r1_k3_s2_e4_c48"],
    ["uir_r1_a3_k5_s2_e4_c80", "uir_r1_a3_k3_s1_e2_c80"],
    ["uir_r1_a3_k5_s2_e6_c160", "uir_r2_a3_k3_s1_e4_c160", "uir_r1_a3_k5_s1_e4_c160",
     "uir_r1_a3_k3_s1_e4_c160", "uir_r1_a3_k0_s1_e4_c160", "uir_r1_a0_k0_s1_e2_c160",
     "uir_r1_a3_k0_s1_e4_c160"],
    ["uir_r1_a5_k5_s2_e6_c256", "uir_r1_a5_k5_s1_e4_c256", "uir_r2_a3_k5_s1_e4_c256",
     "uir_r1_a0_k0_s1_e4_c256", "uir_r1_a3_k0_s1_e4_c256", "uir_r1_a3_k5_s1_e2_c256",
     "uir_r1_a5_k5_s1_e4_c256", "uir_r2_a0_k0_s1_e4_c256", "uir_r1_a5_k0_s1_e2_c256"],
    ["cn_r1_k1_s1_c960"],
]

_CONV_LARGE = [
    ["er_r1_k3_s2_e4_c48"],
    ["uir_r1_a3_k5_s2_e4_c96", "uir_r1_a3_k3_s1_e4_c96"],
    ["uir_r1_a3_k5_s2_e4_c192", "uir_r3_a3_k3_s1_e4_c192", "uir_r1_a3_k5_s1_e4_c192",
     "uir_r5_a5_k3_s1_e4_c192", "uir_r1_a3_k0_s1_e4_c192"],
    ["uir_r1_a5_k5_s2_e4_c512", "uir_r3_a5_k5_s1_e4_c512", "uir_r1_a5_k0_s1_e4_c512",
     "uir_r1_a5_k3_s1_e4_c512", "uir_r2_a5_k0_s1_e4_c512", "uir_r1_a5_k3_s1_e4_c512",
     "uir_r1_a5_k5_s1_e4_c512", "uir_r3_a5_k0_s1_e4_c512"],
    ["cn_r1_k1_s1_c960"],
]

_HYBRID_MEDIUM = [
    ["er_r1_k3_s2_e4_c48"],
    ["uir_r1_a3_k5_s2_e4_c80", "uir_r1_a3_k3_s1_e2_c80"],
    ["uir_r1_a3_k5_s2_e6_c160", "uir_r1_a0_k0_s1_e2_c160", "uir_r1_a3_k3_s1_e4_c160",
     "uir_r1_a3_k5_s1_e4_c160", "mqa_r1_k3_h4_s1_v2_d64_c160", "uir_r1_a3_k3_s1_e4_c160",
     "mqa_r1_k3_h4_s1_v2_d64_c160", "uir_r1_a3_k0_s1_e4_c160", "mqa_r1_k3_h4_s1_v2_d64_c160",
     "uir_r1_a3_k3_s1_e4_c160", "mqa_r1_k3_h4_s1_v2_d64_c160", "uir_r1_a3_k0_s1_e4_c160"],
    ["uir_r1_a5_k5_s2_e6_c256", "uir_r1_a5_k5_s1_e4_c256", "uir_r2_a3_k5_s1_e4_c256",
     "uir_r1_a0_k0_s1_e2_c256", "uir_r1_a3_k5_s1_e2_c256", "uir_r1_a0_k0_s1_e2_c256",
     "uir_r1_a0_k0_s1_e4_c256", "mqa_r1_k3_h4_s1_d64_c256", "uir_r1_a3_k0_s1_e4_c256",
     "mqa_r1_k3_h4_s1_d64_c256", "uir_r1_a5_k5_s1_e4_c256", "mqa_r1_k3_h4_s1_d64_c256",
     "uir_r1_a5_k0_s1_e4_c256", "mqa_r1_k3_h4_s1_d64_c256", "uir_r1_a5_k0_s1_e4_c256"],
    ["cn_r1_k1_s1_c960"],
]

_HYBRID_LARGE = [
    ["er_r1_k3_s2_e4_c48"],
    ["uir_r1_a3_k5_s2_e4_c96", "uir_r1_a3_k3_s1_e4_c96"],
    ["uir_r1_a3_k5_s2_e4_c192", "uir_r3_a3_k3_s1_e4_c192", "uir_r1_a3_k5_s1_e4_c192",
     "uir_r2_a5_k3_s1_e4_c192", "mqa_r1_k3_h8_s1_v2_d48_c192", "uir_r1_a5_k3_s1_e4_c192",
     "mqa_r1_k3_h8_s1_v2_d48_c192", "uir_r1_a5_k3_s1_e4_c192", "mqa_r1_k3_h8_s1_v2_d48_c192",
     "uir_r1_a5_k3_s1_e4_c192", "mqa_r1_k3_h8_s1_v2_d48_c192", "uir_r1_a3_k0_s1_e4_c192"],
    ["uir_r1_a5_k5_s2_e4_c512", "uir_r3_a5_k5_s1_e4_c512", "uir_r1_a5_k0_s1_e4_c512",
     "uir_r1_a5_k3_s1_e4_c512", "uir_r2_a5_k0_s1_e4_c512", "uir_r1_a5_k3_s1_e4_c512",
     "uir_r1_a5_k5_s1_e4_c512", "mqa_r1_k3_h8_s1_d64_c512", "uir_r1_a5_k0_s1_e4_c512",
     "mqa_r1_k3_h8_s1_d64_c512", "uir_r1_a5_k0_s1_e4_c512", "mqa_r1_k3_h8_s1_d64_c512",
     "uir_r1_a5_k0_s1_e4_c512", "mqa_r1_k3_h8_s1_d64_c512", "uir_r1_a5_k0_s1_e4_c512"],
    ["cn_r1_k1_s1_c960"],
]

ARCH_DEFS = {
    "conv_small": _CONV_SMALL, "conv_medium": _CONV_MEDIUM, "conv_large": _CONV_LARGE,
    "hybrid_medium": _HYBRID_MEDIUM, "hybrid_large": _HYBRID_LARGE,
}

# name -> (arch, width multiplier, aa_layer)
_MODELS = {
    "mobilenetv4_conv_small": ("conv_small", 1.0, None),
    "mobilenetv4_conv_small_035": ("conv_small", 0.35, None),
    "mobilenetv4_conv_small_050": ("conv_small", 0.5, None),
    "mobilenetv4_conv_medium": ("conv_medium", 1.0, None),
    "mobilenetv4_conv_large": ("conv_large", 1.0, None),
    "mobilenetv4_hybrid_medium": ("hybrid_medium", 1.0, None),
    "mobilenetv4_hybrid_medium_075": ("hybrid_medium", 0.75, None),
    "mobilenetv4_hybrid_large": ("hybrid_large", 1.0, None),
    "mobilenetv4_hybrid_large_075": ("hybrid_large", 0.75, None),
    "mobilenetv4_conv_aa_medium": ("conv_medium", 1.0, "avg"),
    "mobilenetv4_conv_blur_medium": ("conv_medium", 1.0, "blurpc"),
    "mobilenetv4_conv_aa_large": ("conv_large", 1.0, "avg"),
}
MODEL_NAMES = tuple(_MODELS)


def make_divisible(v, divisor=8, min_value=None, round_limit=0.9):
    """timm's channel rounding: nearest multiple of divisor, bumped up when that loses more than 10%."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


@dataclass(frozen=True)
class BlockArgs:
    """One decoded block string (before width scaling)."""
    kind: str            # cn | er | uir | mqa
    repeat: int
    stride: int
    out_chs: int
    kernel: int = 3      # cn/er conv kernel; uir mid-dw kernel (0 = none); mqa kv down-sampling dw kernel
    start_kernel: int = 0  # uir start-dw kernel (0 = none)
    exp_ratio: float = 1.0
    num_heads: int = 0
    key_dim: int = 0
    kv_stride: int = 1


_TOKEN = re.compile(r"^([a-z]+)([0-9.]+)$")


def decode_block(s: str) -> BlockArgs:
    """Decode a timm block string, e.g. 'uir_r2_a3_k5_s1_e4_c256' or 'mqa_r1_k3_h4_s1_v2_d64_c160'."""
    parts = s.split("_")
    kind, opts = parts[0], {}
    if kind not in ("cn", "er", "uir", "mqa"):
        raise ValueError(f"unsupported block type {kind!r} in {s!r}")
    for tok in parts[1:]:
        m = _TOKEN.match(tok)
        if not m:
            raise ValueError(f"bad token {tok!r} in block string {s!r}")
        opts[m.group(1)] = m.group(2)
    return BlockArgs(
        kind=kind, repeat=int(opts.get("r", 1)), stride=int(opts.get("s", 1)), out_chs=int(opts["c"]),
        kernel=int(opts.get("k", 3)), start_kernel=int(opts.get("a", 0)), exp_ratio=float(opts.get("e", 1.0)),
        num_heads=int(opts.get("h", 0)), key_dim=int(opts.get("d", 0)), kv_stride=int(opts.get("v", 1)))


def model_config(name: str) -> dict:
    """arch, multiplier, aa layer, stem width, activation and layer-scale flag of a model name."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of: {', '.join(MODEL_NAMES)}")
    arch, mult, aa = _MODELS[name]
    return dict(arch=arch, multiplier=mult, aa_layer=aa, stem_size=24 if arch.endswith("large") else 32,
                act="gelu" if arch == "hybrid_large" else "relu", layer_scale=arch.startswith("hybrid"))


# ----------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------

def apply_activation(x, act: Optional[str]):
    if act is None or act == "none":
        return x
    if act == "relu":
        return F.relu(x)
    if act == "gelu":
        return F.gelu(x, approximate="none")
    raise ValueError(f"unknown activation {act!r}")


def _pad(k, stride=1):
    return ((stride - 1) + (k - 1)) // 2


class BlurPool2d(nn.Module):
    """timm BlurPool2d(pad_mode='constant') ('blurpc'): depthwise [1,2,1]x[1,2,1]/16, zero pad 1, stride 2."""

    def __init__(self, channels, filt_size=3, stride=2):
        super().__init__()
        self.channels, self.stride, self.padding = channels, stride, _pad(filt_size, stride)
        coeffs = torch.tensor([math.comb(filt_size - 1, i) for i in range(filt_size)], dtype=torch.float32)
        coeffs = coeffs / coeffs.sum()
        filt = (coeffs[:, None] * coeffs[None, :])[None, None].repeat(channels, 1, 1, 1)
        self.register_buffer("filt", filt, persistent=False)

    def forward(self, x):
        return F.conv2d(x, self.filt.to(x.dtype), stride=self.stride, padding=self.padding, groups=self.channels)


def _make_aa(aa_layer, channels, stride):
    if aa_layer is None or stride == 1:
        return None
    if aa_layer == "avg":
        return nn.AvgPool2d(kernel_size=stride, stride=stride)
    if aa_layer == "blurpc":
        return BlurPool2d(channels, stride=stride)
    raise ValueError(f"unknown aa_layer {aa_layer!r}")


class ConvNormAct(nn.Module):
    """conv (no bias) -> bn -> act [-> aa pool when stride 2 and anti-aliased; the conv then runs at stride 1].

    Keys: conv.weight, bn.* (timm ConvNormAct)."""

    def __init__(self, cin, cout, k, stride=1, groups=1, act=None, aa_layer=None):
        super().__init__()
        use_aa = aa_layer is not None and stride > 1
        cs = 1 if use_aa else stride
        self.conv = nn.Conv2d(cin, cout, k, stride=cs, padding=_pad(k, cs), groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = act
        self.stride = stride
        self.aa = _make_aa(aa_layer, cout, stride) if use_aa else None

    def forward(self, x):
        x = apply_activation(self.bn(self.conv(x)), self.act)
        return self.aa(x) if self.aa is not None else x


class LayerScale2d(nn.Module):
    def __init__(self, dim, init_value=1e-5):
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(dim))

    def forward(self, x):
        return x * self.gamma.view(1, -1, 1, 1)


class ConvBnAct(nn.Module):
    """`cn`: conv k x k -> bn1 -> act [-> aa]. Keys: conv.weight, bn1.*."""
    kind = "cn"

    def __init__(self, cin, cout, k, stride=1, act="relu", aa_layer=None):
        super().__init__()
        use_aa = aa_layer is not None and stride > 1
        cs = 1 if use_aa else stride
        self.in_chs, self.out_chs, self.kernel, self.stride, self.act = cin, cout, k, stride, act
        self.conv = nn.Conv2d(cin, cout, k, stride=cs, padding=_pad(k, cs), bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.aa = _make_aa(aa_layer, cout, stride) if use_aa else None
        self.has_skip = False

    def forward(self, x):
        x = apply_activation(self.bn1(self.conv(x)), self.act)
        return self.aa(x) if self.aa is not None else x


class EdgeResidual(nn.Module):
    """`er` FusedIB: conv_exp k x k (stride) -> bn1 -> act [-> aa] -> conv_pwl 1x1 -> bn2 (+ x if skip)."""
    kind = "er"

    def __init__(self, cin, cout, k, stride, exp_ratio, act="relu", aa_layer=None):
        super().__init__()
        mid = make_divisible(cin * exp_ratio)
        use_aa = aa_layer is not None and stride > 1
        cs = 1 if use_aa else stride
        self.in_chs, self.mid_chs, self.out_chs, self.kernel, self.stride, self.act = cin, mid, cout, k, stride, act
        self.has_skip = stride == 1 and cin == cout
        self.conv_exp = nn.Conv2d(cin, mid, k, stride=cs, padding=_pad(k, cs), bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.aa = _make_aa(aa_layer, mid, stride) if use_aa else None
        self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        shortcut = x
        x = apply_activation(self.bn1(self.conv_exp(x)), self.act)
        if self.aa is not None:
            x = self.aa(x)
        x = self.bn2(self.conv_pwl(x))
        return x + shortcut if self.has_skip else x


class UniversalInvertedResidual(nn.Module):
    """`uir` UIB: [dw_start (no act)] -> pw_exp + act -> [dw_mid + act (+ aa)] -> pw_proj -> [layer_scale] (+ x)."""
    kind = "uir"

    def __init__(self, cin, cout, k_start, k_mid, stride, exp_ratio, act="relu", aa_layer=None,
                 layer_scale_init_value=None):
        super().__init__()
        if stride > 1 and not (k_start or k_mid):
            raise ValueError("a stride-2 UIB needs a depthwise conv")
        mid = make_divisible(cin * exp_ratio)
        self.in_chs, self.mid_chs, self.out_chs = cin, mid, cout
        self.start_kernel, self.mid_kernel, self.stride, self.act = k_start, k_mid, stride, act
        self.has_skip = stride == 1 and cin == cout
        self.dw_start = (ConvNormAct(cin, cin, k_start, stride=stride if not k_mid else 1, groups=cin, act=None,
                                     aa_layer=aa_layer) if k_start else None)
        self.pw_exp = ConvNormAct(cin, mid, 1, act=act)
        self.dw_mid = ConvNormAct(mid, mid, k_mid, stride=stride, groups=mid, act=act, aa_layer=aa_layer) if k_mid else None
        self.pw_proj = ConvNormAct(mid, cout, 1, act=None)
        self.layer_scale = LayerScale2d(cout, layer_scale_init_value) if layer_scale_init_value is not None else None

    @property
    def anti_aliased(self):
        return any(m is not None and m.aa is not None for m in (self.dw_start, self.dw_mid))

    def forward(self, x):
        shortcut = x
        if self.dw_start is not None:
            x = self.dw_start(x)
        x = self.pw_exp(x)
        if self.dw_mid is not None:
            x = self.dw_mid(x)
        x = self.pw_proj(x)
        if self.layer_scale is not None:
            x = self.layer_scale(x)
        return x + shortcut if self.has_skip else x


class _Proj(nn.Module):
    """timm's nn.Sequential of the MQA key/value/query/output paths: [down_conv, norm,] proj."""

    def __init__(self, cin, cout, kv_stride=1, dw_kernel=3):
        super().__init__()
        if kv_stride > 1:
            self.down_conv = nn.Conv2d(cin, cin, dw_kernel, stride=kv_stride, padding=_pad(dw_kernel, kv_stride),
                                       groups=cin, bias=False)
            self.norm = nn.BatchNorm2d(cin)
        else:
            self.down_conv = None
            self.norm = None
        self.proj = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        if self.down_conv is not None:
            x = self.norm(self.down_conv(x))
        return self.proj(x)


class MultiQueryAttention2d(nn.Module):
    """timm MultiQueryAttention2d (query stride 1): h query heads, one shared K and V head."""

    def __init__(self, dim, dim_out, num_heads, key_dim, value_dim, kv_stride=1, dw_kernel=3):
        super().__init__()
        self.num_heads, self.key_dim, self.value_dim, self.kv_stride = num_heads, key_dim, value_dim, kv_stride
        self.scale = key_dim ** -0.5
        self.query = _Proj(dim, num_heads * key_dim)
        self.key = _Proj(dim, key_dim, kv_stride, dw_kernel)
        self.value = _Proj(dim, value_dim, kv_stride, dw_kernel)
        self.output = _Proj(num_heads * value_dim, dim_out)

    def forward(self, x):
        B, C, H, W = x.shape
        q = self.query(x).reshape(B, self.num_heads, self.key_dim, H * W).transpose(-1, -2)  # [B,h,N,dk]
        k = self.key(x).flatten(2).transpose(1, 2).unsqueeze(1)  # [B,1,M,dk]
        v = self.value(x).flatten(2).transpose(1, 2).unsqueeze(1)  # [B,1,M,dv]
        attn = ((q * self.scale) @ k.transpose(-1, -2)).softmax(dim=-1)
        o = attn @ v  # [B,h,N,dv]
        o = o.transpose(1, 2).reshape(B, H, W, self.num_heads * self.value_dim).permute(0, 3, 1, 2)
        return self.output(o)


class MobileAttention(nn.Module):
    """`mqa` block: out = x + gamma * attn(norm(x)); norm is a BatchNorm without activation."""
    kind = "mqa"

    def __init__(self, cin, cout, num_heads, key_dim, value_dim, kv_stride=1, dw_kernel=3, stride=1,
                 layer_scale_init_value=None):
        super().__init__()
        self.in_chs, self.out_chs, self.stride = cin, cout, stride
        self.has_skip = stride == 1 and cin == cout
        self.norm = nn.BatchNorm2d(cin)
        self.attn = MultiQueryAttention2d(cin, cout, num_heads, key_dim, value_dim, kv_stride, dw_kernel)
        self.layer_scale = LayerScale2d(cout, layer_scale_init_value) if layer_scale_init_value is not None else None

    def forward(self, x):
        shortcut = x
        x = self.attn(self.norm(x))
        if self.layer_scale is not None:
            x = self.layer_scale(x)
        return x + shortcut if self.has_skip else x


# ----------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------

class MobileNetV4(nn.Module):
    """stem -> blocks (5 stages) -> avgpool -> conv_head -> norm_head + act -> flatten -> classifier."""

    def __init__(self, name: str, num_classes: int = 1000):
        super().__init__()
        cfg = model_config(name)
        self.model_name = name
        self.num_classes = num_classes
        self.act = act = cfg["act"]
        self.aa_layer = cfg["aa_layer"]
        mult = cfg["multiplier"]
        ls = 1e-5 if cfg["layer_scale"] else None

        def round_chs(c):
            return make_divisible(c * mult) if mult != 1.0 else c

        stem = cfg["stem_size"]  # fixed when mult < 1, and round_chs is the identity at 1.0
        self.conv_stem = nn.Conv2d(3, stem, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)

        stages, cin = [], stem
        for stage_def in ARCH_DEFS[cfg["arch"]]:
            blocks = []
            for s in stage_def:
                ba = decode_block(s)
                cout = round_chs(ba.out_chs)
                for r in range(ba.repeat):
                    stride = ba.stride if not blocks else 1
                    if ba.kind == "cn":
                        b = ConvBnAct(cin, cout, ba.kernel, stride, act, self.aa_layer)
                    elif ba.kind == "er":
                        b = EdgeResidual(cin, cout, ba.kernel, stride, ba.exp_ratio, act, self.aa_layer)
                    elif ba.kind == "uir":
                        b = UniversalInvertedResidual(cin, cout, ba.start_kernel, ba.kernel, stride, ba.exp_ratio,
                                                      act, self.aa_layer, ls)
                    else:
                        b = MobileAttention(cin, cout, ba.num_heads, ba.key_dim, ba.key_dim, ba.kv_stride,
                                            ba.kernel, stride, ls)
                    blocks.append(b)
                    cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.num_features = cin  # 960 (x multiplier): forward_features output channels
        self.head_hidden_size = 1280
        self.conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
        self.norm_head = nn.BatchNorm2d(1280)
        self.classifier = nn.Linear(1280, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        """timm's efficientnet init: conv N(0, sqrt(2 / fan_out)) (fan_out per group), BN (1, 0), Linear
        U(+-1/sqrt(out)), bias 0; layer-scale gammas keep their 1e-5."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                r = 1.0 / math.sqrt(m.weight.shape[0])
                nn.init.uniform_(m.weight, -r, r)
                nn.init.zeros_(m.bias)

    def named_blocks(self):
        """(name, block) for every block, name as in the state dict (e.g. 'blocks.2.4')."""
        for si, stage in enumerate(self.blocks):
            for bi, b in enumerate(stage):
                yield f"blocks.{si}.{bi}", b

    def forward_features(self, x):
        x = apply_activation(self.bn1(self.conv_stem(x)), self.act)
        return self.blocks(x)

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean((2, 3), keepdim=True)
        x = apply_activation(self.norm_head(self.conv_head(x)), self.act)
        x = x.flatten(1)
        return x if pre_logits else self.classifier(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def create_model(name: str, num_classes: int = 1000) -> MobileNetV4:
    """Build one of the twelve timm MobileNetV4 models (random init, train mode like nn.Module defaults)."""
    return MobileNetV4(name, num_classes=num_classes)
