"""FusedMobileNetV4: an inference-only MobileNetV4 on folded weights, its UIB and MQA blocks run by the fused
ops (torch.ops.mnv4.uib / mqa, their Triton twins, or the plain-torch composites of mnv4_reference.functional).

Built by `mnv4_kernels.fuse(reference_model)` or `mnv4_kernels.load(name, checkpoint)`. Every weight is a
buffer (no autograd, moves with `.to(device)`), forward has no data-dependent Python branching, so the model
goes through torch.compile(fullgraph=True) and torch.export.
"""

import operator
from collections import Counter
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ops import SEQ_ACT, SEQ_CONV, SEQ_MEAN, SEQ_MQA, SEQ_POINTWISE, SEQ_UIB, seq_conv_flags

__all__ = ["FusedMobileNetV4", "FusedConv", "FusedEdgeResidual", "FusedUIB", "FusedUIBComposite", "FusedMQA",
           "FusedHead", "AAPool"]


def _act(x, act: str):
    if act == "relu":
        return F.relu(x)
    if act == "gelu":
        return F.gelu(x, approximate="none")
    return x


class AAPool(nn.Module):
    """The anti-alias pool of the aa/blur variants: AvgPool2d(2, 2), or the depthwise [1,2,1]^2/16 blur."""

    def __init__(self, kind: str, channels: int, filt: Optional[torch.Tensor] = None):
        super().__init__()
        self.kind = kind
        self.channels = channels
        if kind == "blurpc":
            self.register_buffer("filt", filt.detach().clone())
        elif kind != "avg":
            raise ValueError(f"unknown anti-alias pool {kind!r}")

    def forward(self, x):
        if self.kind == "avg":
            return F.avg_pool2d(x, 2, 2)
        return F.conv2d(x, self.filt, stride=2, padding=1, groups=self.channels)

    def runs(self) -> str:
        return "torch avg_pool2d 2x2 s2" if self.kind == "avg" else "torch conv2d 3x3 depthwise blur s2"


def _op_name(op) -> str:
    """What a block's op callable is, as a user would look it up: 'mnv4::uib' for torch.ops.mnv4.uib (and
    its overloads), 'mnv4_reference.functional.uib' for a Python function."""
    qual = getattr(op, "_qualified_op_name", None) or getattr(getattr(op, "_schema", None), "name", None)
    if qual:
        return qual
    return f"{getattr(op, '__module__', '?')}.{getattr(op, '__qualname__', type(op).__name__)}"


def _torch_conv(k: int, stride: int, act: str, groups: str = "") -> str:
    a = "" if act == "none" else f" + {act}"
    return f"torch conv2d {k}x{k}{groups} s{stride}{a}"


def _pointwise(x, w, b, act: str):
    """1x1 conv / linear + bias + act through the CPU pointwise op (csrc/cpu/pointwise.cpp)."""
    return torch.ops.mnv4_cpu.pointwise(x, w, b, act)


def _conv(x, weight, bias, stride: int, act: str, proj_w=None, proj_b=None, residual: bool = False,
          channels_last: bool = False):
    """act(conv2d(x, weight, bias)) [-> 1x1 proj_w + proj_b] [+ x] through the CPU conv op
    (csrc/cpu/conv.cpp: implicit GEMM on the NHWC microkernels, weights packed once per tensor); the result
    channels_last with channels_last=True, else in x's memory format."""
    return torch.ops.mnv4_cpu.conv(x, weight, bias, stride, act, proj_w, proj_b, residual, channels_last)


