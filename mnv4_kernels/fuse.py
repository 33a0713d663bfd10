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

Which model: an mnv4_reference MobileNetV4 is folded as it is. Any other module whose state dict is one of the
twelve variants (a timm MobileNetV4, a module that only carries the parameters) is read through the
reference: the variant comes from the module's own record (timm keeps the architecture name in
`pretrained_cfg` / `default_cfg`), else from fuse(name=...), else from its state dict's keys and shapes.
conv_medium, conv_aa_medium and conv_blur_medium have one state dict, as have conv_large and conv_aa_large
(the anti-alias pools carry no parameters): there the state dict cannot tell, and fuse() asks for the name
rather than guess a network that computes something else.

dtype: float32 (default), float16 and bfloat16 run on every backend. float64 runs every block on the
plain-torch reference backend (the kernels have no float64 path); backend="auto" and "reference" accept it,
summary() says so, and an explicit kernel backend with float64 is a ValueError at fuse() time.
"""

import functools

import torch
import torch.nn as nn

from .backends import backends as _backends
from .ops import channels_innermost
from .model import (AAPool, FusedConv, FusedEdgeResidual, FusedHead, FusedMobileNetV4, FusedMQA, FusedUIB,
                    FusedUIBComposite)

__all__ = ["fuse", "load", "resolve_backends", "variant_of", "BackendError", "BACKEND_NAMES", "KERNEL_DTYPES",
           "LOW_PRECISION_ERROR_FACTOR",
           "DTYPES"]

BACKEND_NAMES = ("auto", "cpu", "cuda", "triton", "reference")
_OPS = ("uib", "mqa")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # what the cpu / cuda / triton kernels run
DTYPES = KERNEL_DTYPES + (torch.float64,)  # float64: on the reference backend only
# The accuracy contract of a fused model in fp16 / bf16: the relative error of its logits against the fp32
# reference is at most this many times that of the reference itself run in that dtype by PyTorch
# (tests/test_bf16_model.py holds every model to it; `run` checks it on its input).
LOW_PRECISION_ERROR_FACTOR = 1.5


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
# which MobileNetV4: the module's record, name=, or its state dict
# ------------------------------------------------------------------------------------------------------------

def _skip_key(k):
    """Keys that do not identify a variant: the classifier (any number of classes, or none) and BatchNorm's
    step counters (present or not, as in timm's files)."""
    return k.startswith("classifier.") or k.endswith("num_batches_tracked")


def _signature(state_dict):
    return frozenset((k, tuple(v.shape)) for k, v in state_dict.items() if not _skip_key(k))


@functools.lru_cache(maxsize=None)
def _variant_signature(name):
    """The keys and shapes of a variant's state dict (built on the meta device: no memory, no init cost)."""
    from mnv4_reference.model import create_model
    with torch.device("meta"):
        return _signature(create_model(name, num_classes=0).state_dict())


def _recorded_name(module):
    """The architecture a module records about itself: timm's pretrained_cfg / default_cfg['architecture']
    (a dict, or an object with that attribute), else a `model_name` attribute; None when it records none."""
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(module, attr, None)
        arch = cfg.get("architecture") if isinstance(cfg, dict) else getattr(cfg, "architecture", None)
        if isinstance(arch, str) and arch:
            return arch.split(".")[0]  # "arch.tag" names a weight set of arch
    name = getattr(module, "model_name", None)
    return name if isinstance(name, str) and name else None


def _diff(sd_sig, want_sig):
    """(missing, unexpected, wrong shape) key lists between a state dict's signature and a variant's."""
    have, want = dict(sd_sig), dict(want_sig)
    missing = sorted(k for k in want if k not in have)
    unexpected = sorted(k for k in have if k not in want)
    wrong = sorted(f"{k} {have[k]} vs {want[k]}" for k in have if k in want and have[k] != want[k])
    return missing, unexpected, wrong


def _fmt_diff(missing, unexpected, wrong, limit=5):
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("with another shape", wrong)):
        if keys:
            more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
            parts.append(f"{len(keys)} {label} ({', '.join(keys[:limit])}{more})")
    return "; ".join(parts)


def variant_of(module: nn.Module, name=None) -> str:
    """The MobileNetV4 variant (one of mnv4_reference.MODEL_NAMES) that `module` is: its own record
    (pretrained_cfg / default_cfg 'architecture', model_name), else `name`, else the one variant whose
    state dict has the module's keys and shapes (classifier and num_batches_tracked aside).

    Raises TypeError when the module is not a MobileNetV4 of the twelve (saying what was expected and how
    close the nearest variant is), ValueError when the record and `name` disagree, when the record or `name`
    is not one of the twelve, or when the state dict fits several variants (listing them: pass name=)."""
    from mnv4_reference.model import MODEL_NAMES

    if not isinstance(module, nn.Module):
        raise TypeError(f"fuse() takes a MobileNetV4 nn.Module (an mnv4_reference model or a module whose state "
                        f"dict is one of the twelve variants, e.g. a timm model); got {type(module).__name__}")
    recorded = _recorded_name(module)
    if recorded is not None and recorded not in MODEL_NAMES:
        raise TypeError(f"fuse() takes one of the twelve MobileNetV4 variants ({', '.join(MODEL_NAMES)}); the "
                        f"{type(module).__name__} given records architecture {recorded!r}")
    if name is not None and name not in MODEL_NAMES:
        raise ValueError(f"name must be one of {', '.join(MODEL_NAMES)}; got {name!r}")
    if recorded is not None and name is not None and recorded != name:
        raise ValueError(f"name={name!r} but the module records architecture {recorded!r}")
    if recorded is not None or name is not None:
        return recorded or name
    sig = _signature(module.state_dict())
    matches = [n for n in MODEL_NAMES if _variant_signature(n) == sig]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(
            f"the state dict of this {type(module).__name__} fits {len(matches)} MobileNetV4 variants: "
            f"{', '.join(matches)} (their anti-alias pools carry no parameters, so the weights cannot tell them "
            f"apart, and each computes a different network); pass fuse(..., name=...) with the one it is, or "
            f"give the module a pretrained_cfg={{'architecture': ...}} as timm does")
    nearest = min(MODEL_NAMES, key=lambda n: sum(map(len, _diff(sig, _variant_signature(n)))))
    raise TypeError(
        f"fuse() takes an mnv4_reference MobileNetV4 or a module whose state dict is one of the twelve MobileNetV4 "
        f"variants (timm's keys and shapes, e.g. a timm model); the state dict of this {type(module).__name__} "
        f"({len(sig)} entries) is none of them; nearest, {nearest}: "
        f"{_fmt_diff(*_diff(sig, _variant_signature(nearest)))}")


