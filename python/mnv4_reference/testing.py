"""Random folded weights and the edge-case shape battery, shared by tests and benchmarks.

Every kernel (CPU, CUDA, Triton) is checked against `mnv4_reference.functional` on arguments drawn here, so
the tests and the benchmarks cannot drift apart. Values are fresh random numbers scaled to keep activations
O(1) through the block (never zeros, which hide unwritten outputs).
"""

import torch

__all__ = ["rel_err", "random_uib_args", "random_mqa_args", "UIB_FORMS", "uib_battery", "mqa_battery"]

# form -> (has start dw, has mid dw)
UIB_FORMS = {"extradw": (True, True), "ib": (False, True), "convnext": (True, False), "ffn": (False, False)}


def rel_err(out, ref):
    """‖out − ref‖ / ‖ref‖ in float64 (NaN or Inf anywhere gives inf)."""
    out = out.detach().to(torch.float64).cpu()
    ref = ref.detach().to(torch.float64).cpu()
    if out.shape != ref.shape:
        raise AssertionError(f"shape {tuple(out.shape)} != reference shape {tuple(ref.shape)}")
    if not torch.isfinite(out).all():
        return float("inf")
    den = ref.norm().item()
    return (out - ref).norm().item() / (den if den > 0 else 1.0)


def _g(gen, *shape, scale=1.0, dtype=torch.float32, device="cpu"):
    return (torch.randn(*shape, generator=gen, dtype=torch.float32) * scale).to(dtype=dtype, device=device)


def random_uib_args(n, cin, h, w, mid, cout, k_start=3, k_mid=3, stride=1, residual=None, activation="relu",
                    dtype=torch.float32, device="cpu", seed=0, channels_last=False):
    """Positional args for mnv4::uib: (x, start_dw_w, start_dw_b, expand_w, expand_b, mid_dw_w, mid_dw_b,
    proj_w, proj_b, stride, residual, activation). k_start / k_mid = 0 omit that dw conv."""
    g = torch.Generator().manual_seed(seed)
    if residual is None:
        residual = stride == 1 and cin == cout
    kw = dict(dtype=dtype, device=device)
    x = _g(g, n, cin, h, w, **kw)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    sw = _g(g, cin, 1, k_start, k_start, scale=1.0 / k_start, **kw) if k_start else None
    sb = _g(g, cin, scale=0.1, **kw) if k_start else None
    ew = _g(g, mid, cin, 1, 1, scale=cin ** -0.5, **kw)
    eb = _g(g, mid, scale=0.1, **kw)
    mw = _g(g, mid, 1, k_mid, k_mid, scale=1.0 / k_mid, **kw) if k_mid else None
    mb = _g(g, mid, scale=0.1, **kw) if k_mid else None
    pw = _g(g, cout, mid, 1, 1, scale=mid ** -0.5, **kw)
    pb = _g(g, cout, scale=0.1, **kw)
    return (x, sw, sb, ew, eb, mw, mb, pw, pb, stride, residual, activation)


def random_mqa_args(n, c, h, w, num_heads=4, key_dim=64, value_dim=None, kv_stride=1, kv_dw=None, cout=None,
                    residual=True, dtype=torch.float32, device="cpu", seed=0, channels_last=False):
    """Positional args for mnv4::mqa: (x, norm_scale, norm_shift, q_w, k_dw_w, k_dw_b, k_w, v_dw_w, v_dw_b,
    v_w, o_w, num_heads, kv_stride, residual). kv_dw defaults to kv_stride == 2 (as in MobileNetV4)."""
    g = torch.Generator().manual_seed(seed)
    value_dim = value_dim or key_dim
    cout = cout or c
    kv_dw = (kv_stride == 2) if kv_dw is None else kv_dw
    kw = dict(dtype=dtype, device=device)
    x = _g(g, n, c, h, w, **kw)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    scale = (1.0 + 0.2 * _g(g, c)).to(**kw)
    shift = _g(g, c, scale=0.1, **kw)
    # q/k scaled up a little so the softmax is not uniform (a flat softmax hides indexing bugs).
    q_w = _g(g, num_heads * key_dim, c, 1, 1, scale=2.0 * c ** -0.5, **kw)
    k_w = _g(g, key_dim, c, 1, 1, scale=2.0 * c ** -0.5, **kw)
    v_w = _g(g, value_dim, c, 1, 1, scale=c ** -0.5, **kw)
    o_w = _g(g, cout, num_heads * value_dim, 1, 1, scale=(num_heads * value_dim) ** -0.5, **kw)
    kdw = _g(g, c, 1, 3, 3, scale=1.0 / 3, **kw) if kv_dw else None
    kdb = _g(g, c, scale=0.1, **kw) if kv_dw else None
    vdw = _g(g, c, 1, 3, 3, scale=1.0 / 3, **kw) if kv_dw else None
    vdb = _g(g, c, scale=0.1, **kw) if kv_dw else None
    return (x, scale, shift, q_w, kdw, kdb, k_w, vdw, vdb, v_w, o_w, num_heads, kv_stride, residual)