class FusedConv(nn.Module):
    """conv + folded BN (weight, bias) + activation [+ anti-alias pool]: the stem and `cn` blocks.

    For a model fused for the CPU ops (cpu_ops=True) the weight is stored output-channel innermost and runs
    mnv4_cpu::pointwise (1x1) or mnv4_cpu::conv (k x k, groups 1). Otherwise F.conv2d + activation."""

    def __init__(self, weight, bias, stride, act, aa: Optional[AAPool] = None, groups: int = 1,
                 cpu_ops: bool = False):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.stride, self.padding, self.act, self.groups = stride, weight.shape[-1] // 2, act, groups
        self.aa = aa
        self.cpu_ops = cpu_ops and groups == 1

    def forward(self, x, channels_last: bool = False):
        """channels_last=True: the result channels_last whatever x's layout (else it follows x's)."""
        if not self.cpu_ops or (self.weight.shape[-1] == 1 and self.stride == 1):
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if not self.cpu_ops:
                x = _act(F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups), self.act)
            else:
                x = _pointwise(x, self.weight, self.bias, self.act)
        else:  # the conv op reads an NCHW x as it is (no conversion pass) and can write channels_last
            x = _conv(x, self.weight, self.bias, self.stride, self.act, channels_last=channels_last)
        return self.aa(x) if self.aa is not None else x

    def runs(self) -> str:
        """What forward calls (summary())."""
        k, s = self.weight.shape[-1], self.stride
        if not self.cpu_ops:
            what = _torch_conv(k, s, self.act)
        elif k == 1 and s == 1:
            what = f"mnv4_cpu::pointwise ({self.act})"
        else:
            what = f"mnv4_cpu::conv ({k}x{k} s{s}, {self.act})"
        return what + (f", then {self.aa.runs()}" if self.aa is not None else "")


class FusedEdgeResidual(nn.Module):
    """FusedIB: conv_exp k x k + folded bn1 + act [+ aa] -> conv_pwl 1x1 + folded bn2 (+ x).

    cpu_ops=True (a model fused for the CPU, weights stored output-channel innermost): the whole block in one
    mnv4_cpu::conv call (the expanded tensor never written out); with an anti-alias pool between them,
    mnv4_cpu::conv, the pool, then mnv4_cpu::pointwise."""

    def __init__(self, exp_w, exp_b, pwl_w, pwl_b, stride, act, residual, aa: Optional[AAPool] = None,
                 cpu_ops: bool = False):
        super().__init__()
        for k, v in dict(exp_w=exp_w, exp_b=exp_b, pwl_w=pwl_w, pwl_b=pwl_b).items():
            self.register_buffer(k, v)
        self.stride, self.act, self.residual, self.aa = stride, act, residual, aa
        self.padding = exp_w.shape[-1] // 2
        self.cpu_ops = cpu_ops

    def forward(self, x):
        if self.cpu_ops and self.aa is None:
            b = self._buffers
            return _conv(x, b["exp_w"], b["exp_b"], self.stride, self.act, b["pwl_w"], b["pwl_b"], self.residual)
        if self.cpu_ops:
            h = self.aa(_conv(x, self.exp_w, self.exp_b, self.stride, self.act))
            h = _pointwise(h, self.pwl_w, self.pwl_b, "none")
        else:
            h = _act(F.conv2d(x, self.exp_w, self.exp_b, self.stride, self.padding), self.act)
            if self.aa is not None:
                h = self.aa(h)
            h = F.conv2d(h, self.pwl_w, self.pwl_b)
        return h + x if self.residual else h

    def runs(self) -> str:
        k, s, res = self.exp_w.shape[-1], self.stride, " + x" if self.residual else ""
        if self.cpu_ops and self.aa is None:
            return f"mnv4_cpu::conv ({k}x{k} s{s}, {self.act}, 1x1 projection fused{res})"
        if self.cpu_ops:
            return (f"mnv4_cpu::conv ({k}x{k} s1, {self.act}), {self.aa.runs()}, mnv4_cpu::pointwise (1x1){res}")
        aa = f", {self.aa.runs()}" if self.aa is not None else ""
        return f"{_torch_conv(k, 1 if self.aa is not None else s, self.act)}{aa}, torch conv2d 1x1{res}"


_UIB_KEYS = ("start_dw_w", "start_dw_b", "expand_w", "expand_b", "mid_dw_w", "mid_dw_b", "proj_w", "proj_b")
_MQA_KEYS = ("norm_scale", "norm_shift", "q_w", "k_dw_w", "k_dw_b", "k_w", "v_dw_w", "v_dw_b", "v_w", "o_w")


def _register_optional(module, names, tensors):
    """Every name as a buffer, absent ones as None buffers (not in the state dict), so forward can read them
    all from module._buffers: nn.Module.__getattr__ costs ~0.5 us per buffer (4.4 us for a UIB's 8
    weights, a third of a 14x14 UIB call's fixed cost then; benches/kernels_cpu.py times a block call now)."""
    for k in names:
        module.register_buffer(k, tensors.get(k))


