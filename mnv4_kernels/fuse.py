"""Reference MobileNetV4 -> FusedMobileNetV4: BatchNorm folding, layer-scale folding, backend choice.

Folding (always in float64, then cast to the target dtype):
- every conv + BN -> conv weight * s, bias t, with s = gamma / sqrt(var + eps), t = beta - mean * s;
- layer scale g -> pw_proj (weight and bias * g) for UIB, output.proj (weight * g) for MQA;
- MQA pre-norm stays an explicit per-channel affine (norm_scale, norm_shift): it does not fold exactly into
  the zero-padded stride-2 K/V depthwise convs; key/value down_conv + norm fold into (k_dw_w, k_dw_b) and
  (v_dw_w, v_dw_b);
- head: avgpool precedes conv_head, so conv_head + norm_head fold into one C -> 1280 affine.

Backends per op (uib, mqa): "reference" = mnv4_reference.functional (plain torch on folded weights);
"cpu" / "cuda" = torch.ops.mnv4.uib / mqa (C++ kernels); "triton" = torch.ops.mnv4.uib_triton / mqa_triton
(registered by importing mnv4_kernels.triton, imported only when asked for). "auto": on a CUDA device
cuda > triton > reference, on CPU cpu > reference, per op, falling back to "reference" for an op the
chosen backend lacks. The anti-aliased stride-2 UIBs of the aa/blur variants run as folded torch ops
("composite"): the pool sits between dw_mid and pw_proj.
"""

import torch
import torch.nn as nn

from .backends import backends as _backends
from .ops import channels_innermost
from .model import (AAPool, FusedConv, FusedEdgeResidual, FusedHead, FusedMobileNetV4, FusedMQA, FusedUIB,
                    FusedUIBComposite)

__all__ = ["fuse", "load", "resolve_backends", "BackendError", "BACKEND_NAMES"]

BACKEND_NAMES = ("auto", "cpu", "cuda", "triton", "reference")
_OPS = ("uib", "mqa")


class BackendError(RuntimeError):
    """An explicitly requested backend cannot run here (the reason comes from mnv4_kernels.backends())."""


def _reference_op(op):
    from mnv4_reference import functional
    return getattr(functional, op)


def _triton_op(op):
    """torch.ops.mnv4.<op>_triton, importing mnv4_kernels.triton (which registers them) on first use."""
    import importlib
    importlib.import_module("mnv4_kernels.triton")
    name = f"{op}_triton"
    if not hasattr(torch.ops.mnv4, name):
        raise AttributeError(f"torch.ops.mnv4.{name} is not registered by mnv4_kernels.triton")
    return getattr(torch.ops.mnv4, name)


def _try_backend(name, op, avail, device):
    """(callable, None) when backend `name` can run `op` on `device`, else (None, reason)."""
    b = avail[name]
    if not b.available:
        return None, b.reason
    if name == "reference":
        return _reference_op(op), None
    if name == "cpu" and device.type != "cpu":
        return None, f"the model is on {device}, the cpu kernels need CPU tensors"
    if name in ("cuda", "triton") and device.type != "cuda":
        return None, f"the model is on {device}, the {name} kernels need a CUDA device"
    if name == "triton":
        try:
            return _triton_op(op), None
        except Exception as e:  # not written yet, or failed to import
            return None, f"{type(e).__name__}: {e}"
    if op not in b.ops:
        return None, f"backend {name!r} has no {op} kernel here (it has: {', '.join(b.ops) or 'none'})"
    return getattr(torch.ops.mnv4, op), None


def resolve_backends(backend: str = "auto", device="cpu"):
    """Pick the implementation of each op: returns ({op: (backend name, callable)}, {op: fallback reason}).

    Raises BackendError for an unknown backend or an explicit backend that is unavailable here."""
    device = torch.device(device)
    if backend not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {backend!r}; expected one of {', '.join(BACKEND_NAMES)}")
    avail = _backends()
    chosen, notes = {}, {}
    if backend == "auto":
        order = ("cuda", "triton", "reference") if device.type == "cuda" else ("cpu", "reference")
    else:
        b = avail[backend]
        if not b.available:
            raise BackendError(f"backend {backend!r} is unavailable: {b.reason}")
        if backend in ("cuda", "triton") and device.type != "cuda":
            raise BackendError(f"backend {backend!r} needs the model on a CUDA device; it is on {device}")
        if backend == "cpu" and device.type != "cpu":
            raise BackendError(f"backend 'cpu' needs the model on the CPU; it is on {device}")
        order = (backend, "reference")
    for op in _OPS:
        reasons = []
        for name in order:
            fn, why = _try_backend(name, op, avail, device)
            if fn is not None:
                chosen[op] = (name, fn)
                break
            reasons.append(f"{name}: {why}")
        if chosen[op][0] != order[0]:
            notes[op] = f"{chosen[op][0]} ({'; '.join(reasons)})"
    return chosen, notes