def _as_reference(module: nn.Module, name=None):
    """(reference MobileNetV4 computing what `module` computes in eval mode, its name). An mnv4_reference
    model is returned as it is; any other module is read into a new reference model of its variant on its
    device (strictly: every key, every shape)."""
    from mnv4_reference.model import MobileNetV4, create_model

    if isinstance(module, MobileNetV4):
        if name is not None and name != module.model_name:
            raise ValueError(f"name={name!r} but the model is {module.model_name!r}")
        return module, module.model_name
    name = variant_of(module, name)
    sd = module.state_dict()
    problems = _fmt_diff(*_diff(_signature(sd), _variant_signature(name)))
    if problems:
        raise ValueError(f"the state dict of this {type(module).__name__} does not fit {name}: {problems}")
    cls_w = sd.get("classifier.weight")
    num_classes = 0 if cls_w is None else cls_w.shape[0]
    try:
        device = next(t.device for t in sd.values())
    except StopIteration:
        device = torch.device("cpu")
    with torch.device(device):
        ref = create_model(name, num_classes=num_classes)
    want = ref.state_dict()
    sd = {k: v for k, v in sd.items() if k in want}  # num_batches_tracked may be absent from a stand-in
    bad = [k for k, v in sd.items() if v.is_floating_point() != want[k].is_floating_point()]
    if bad:
        raise ValueError(f"the state dict of this {type(module).__name__} has non-float values where {name} has "
                         f"floats (or the reverse): {', '.join(bad[:5])}")
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"the state dict of this {type(module).__name__} does not fit {name}: "
                         f"{_fmt_diff(missing, unexpected, [])}")
    return ref.eval(), name


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


def fuse(model: nn.Module, backend: str = "auto", dtype=None, name=None) -> FusedMobileNetV4:
    """Fold a MobileNetV4 into a FusedMobileNetV4 (inference only, eval semantics).

    model: an mnv4_reference model (create_model / load_checkpoint) or any module whose state dict is one of
    the twelve variants, a timm model included; the variant comes from its record (timm's pretrained_cfg),
    else `name`, else its state dict, which must then fit exactly one variant (see the module docstring and
    variant_of). backend: "auto" | "cpu" | "cuda" | "triton" | "reference" (see the module docstring),
    resolved for the device the model is on. dtype: None keeps float32; torch.float16 / torch.bfloat16 cast
    the folded weights (folding itself is float64); torch.float64 runs every block on the reference backend
    (backend "auto" or "reference"; a kernel backend raises ValueError). The model is not modified.
    Called under torch.inference_mode, it still makes the fused model's constants normal tensors: the CPU
    ops keep each weight's packed form in a cache keyed by the tensor and its version counter, which
    inference tensors lack, so inference-tensor weights would be packed again on every call.
    """
    with torch.inference_mode(False):
        return _fuse(model, backend, dtype, name)


def _fuse(model, backend, dtype, name):
    ref, variant = _as_reference(model, name)
    dtype = torch.float32 if dtype is None else dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16 (every backend) or "
                         f"torch.float64 (the reference backend); got {dtype}")
    device = ref.conv_stem.weight.device
    if dtype in KERNEL_DTYPES or backend not in ("auto", "reference"):
        if dtype not in KERNEL_DTYPES and backend in BACKEND_NAMES:
            raise ValueError(f"dtype {dtype} runs on the reference backend only (backend='auto' or 'reference'); "
                             f"backend {backend!r} runs torch.float32, torch.float16 and torch.bfloat16")
        chosen, notes = resolve_backends(backend, device)
    else:  # float64: the plain-torch reference runs every block
        chosen, _ = resolve_backends("reference", device)
        notes = {op: f"reference ({dtype} runs on the reference backend; the kernels run float32, float16 and "
                     "bfloat16)" for op in _OPS} if backend == "auto" else {}
    act = ref.act
    aa_kind = getattr(ref, "aa_layer", None)

    def c(t):  # a view or same-dtype copy of an inference tensor (a model built under inference_mode) is one too
        if t is None:
            return None
        t = t.to(dtype).contiguous()
        return t.clone() if t.is_inference() else t

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
    fused = FusedMobileNetV4(stem, blocks, head, model_name=variant,
                             num_classes=getattr(ref, "num_classes", 0 if cw is None else cw.shape[0]),
                             num_features=getattr(ref, "num_features", hw.shape[1]), act=act, dtype=dtype,
                             requested_backend=backend, fallback_reasons=notes)
    return fused.to(device)


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