def uib_battery(vec=8, small=False):
    """The edge-case battery for uib as dicts of random_uib_args keywords: channels below, at, above and
    not a multiple of the vector tile; H, W = 1, odd, even; stride 1 and 2; k 3 and 5; all four forms;
    relu/gelu/none; residual on and off. `small` trims sizes for slow backends (interpreters)."""
    hw = [(1, 1), (5, 7), (8, 8)] if small else [(1, 1), (1, 9), (7, 7), (8, 6), (14, 14), (17, 13)]
    chans = [(3, 8, 5), (vec, 2 * vec, vec), (vec + 1, 3 * vec + 3, vec - 1), (16, 40, 16)]
    cases = []
    i = 0
    for form, (has_s, has_m) in UIB_FORMS.items():
        for k in (3, 5):
            for stride in (1, 2):
                if stride == 2 and not (has_s or has_m):
                    continue
                for (h, w) in hw:
                    cin, mid, cout = chans[i % len(chans)]
                    act = ("relu", "gelu", "none")[i % 3]
                    cases.append(dict(n=1 + (i % 2), cin=cin, h=h, w=w, mid=mid, cout=cout,
                                      k_start=k if has_s else 0, k_mid=(5 if k == 3 else 3) if has_s and has_m else (k if has_m else 0),
                                      stride=stride, activation=act, seed=i))
                    i += 1
    # residual blocks (stride 1, Cin == Cout) of every form
    for form, (has_s, has_m) in UIB_FORMS.items():
        cases.append(dict(n=2, cin=vec + 3, h=9, w=6, mid=4 * vec, cout=vec + 3, k_start=3 if has_s else 0,
                          k_mid=5 if has_m else 0, stride=1, residual=True, activation="relu", seed=100 + len(cases)))
    return cases


def mqa_battery(small=False):
    """Edge cases for mqa: heads 1/4/8, key dims 8..128 (48 and 64 real), kv stride 1/2, odd and even H, W."""
    hw = [(1, 1), (5, 7), (8, 8)] if small else [(1, 1), (3, 5), (7, 7), (8, 8), (9, 12), (16, 16)]
    heads_dims = [(1, 8), (4, 64), (8, 48), (2, 128)] if not small else [(1, 8), (4, 16), (2, 24)]
    cases = []
    i = 0
    for kv_stride in (1, 2):
        for (h, w) in hw:
            heads, dk = heads_dims[i % len(heads_dims)]
            c = (24, 33, 64)[i % 3] if not small else (8, 13)[i % 2]
            cases.append(dict(n=1 + (i % 2), c=c, h=h, w=w, num_heads=heads, key_dim=dk, kv_stride=kv_stride,
                              seed=i))
            i += 1
    cases.append(dict(n=1, c=16, h=6, w=5, num_heads=2, key_dim=8, kv_stride=1, kv_dw=True, seed=50))
    cases.append(dict(n=1, c=16, h=6, w=5, num_heads=2, key_dim=8, value_dim=12, cout=10, residual=False,
                      kv_stride=2, seed=51))
    return cases


class OpModule(torch.nn.Module):
    """relu(op(x, *args)) + 1: an op between other ops in a module, for torch.compile / torch.export tests.

    Tensor arguments become buffers (so export sees them as state), the others stay Python constants."""

    def __init__(self, op, args):
        super().__init__()
        self.op = op
        self.slots = []
        for i, a in enumerate(args):
            if isinstance(a, torch.Tensor):
                self.register_buffer(f"arg{i}", a)
                self.slots.append((True, f"arg{i}"))
            else:
                self.slots.append((False, a))

    def forward(self, x):
        args = [getattr(self, v) if is_tensor else v for is_tensor, v in self.slots]
        return torch.relu(self.op(x, *args)) + 1.0


NON_CONTIGUOUS_KINDS = ("sliced", "transposed_hw", "nhcw")


def non_contiguous(x, kind):
    """A non-contiguous tensor equal to the 4-D x: every other column of a wider tensor ("sliced"), the
    transpose of a W x H tensor ("transposed_hw"), or channels in the middle of the strides ("nhcw")."""
    if kind == "sliced":
        wide = torch.zeros(x.shape[0], x.shape[1], x.shape[2], 2 * x.shape[3], dtype=x.dtype, device=x.device)
        wide[..., 1::2] = float("nan")  # the skipped columns: a kernel that reads them shows it
        wide[..., ::2] = x
        return wide[..., ::2]
    if kind == "transposed_hw":
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    if kind == "nhcw":
        return x.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    raise ValueError(f"kind must be one of {NON_CONTIGUOUS_KINDS}; got {kind!r}")


def check_rejections(call, cases):
    """Bad-input battery: for each `fragment: kwargs` in `cases`, call(**kwargs) must raise a RuntimeError
    whose message contains `fragment` (the argument's name); afterwards call() must still succeed. Prints
    each failure and "checked N"; returns the number of failures (an exit status for a subprocess)."""
    failed = 0
    for want, kw in cases.items():
        try:
            call(**kw)
            print("NOT REJECTED:", want)
            failed += 1
        except RuntimeError as e:
            if want not in str(e):
                print("WRONG MESSAGE:", want, "|", str(e).splitlines()[0])
                failed += 1
    call()  # the good call still works afterwards
    print("checked", len(cases))
    return 1 if failed else 0


def run_script(script, *argv, timeout=300, env=None):
    """Run `script` in a fresh Python; fail unless it exits 0 (a negative code = killed by a signal)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=timeout,
                       env=env)
    assert r.returncode == 0, f"rc={r.returncode} (negative = killed by a signal)\n{r.stdout}\n{r.stderr[-6000:]}"
    return r