# ------------------------------------------------------------------------------------------------------------
# folding
# ------------------------------------------------------------------------------------------------------------

def _bn_affine(bn: nn.BatchNorm2d):
    """(scale, shift) in float64: bn(x) = x * scale + shift in eval mode."""
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    w = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(var)
    b = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(var)
    s = w / torch.sqrt(var + bn.eps)
    return s, b - mean * s


def _fold(conv_w, bn, gamma=None):
    """conv (no bias) + BN [+ layer scale] -> (weight, bias) in float64."""
    s, t = _bn_affine(bn)
    if gamma is not None:
        g = gamma.detach().double()
        s, t = s * g, t * g
    w = conv_w.detach().double() * s.view(-1, *([1] * (conv_w.dim() - 1)))
    return w, t


def _aa_of(module, channels, kind):
    aa = getattr(module, "aa", None)
    if aa is None:
        return None
    return AAPool(kind, channels, getattr(aa, "filt", None))


def fuse(reference_model: nn.Module, backend: str = "auto", dtype=None) -> FusedMobileNetV4:
    """Fold a reference MobileNetV4 (mnv4_reference.create_model / load_checkpoint) into a FusedMobileNetV4.

    backend: "auto" | "cpu" | "cuda" | "triton" | "reference" (see the module docstring); resolved for the
    device the reference model is on. dtype: None keeps float32; torch.float16 / torch.bfloat16 cast the folded
    weights (folding itself is float64). The reference model is not modified.
    """
    ref = reference_model
    if not hasattr(ref, "named_blocks") or not hasattr(ref, "conv_stem"):
        raise TypeError(f"fuse() takes an mnv4_reference MobileNetV4; got {type(ref).__name__}")
    dtype = torch.float32 if dtype is None else dtype
    if dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise ValueError(f"dtype must be float32, float16 or bfloat16; got {dtype}")
    device = ref.conv_stem.weight.device
    chosen, notes = resolve_backends(backend, device)
    act = ref.act
    aa_kind = getattr(ref, "aa_layer", None)

    def c(t):
        return None if t is None else t.to(dtype).contiguous()

    # A model fused for the CPU ops also runs its dense convs through mnv4_cpu::conv and its 1x1 convs and
    # head through mnv4_cpu::pointwise, with the weights stored output-channel innermost (the layout the
    # NHWC kernels read in place).
    cpu_pw = chosen["uib"][0] == "cpu"

    def ci(t):  # a weight in the CPU ops' layout (same values)
        return channels_innermost(c(t)) if cpu_pw else c(t)

    w, b = _fold(ref.conv_stem.weight, ref.bn1)
    stem = FusedConv(ci(w), c(b), ref.conv_stem.stride[0], act, cpu_ops=cpu_pw)

    blocks = []
    for name, blk in ref.named_blocks():
        kind = blk.kind
        if kind == "cn":
            w, b = _fold(blk.conv.weight, blk.bn1)
            aa = _aa_of(blk, blk.out_chs, aa_kind)
            m = FusedConv(ci(w), c(b), blk.conv.stride[0], act, aa, cpu_ops=cpu_pw)
            if aa is not None:
                aa.to(dtype)
            blocks.append((name, "cn", m))
        elif kind == "er":
            ew, eb = _fold(blk.conv_exp.weight, blk.bn1)
            pw, pb = _fold(blk.conv_pwl.weight, blk.bn2)
            aa = _aa_of(blk, blk.mid_chs, aa_kind)
            m = FusedEdgeResidual(ci(ew), c(eb), ci(pw), c(pb), blk.conv_exp.stride[0], act, blk.has_skip, aa,
                                  cpu_ops=cpu_pw)
            blocks.append((name, "er", m))
        elif kind == "uir":
            gamma = blk.layer_scale.gamma if blk.layer_scale is not None else None
            t = {}
            if blk.dw_start is not None:
                t["start_dw_w"], t["start_dw_b"] = _fold(blk.dw_start.conv.weight, blk.dw_start.bn)
            t["expand_w"], t["expand_b"] = _fold(blk.pw_exp.conv.weight, blk.pw_exp.bn)
            if blk.dw_mid is not None:
                t["mid_dw_w"], t["mid_dw_b"] = _fold(blk.dw_mid.conv.weight, blk.dw_mid.bn)
            t["proj_w"], t["proj_b"] = _fold(blk.pw_proj.conv.weight, blk.pw_proj.bn, gamma)
            t = {k: c(v) for k, v in t.items()}
            if blk.anti_aliased:
                if blk.dw_mid is None or blk.dw_mid.aa is None:
                    raise NotImplementedError(f"{name}: anti-alias pool after dw_start is not supported")
                m = FusedUIBComposite(t, blk.has_skip, act, _aa_of(blk.dw_mid, blk.mid_chs, aa_kind))
            else:
                be, fn = chosen["uib"]
                if be == "cpu":  # the layout the CPU op's channels_last path reads in place
                    t = {k: channels_innermost(v) if k.endswith("_w") else v for k, v in t.items()}
                m = FusedUIB(fn, be, t, blk.stride, blk.has_skip, act)
            blocks.append((name, "uib", m))
        elif kind == "mqa":
            attn = blk.attn
            gamma = blk.layer_scale.gamma if blk.layer_scale is not None else None
            s, sh = _bn_affine(blk.norm)
            t = dict(norm_scale=s, norm_shift=sh)
            t["q_w"] = attn.query.proj.weight.detach().double()
            t["k_w"] = attn.key.proj.weight.detach().double()
            t["v_w"] = attn.value.proj.weight.detach().double()
            if attn.key.down_conv is not None:
                t["k_dw_w"], t["k_dw_b"] = _fold(attn.key.down_conv.weight, attn.key.norm)
                t["v_dw_w"], t["v_dw_b"] = _fold(attn.value.down_conv.weight, attn.value.norm)
            o = attn.output.proj.weight.detach().double()
            if gamma is not None:
                o = o * gamma.detach().double().view(-1, 1, 1, 1)
            t["o_w"] = o
            t = {k: c(v) for k, v in t.items()}
            be, fn = chosen["mqa"]
            m = FusedMQA(fn, be, t, attn.num_heads, attn.kv_stride, blk.has_skip)
            blocks.append((name, "mqa", m))
        else:
            raise TypeError(f"{name}: unknown block kind {kind!r}")
        if getattr(m, "aa", None) is not None:
            m.aa.to(dtype)

    hw, hb = _fold(ref.conv_head.weight, ref.norm_head)
    hw = hw.reshape(hw.shape[0], -1)
    cls = ref.classifier
    if isinstance(cls, nn.Linear):
        cw, cb = cls.weight.detach(), cls.bias.detach() if cls.bias is not None else None
        if cb is None:
            cb = torch.zeros(cw.shape[0], device=cw.device)
    else:
        cw = cb = None
    if cpu_pw:
        head = FusedHead(channels_innermost(c(hw)), c(hb), act, None if cw is None else channels_innermost(c(cw)), c(cb),
                         pointwise=True)
    else:
        head = FusedHead(c(hw), c(hb), act, c(cw), c(cb))
    model = FusedMobileNetV4(stem, blocks, head, model_name=getattr(ref, "model_name", "mobilenetv4"),
                             num_classes=getattr(ref, "num_classes", 0 if cw is None else cw.shape[0]),
                             num_features=getattr(ref, "num_features", hw.shape[1]), act=act, dtype=dtype,
                             requested_backend=backend, fallback_reasons=notes)
    return model.to(device)


def load(name: str, checkpoint=None, device="cpu", dtype=torch.float32, backend: str = "auto",
         num_classes=None) -> FusedMobileNetV4:
    """create_model(name) [+ load_checkpoint(checkpoint)] -> fuse(...) on `device` in `dtype`.

    num_classes: None = what the checkpoint holds (1000 without a checkpoint). The returned model carries
    model_name, num_classes and pretrained_cfg (timm's default eval preprocessing for the model)."""
    from mnv4_reference.loader import load_checkpoint
    from mnv4_reference.model import create_model
    from mnv4_reference.preprocess import pretrained_cfg

    if checkpoint is not None:
        ref = load_checkpoint(name, checkpoint, num_classes=num_classes)
    else:
        ref = create_model(name, num_classes=1000 if num_classes is None else num_classes).eval()
    ref = ref.to(device)
    model = fuse(ref, backend=backend, dtype=dtype)
    cfg = pretrained_cfg(name)
    cfg["num_classes"] = model.num_classes
    model.pretrained_cfg = cfg
    return model
