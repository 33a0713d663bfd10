"""Forward + backward of a stack of MobileNetV4 UIB blocks: torch.ops.mnv4.uib (its autograd saves only each
block's inputs and recomputes the block through the composite in the backward) against the plain-torch
composite mnv4_reference.functional.uib (autograd keeps every intermediate: the expanded tensors, the
activations' inputs).

Blocks: the UIBs of the given stages of a MobileNetV4 (default Conv-M's stages 1 and 2, ten blocks: 56x56 ->
14x14 at 224), folded weights (random init, BatchNorm folded as fuse() does), fp32, as trainable leaves; loss
sum(out * g) for a fixed random g; every weight and x require grad.

Memory, two measures, per candidate:
- saved_mb: the bytes autograd keeps between forward and backward (every tensor packed by the forward,
  counted once per storage, through torch.autograd.graph.saved_tensors_hooks): exact and independent of the
  allocator.
- peak_rss_mb: the process's peak resident set during one forward + backward above its resident set just
  before (Linux: /proc/self/clear_refs "5" resets VmHWM), in a fresh subprocess per candidate (after one
  untimed forward + backward there), so neither candidate sees the other's freed pages or allocator caches;
  glibc malloc there maps every block of 128 KiB or more and unmaps it when freed (MALLOC_ENV), so the
  resident set follows the live tensors rather than what the allocator kept from the warm-up.
Time: forward + backward, the two candidates interleaved in one process (mnv4_kernels.timing.interleaved),
median of the rounds after one warm-up round, as wall time and as the process's CPU time (all threads; less
inflated than wall time when other processes share the cores). The gradients of the two are compared (rel_err) as a check.

    python benches/backward_cpu.py [--model mobilenetv4_conv_medium] [--stages 1,2] [--batch 32] [--res 224]
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import time

import torch

import mnv4_kernels
from mnv4_kernels import report
from mnv4_kernels.timing import interleaved
from mnv4_reference import create_model
from mnv4_reference import functional as F
from mnv4_reference.testing import rel_err

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS = ("start_dw_w", "start_dw_b", "expand_w", "expand_b", "mid_dw_w", "mid_dw_b", "proj_w", "proj_b")


def build(model, stages, batch, res, seed=0):
    """(x, [(tensors, stride, residual, activation)], g): the stack's input, its blocks, the output grad."""
    torch.manual_seed(seed)
    ref = create_model(model).eval()
    fused = mnv4_kernels.fuse(ref, backend="reference")
    prefixes = tuple(f"blocks.{s}." for s in stages)
    picked = [m for n, k, m in zip(fused.block_names, fused.block_kinds, fused.blocks)
              if k == "uib" and n.startswith(prefixes) and type(m).__name__ == "FusedUIB"]
    if not picked:
        raise SystemExit(f"no UIB blocks in stages {stages} of {model}")
    shape = {}

    def record(module, inputs):
        shape["x"] = inputs[0].shape

    hook = picked[0].register_forward_pre_hook(record)
    with torch.no_grad():
        fused(torch.randn(1, 3, res, res))
    hook.remove()
    blocks = []
    for m in picked:
        t = [None if m._buffers[k] is None else m._buffers[k].detach().clone().contiguous().requires_grad_(True)
             for k in KEYS]
        blocks.append((t, m.stride, m.residual, m.activation))
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, *shape["x"][1:], generator=g).requires_grad_(True)
    with torch.no_grad():
        out = x
        for t, s, r, a in blocks:
            out = F.uib(out, *t, s, r, a)
    return x, blocks, torch.randn(out.shape, generator=g)


def _leaves(x, blocks):
    return [x] + [w for t, *_ in blocks for w in t if w is not None]


def forward(fn, x, blocks, grad_out):
    for leaf in _leaves(x, blocks):
        leaf.grad = None
    h = x
    for t, s, r, a in blocks:
        h = fn(h, *t, s, r, a)
    return (h * grad_out).sum()


def step(fn, x, blocks, grad_out):
    """One forward + backward; returns the gradients of x and of every weight."""
    forward(fn, x, blocks, grad_out).backward()
    return [leaf.grad for leaf in _leaves(x, blocks)]


CANDIDATES = {"mnv4_uib": lambda: torch.ops.mnv4.uib, "composite": lambda: F.uib}
# glibc malloc in the RSS subprocesses: blocks of 128 KiB and more come from mmap and go back to the system when
# freed (a fixed threshold turns off glibc's adaptive one, which would keep freed tensors resident), so the
# resident set follows the live tensors.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def saved_bytes(fn, x, blocks, grad_out):
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        seen[s.data_ptr()] = max(seen.get(s.data_ptr(), 0), s.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):  # the forward only
        loss = forward(fn, x, blocks, grad_out)
    loss.backward()
    return sum(seen.values())