class FusedUIB(nn.Module):
    """One UIB block through the uib op (schema of csrc/ops.cpp), with the op picked by the backend."""

    def __init__(self, op: Callable, backend: str, tensors: dict, stride: int, residual: bool, activation: str):
        super().__init__()
        _register_optional(self, _UIB_KEYS, tensors)
        self.op, self.backend = op, backend
        self.stride, self.residual, self.activation = stride, residual, activation

    def forward(self, x):
        b = self._buffers
        return self.op(x, b["start_dw_w"], b["start_dw_b"], b["expand_w"], b["expand_b"], b["mid_dw_w"],
                       b["mid_dw_b"], b["proj_w"], b["proj_b"], self.stride, self.residual, self.activation)

    def runs(self) -> str:
        plain = " (plain torch ops)" if self.backend == "reference" else ""
        return f"{_op_name(self.op)}{plain}"


class FusedUIBComposite(nn.Module):
    """A stride-2 UIB of the aa/blur variants, in folded torch ops: the anti-alias pool sits between dw_mid
    and pw_proj, so the block cannot go through the uib op as a whole. The convs run at stride 1."""

    backend = "composite"

    def __init__(self, tensors: dict, residual: bool, activation: str, aa: AAPool):
        super().__init__()
        _register_optional(self, _UIB_KEYS, tensors)
        self.residual, self.activation, self.aa = residual, activation, aa

    def forward(self, x):
        h = x
        if self.start_dw_w is not None:
            h = F.conv2d(h, self.start_dw_w, self.start_dw_b, 1, self.start_dw_w.shape[-1] // 2, 1, h.shape[1])
        h = _act(F.conv2d(h, self.expand_w, self.expand_b), self.activation)
        if self.mid_dw_w is not None:
            h = _act(F.conv2d(h, self.mid_dw_w, self.mid_dw_b, 1, self.mid_dw_w.shape[-1] // 2, 1, h.shape[1]),
                     self.activation)
        h = self.aa(h)
        h = F.conv2d(h, self.proj_w, self.proj_b)
        return h + x if self.residual else h

    def runs(self) -> str:
        return f"torch conv2d (dw, 1x1, dw) s1, {self.aa.runs()}, torch conv2d 1x1"


class FusedMQA(nn.Module):
    """One Mobile MQA block through the mqa op (pre-norm as an explicit affine, layer scale folded into o_w)."""

    def __init__(self, op: Callable, backend: str, tensors: dict, num_heads: int, kv_stride: int, residual: bool):
        super().__init__()
        _register_optional(self, _MQA_KEYS, tensors)
        self.op, self.backend = op, backend
        self.num_heads, self.kv_stride, self.residual = num_heads, kv_stride, residual

    def forward(self, x):
        b = self._buffers
        return self.op(x, b["norm_scale"], b["norm_shift"], b["q_w"], b["k_dw_w"], b["k_dw_b"], b["k_w"],
                       b["v_dw_w"], b["v_dw_b"], b["v_w"], b["o_w"], self.num_heads, self.kv_stride, self.residual)

    def runs(self) -> str:
        plain = " (plain torch ops)" if self.backend == "reference" else ""
        return f"{_op_name(self.op)}{plain}"


class FusedHead(nn.Module):
    """global avg pool -> folded conv_head + norm_head (a C -> 1280 affine) + act -> classifier.

    pointwise=True: both products through mnv4_cpu::pointwise (weights stored [in][out]); else F.linear."""

    def __init__(self, head_w, head_b, act, cls_w: Optional[torch.Tensor], cls_b: Optional[torch.Tensor],
                 pointwise: bool = False):
        super().__init__()
        self.register_buffer("head_w", head_w)
        self.register_buffer("head_b", head_b)
        _register_optional(self, ("cls_w", "cls_b"), dict(cls_w=cls_w, cls_b=cls_b))
        self.act = act
        self.pointwise = pointwise

    def forward(self, x, pre_logits: bool = False):
        x = torch.ops.mnv4_cpu.mean(x) if self.pointwise else x.mean((2, 3))
        if self.pointwise:
            x = _pointwise(x, self.head_w, self.head_b, self.act)
        else:
            x = _act(F.linear(x, self.head_w, self.head_b), self.act)
        if pre_logits or self.cls_w is None:
            return x
        if self.pointwise:
            return _pointwise(x, self.cls_w, self.cls_b, "none")
        return F.linear(x, self.cls_w, self.cls_b)

    def runs(self) -> str:
        n = 1 if self.cls_w is None else 2
        mm = "mnv4_cpu::pointwise" if self.pointwise else "torch linear"
        pool = "mnv4_cpu::mean" if self.pointwise else "torch mean over H, W"
        return f"{pool}, {mm} x{n} ({self.act} after the first)"


def _sequence_steps(m: nn.Module, first: bool = False):
    """The mnv4_cpu::sequence steps of one module: [(program record, [(module, buffer name), ...])] ((None,
    None): an absent tensor), or None when the module does not run on the CPU ops alone (torch convs, an
    anti-alias pool, another backend)."""
    if isinstance(m, FusedConv):
        if not m.cpu_ops or m.aa is not None:
            return None
        if m.weight.shape[-1] == 1 and m.stride == 1:  # runs mnv4_cpu::pointwise, whose output follows x's layout
            return None if first else [((SEQ_POINTWISE, 0, SEQ_ACT[m.act], 0), [(m, "weight"), (m, "bias")])]
        return [((SEQ_CONV, m.stride, SEQ_ACT[m.act], seq_conv_flags(channels_last=first)),
                 [(m, "weight"), (m, "bias"), (None, None), (None, None)])]  # no projection
    if isinstance(m, FusedEdgeResidual):
        if not m.cpu_ops or m.aa is not None:
            return None
        return [((SEQ_CONV, m.stride, SEQ_ACT[m.act], seq_conv_flags(residual=m.residual)),
                 [(m, "exp_w"), (m, "exp_b"), (m, "pwl_w"), (m, "pwl_b")])]
    if isinstance(m, FusedUIB) and m.backend == "cpu":
        return [((SEQ_UIB, m.stride, SEQ_ACT[m.activation], int(m.residual)), [(m, k) for k in _UIB_KEYS])]
    if isinstance(m, FusedMQA) and m.backend == "cpu":
        return [((SEQ_MQA, m.num_heads, m.kv_stride, int(m.residual)), [(m, k) for k in _MQA_KEYS])]
    if isinstance(m, FusedHead) and m.pointwise:
        steps = [((SEQ_MEAN, 0, 0, 0), []),
                 ((SEQ_POINTWISE, 0, SEQ_ACT[m.act], 0), [(m, "head_w"), (m, "head_b")])]
        if m.cls_w is not None:
            steps.append(((SEQ_POINTWISE, 0, 0, 0), [(m, "cls_w"), (m, "cls_b")]))
        return steps
    return None


def _merge_conv_pointwise(steps):
    """A k x k conv step without projection or residual followed by a `cn` 1x1 conv's pointwise step becomes
    one conv step with that 1x1 conv as its projection (Conv-S's stages 0 and 1: 3x3 s2 -> 1x1): the conv's
    output rows go through the 1x1 conv while they are in L1 instead of to memory and back, and one op call
    less. The same microkernel over the same rows in the same order: bit-identical logits."""
    out = []
    for record, refs in steps:
        if out and record[0] == SEQ_POINTWISE and isinstance(refs[0][0], FusedConv):
            (op, stride, act, flags), prev = out[-1]
            if op == SEQ_CONV and prev[2] == (None, None) and not flags & 1:
                out[-1] = ((op, stride, act, flags | seq_conv_flags(proj_activation=refs[0][0].act)),
                           prev[:2] + refs)
                continue
        out.append((record, refs))
    return out


def _buffer_gather(refs):
    """[(get, buffers)] such that the tensors of `refs` ([(module, buffer name)], (None, None) for an absent
    tensor) are, in order, the items of every get(buffers): one itemgetter per run of one module's buffers
    (looked up per call, so .to() and load_state_dict() hold), a constant run of Nones for absent ones. The
    same list as one `module._buffers[name]` per tensor, in a few C-level calls instead of a Python loop."""
    runs = []  # [module or None, [names]]
    for m, k in refs:
        if runs and runs[-1][0] is m:
            runs[-1][1].append(k)
        else:
            runs.append([m, [k]])
    gather = []
    for m, names in runs:
        if m is None:
            gather.append((lambda _, n=len(names): (None,) * n, None))
        else:  # an itemgetter of one name returns the item itself: two names always make a tuple
            get = operator.itemgetter(*names) if len(names) > 1 else (lambda b, k=names[0]: (b[k],))
            gather.append((get, m._buffers))
    return gather


class FusedMobileNetV4(nn.Module):
    """Inference-only MobileNetV4 (eval semantics whatever .train() says).

    Attributes: model_name, num_classes, num_features, in_chans, dtype, pretrained_cfg (set by load()),
    block_backends: list of (block name, kind, backend) for stem, every block and the head, where kind is
    stem | cn | er | uib | mqa | head and backend is the uib/mqa backend (cpu, cuda, triton, reference),
    'composite' for the anti-aliased stride-2 UIBs run as folded torch ops, 'cpu' for a stem, cn, er block or
    head run by the mnv4_cpu ops, or 'torch' for one run by torch convs; steps: the same rows with what each
    one calls (summary() prints them).
    """

    def __init__(self, stem: FusedConv, blocks: List[Tuple[str, str, nn.Module]], head: FusedHead, *,
                 model_name: str, num_classes: int, num_features: int, act: str, dtype: torch.dtype,
                 requested_backend: str, fallback_reasons: Optional[dict] = None):
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList([m for _, _, m in blocks])
        self.head = head
        self.block_names = [n for n, _, _ in blocks]
        self.block_kinds = [k for _, k, _ in blocks]
        self.model_name = model_name
        self.num_classes = num_classes
        self.num_features = num_features
        self.in_chans = stem.weight.shape[1]
        self.act = act
        self.requested_backend = requested_backend
        self.fallback_reasons = dict(fallback_reasons or {})
        self.pretrained_cfg = None
        self._plan_key = None  # the (stem, *blocks, head) that _plan was built for
        self._plan = self._gather = self._hook_dicts = None
        self.eval()

    def _sequence(self, merge: bool = True):
        """(program, [(module, buffer name), ...]) for mnv4_cpu::sequence when stem, every block and the head
        run on the CPU ops, else None. Rebuilt when the stem, a block or the head is replaced; buffers are
        looked up per call, so .to() and load_state_dict() hold. merge=False: without _merge_conv_pointwise
        (built afresh, not kept; benches/forward_cpu.py times the two)."""
        key = (self.stem, *self.blocks, self.head)
        if key != self._plan_key or not merge:
            steps = []
            for i, m in enumerate(key):
                s = _sequence_steps(m, first=i == 0)
                if s is None:
                    steps = None
                    break
                steps += s
            if steps is not None and merge:
                steps = _merge_conv_pointwise(steps)
            plan = None if steps is None else ([v for record, _ in steps for v in record],
                                               [ref for _, refs in steps for ref in refs])
            if not merge:
                return plan
            self._plan = plan
            self._gather = None if plan is None else _buffer_gather(plan[1])
            self._hook_dicts = [d for m in self.modules() if m is not self
                                for d in (m._forward_hooks, m._forward_pre_hooks)]
            self._plan_key = key
        return self._plan

    @property
    def steps(self) -> List[Tuple[str, str, str, str]]:
        """(name, kind, backend, what forward calls) for the stem, every block and the head."""
        def backend(m):
            if hasattr(m, "backend"):
                return m.backend
            return "cpu" if getattr(m, "cpu_ops", False) or getattr(m, "pointwise", False) else "torch"

        rows = [("stem", "stem", backend(self.stem), self.stem.runs())]
        for name, kind, m in zip(self.block_names, self.block_kinds, self.blocks):
            rows.append((name, kind, backend(m), m.runs()))
        rows.append(("head", "head", backend(self.head), self.head.runs()))
        return rows

    @property
    def block_backends(self) -> List[Tuple[str, str, str]]:
        return [(name, kind, backend) for name, kind, backend, _ in self.steps]

    @property
    def device(self) -> torch.device:
        return self.stem.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.stem.weight.dtype

    def _check_input(self, x):
        """x must be a floating-point [N, in_chans, H, W] batch, as the reference model requires (one Python
        test per call; under torch.compile / torch.export it is resolved at trace time)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__}: x must be a floating-point tensor [N, {self.in_chans}, H, W]; "
                            f"got {type(x).__name__}")
        if not x.is_floating_point() or x.dim() != 4 or x.shape[1] != self.in_chans:
            err = TypeError if not x.is_floating_point() else ValueError
            raise err(f"{type(self).__name__}: x must be a floating-point tensor [N, {self.in_chans}, H, W] (a batch "
                      f"of {self.in_chans}-channel images, any float dtype: it is cast to {self.dtype}); got "
                      f"{str(x.dtype).replace('torch.', '')} of shape {list(x.shape)}")

    def forward_features(self, x):
        """Input -> output of the last (960-channel) stage, before pooling; x is cast to the model dtype.

        Runs channels_last throughout: the CPU ops read it in place (NHWC kernels), the ops' outputs follow
        their input's layout, so the stem's channels_last output sets the layout of every block. On the CPU
        ops the stem converts an NCHW image itself, band by band inside its tasks (no separate pass); otherwise
        x is converted first (measured end to end by benches/e2e_cpu.py). x: as forward's."""
        self._check_input(x)
        return self._features(x)

    def _features(self, x):
        x = self.stem(x.to(self.stem.weight.dtype), channels_last=True)
        for b in self.blocks:
            x = b(x)
        return x

    def forward_head(self, x, pre_logits: bool = False):
        return self.head(x, pre_logits)

    def _hooked(self) -> bool:
        """Whether a forward hook is registered on any submodule (or globally): then forward calls the blocks
        one by one, so the hooks run."""
        from torch.nn.modules import module as nn_module
        if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
            return True
        return any(self._hook_dicts)

    def forward(self, x):
        """Logits. A model on the CPU ops runs stem, blocks and head in one mnv4_cpu::sequence call: the same
        kernels as calling the blocks one by one, bit for bit, without Python and the dispatcher between them
        (benches/forward_cpu.py times the two). With a forward hook on a submodule, and under torch.compile /
        torch.export, the blocks are called one by one. x: a floating-point [N, 3, H, W] batch (TypeError /
        ValueError naming x otherwise)."""
        self._check_input(x)
        plan = None if torch.compiler.is_compiling() or x.device.type != "cpu" else self._sequence()
        if plan is not None and not self._hooked():
            tensors = [t for get, buffers in self._gather for t in get(buffers)]
            dtype = self.stem.weight.dtype
            return torch.ops.mnv4_cpu.sequence(x if x.dtype == dtype else x.to(dtype), tensors, plan[0])
        return self.head(self._features(x))

    def summary(self) -> str:
        """A human-readable table: model, dtype, device, backend per block and counts per backend, and what
        each step calls (the op, or the torch ops of a block that does not run on one)."""
        rows = self.steps
        counts = Counter((k, b) for _, k, b, _ in rows)
        lines = [f"FusedMobileNetV4 {self.model_name}: {self.num_classes} classes, dtype "
                 f"{str(self.dtype).replace('torch.', '')}, device {self.device}, backend={self.requested_backend!r}"]
        plan = self._sequence() if self.device.type == "cpu" else None
        if plan is not None:
            lines.append(f"  forward: one mnv4_cpu::sequence call running the steps below ({len(plan[0]) // 4} "
                         "kernel steps; a k x k conv and the 1x1 conv after it share one) without Python between "
                         "them; with forward hooks and under torch.compile / torch.export the blocks are called "
                         "one by one")
        else:
            lines.append("  forward: the blocks one by one, each calling what its row says")
        by_kind = {}
        for (k, b), c in sorted(counts.items()):
            by_kind.setdefault(k, []).append(f"{c} {b}")
        for k in ("stem", "cn", "er", "uib", "mqa", "head"):
            if k in by_kind:
                lines.append(f"  {k:5s} {', '.join(by_kind[k])}")
        for op, reason in self.fallback_reasons.items():
            lines.append(f"  note: {op} -> {reason}")
        if any(b == "composite" for _, _, b, _ in rows):
            lines.append("  note: composite = anti-aliased stride-2 UIB (pool between dw_mid and pw_proj) run as "
                         "folded torch ops")
        lines.append("  blocks:")
        for name, kind, backend, runs in rows:
            lines.append(f"    {name:12s} {kind:5s} {backend:9s} {runs}")
        return "\n".join(lines)

    def extra_repr(self):
        return f"model_name={self.model_name!r}, dtype={self.dtype}, backend={self.requested_backend!r}"

    def train(self, mode: bool = True):
        # inference only: folded BN has no training mode; keep eval semantics
        return super().train(False)