def gradient_errors(args, batch=2):
    """Worst rel_err over x and every weight of each candidate's gradients against the composite run in
    float64, at a small batch (a check, not the subject: through ten randomly initialised blocks the fp32
    composite is itself ~1e-3 off float64 at some seeds, as ReLU masks flip on tiny differences)."""
    x, blocks, g = build(args.model, args.stages, batch, args.res)
    x64 = x.detach().double().requires_grad_(True)
    blocks64 = [([None if w is None else w.detach().double().requires_grad_(True) for w in t], s, r, a)
                for t, s, r, a in blocks]
    want = step(F.uib, x64, blocks64, g.double())
    return {n: max(rel_err(a, b) for a, b in zip(step(c(), x, blocks, g), want)) for n, c in CANDIDATES.items()}


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_rss(args, name):
    """In this (fresh) process: peak RSS of one forward + backward above the RSS just before it, in MB."""
    x, blocks, g = build(args.model, args.stages, args.batch, args.res)
    fn = CANDIDATES[name]()
    step(fn, x, blocks, g)  # untimed: lazy initialisation, allocator warm-up
    for leaf in _leaves(x, blocks):
        leaf.grad = None
    gc.collect()
    base = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    step(fn, x, blocks, g)
    peak = _status_kb("VmHWM")
    return dict(base_rss_mb=base / 1024, peak_rss_mb=(peak - base) / 1024)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenetv4_conv_medium")
    ap.add_argument("--stages", default="1,2", help="comma-separated stage indices whose UIB blocks form the stack")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--res", type=int, default=224, help="input resolution of the whole model")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None, help="JSON path (default benches/results/backward-<machine>.json)")
    ap.add_argument("--measure-rss", default=None, help=argparse.SUPPRESS)  # internal: one candidate's RSS
    args = ap.parse_args()
    args.stages = [int(s) for s in args.stages.split(",")]

    if args.measure_rss:
        print(json.dumps(measure_rss(args, args.measure_rss)))
        return

    grad_err = gradient_errors(args)
    x, blocks, g = build(args.model, args.stages, args.batch, args.res)
    saved = {n: saved_bytes(c(), x, blocks, g) / 2**20 for n, c in CANDIDATES.items()}

    rss = {}
    for n in CANDIDATES:
        cmd = [sys.executable, os.path.abspath(__file__), "--model", args.model, "--stages",
               ",".join(map(str, args.stages)), "--batch", str(args.batch), "--res", str(args.res), "--measure-rss", n]
        r = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ, **MALLOC_ENV))
        rss[n] = json.loads(r.stdout.strip().splitlines()[-1])

    fns = {n: c() for n, c in CANDIDATES.items()}
    calls = {n: (lambda f=f: step(f, x, blocks, g)) for n, f in fns.items()}
    t = interleaved(calls, warmup=1, repeats=args.repeats, progress="forward+backward (wall)")
    tc = interleaved(calls, warmup=0, repeats=args.repeats, clock=time.process_time,
                     progress="forward+backward (CPU time)")

    rows = []
    for n in CANDIDATES:
        rows.append(dict(candidate=n, saved_mb=saved[n], peak_rss_mb=rss[n]["peak_rss_mb"],
                         base_rss_mb=rss[n]["base_rss_mb"],
                         **{f"fwd_bwd_{k}": v for k, v in t[n].as_dict().items() if k != "name"},
                         **{f"fwd_bwd_cpu_{k}": v for k, v in tc[n].as_dict().items() if k != "name"}))
    shapes = [dict(cin=tt[2].shape[1], mid=tt[2].shape[0], cout=tt[6].shape[0], start_k=0 if tt[0] is None else
                   tt[0].shape[-1], mid_k=0 if tt[4] is None else tt[4].shape[-1], stride=s, residual=r, act=a)
              for tt, s, r, a in blocks]
    payload = dict(kind="backward", model=args.model, stages=args.stages, batch=args.batch, res=args.res,
                   input_shape=list(x.shape), blocks=shapes, dtype="float32", malloc_env_for_rss=MALLOC_ENV,
                   grad_rel_err_vs_float64_composite_batch2=grad_err,
                   results=rows,
                   ratios=dict(saved=saved["mnv4_uib"] / saved["composite"],
                               peak_rss=rss["mnv4_uib"]["peak_rss_mb"] / rss["composite"]["peak_rss_mb"],
                               time=t["mnv4_uib"].median_ms / t["composite"].median_ms,
                               cpu_time=tc["mnv4_uib"].median_ms / tc["composite"].median_ms),
                   env=report.env_info())
    out = args.out or os.path.join(HERE, "results", f"backward-{report.machine_tag()}.json")
    report.write_json(out, payload)
    print(report.format_table(rows, [("candidate", "candidate", "{}"), ("saved_mb", "saved MB", "{:.1f}"),
                                     ("peak_rss_mb", "peak RSS MB", "{:.1f}"),
                                     ("fwd_bwd_median_ms", "fwd+bwd ms", "{:.1f}"),
                                     ("fwd_bwd_p10_ms", "p10 ms", "{:.1f}"), ("fwd_bwd_p90_ms", "p90 ms", "{:.1f}"),
                                     ("fwd_bwd_cpu_median_ms", "CPU ms", "{:.1f}")]))
    print(f"ratios (mnv4_uib / composite): {json.dumps(payload['ratios'])}; gradients vs float64: {grad_err}")
    print("wrote", out)


if __name__ == "__main__":
    main()
