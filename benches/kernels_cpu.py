"""CPU helper-op microbenchmarks behind the design choices quoted in csrc/cpu (conv.cpp, simd_impl.h, avx512.cpp).

1. mnv4_cpu::conv against the alternative PyTorch offers, oneDNN's fused conv + activation on a weight
   prepacked once (torch.ops.mkldnn._convolution_pointwise) followed, for FusedIB, by mnv4_cpu::pointwise:
   the MobileNetV4 dense convs (stems, Conv-S `cn` 3x3 s2, the FusedIB blocks) at batch 1 and 8, channels_last,
   fp32, --threads threads, interleaved (timing.interleaved), medians, and the max relative error of each
   against float64 torch.
2. The NHWC GEMM's rate per output width N (mnv4_cpu::pointwise, 6272 x 160 -> N, 1 thread): widths that
   leave a partial last column slab (16, 48, 80, 112) against full ones (64, 128).
3. The NHWC GEMM against onnxruntime's (MLAS, on its NCHWc layout) on Conv-M's 1x1 conv shapes: a chain of
   8 pointwise convs + ReLU (C -> 4C -> C, four times; onnxruntime reorders the layout once at each end),
   mnv4_cpu::pointwise against onnxruntime on the ONNX export of the same chain, at 1 and --threads threads.
4. The stem on the user's NCHW image (batch 1 and 8): mnv4_cpu::conv converting its input bands itself
   (channels_last=True, as the fused model calls it) against x.contiguous(channels_last) + the conv, and
   against an input that is channels_last already.
5. The fixed cost of one fused UIB block call (Conv-S blocks.2.1 on a 1x1 input, so the arithmetic is
   negligible): the module call (model.FusedUIB.forward) against the op called with the weights at hand.
6. The heads' global average pool (mnv4_cpu::mean, which the fused models' heads and sequence call) against
   torch's x.mean((2, 3)) on the pooled tensor of Conv-S/M at 224 (channels_last [N, 960, 7, 7]), fp32 and
   bf16, batch 1 and 8, --threads threads: torch's parallel reduction against our serial per-image sums.

    .venv/bin/python benches/kernels_cpu.py [--threads 2] [--repeats 15]
Writes benches/results/kernels-cpu-<machine>.json.
"""

import argparse
import copy
import os
import sys

import torch
import torch.nn.functional as F

import mnv4_kernels  # noqa: F401  (registers the ops)
from mnv4_kernels import report
from mnv4_kernels.ops import channels_innermost
from mnv4_kernels.timing import interleaved

# (name, batch, in channels, out channels, resolution, kernel, stride, projection channels or None)
CONVS = [
    ("conv_small/medium stem", 1, 3, 32, 224, 3, 2, None),
    ("conv_small blocks.0.0 cn", 1, 32, 32, 112, 3, 2, None),
    ("conv_small blocks.1.0 cn", 1, 32, 96, 56, 3, 2, None),
    ("conv_medium blocks.0.0 FusedIB", 1, 32, 128, 112, 3, 2, 48),
    ("conv_large blocks.0.0 FusedIB", 1, 24, 96, 192, 3, 2, 48),
    ("conv_medium stem", 8, 3, 32, 224, 3, 2, None),
    ("conv_medium blocks.0.0 FusedIB", 8, 32, 128, 112, 3, 2, 48),
]
PW_WIDTHS = [16, 48, 64, 80, 112, 128]


def max_rel_err(y, want):
    """max |y - want| / max |want|, want in float64."""
    return ((y.double() - want).abs().max() / want.abs().max()).item()


def conv_case(name, n, c, o, res, k, s, proj, repeats):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, res, res, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(o, c, k, k, generator=g) / (c * k * k) ** 0.5
    b = torch.randn(o, generator=g)
    pw = torch.randn(proj, o, 1, 1, generator=g) / o ** 0.5 if proj else None
    pb = torch.randn(proj, generator=g) if proj else None
    wi, pwi = channels_innermost(w), channels_innermost(pw) if proj else None
    want = F.relu(F.conv2d(x.double(), w.double(), b.double(), s, k // 2))
    if proj:
        want = F.conv2d(want, pw.double(), pb.double())
    packed = torch._C._nn.mkldnn_reorder_conv2d_weight(w.to_mkldnn(), [k // 2] * 2, [s] * 2, [1, 1], 1,
                                                       list(x.shape))

    def ours():
        return torch.ops.mnv4_cpu.conv(x, wi, b, s, "relu", pwi, pb, False)

    def onednn():
        h = torch.ops.mkldnn._convolution_pointwise(x, packed, b, [k // 2] * 2, [s] * 2, [1, 1], 1, "relu", [], "")
        return torch.ops.mnv4_cpu.pointwise(h, pwi, pb, "none") if proj else h

    with torch.inference_mode():
        errs = {"ours": max_rel_err(ours(), want), "onednn": max_rel_err(onednn(), want)}
        t = interleaved({"ours": ours, "onednn": onednn}, warmup=3, repeats=repeats, inner=5, settle=2, gap_s=0.02)
    ho = (res - 1) // s + 1
    flops = 2 * n * ho * ho * (o * c * k * k + (o * proj if proj else 0))
    rec = dict(kind="conv", name=name, batch=n, cin=c, cout=o, res=res, k=k, stride=s, proj=proj, gflop=flops / 1e9,
               ours_ms=t["ours"].median_ms, onednn_ms=t["onednn"].median_ms,
               ours_gflops=flops / t["ours"].median_ms / 1e6, onednn_gflops=flops / t["onednn"].median_ms / 1e6,
               onednn_over_ours=t["onednn"].median_ms / t["ours"].median_ms, max_rel_err=errs)
    print(f"{name:32s} b{n}: ours {rec['ours_ms'] * 1e3:7.0f} us ({rec['ours_gflops']:5.0f} GFLOP/s)  oneDNN "
          f"{rec['onednn_ms'] * 1e3:7.0f} us ({rec['onednn_gflops']:5.0f})  oneDNN/ours {rec['onednn_over_ours']:.2f}"
          f"  err {errs['ours']:.1e}", flush=True)
    return rec


def pointwise_widths(repeats):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6272, 160, generator=g)
    cands, flops = {}, {}
    for n in PW_WIDTHS:
        w, b = channels_innermost(torch.randn(n, 160, generator=g)), torch.randn(n, generator=g)
        cands[str(n)] = (lambda w=w, b=b: torch.ops.mnv4_cpu.pointwise(x, w, b, "none"))
        flops[str(n)] = 2 * 6272 * 160 * n
    t = interleaved(cands, warmup=3, repeats=repeats, inner=3, settle=1)
    torch.set_num_threads(old)
    recs = [dict(kind="pointwise_width", m=6272, k=160, n=int(n), threads=1, ms=t[n].median_ms,
                 gflops=flops[n] / t[n].median_ms / 1e6) for n in cands]
    print("pointwise 6272 x 160 -> N, 1 thread: " + ", ".join(f"N={r['n']} {r['gflops']:.0f}" for r in recs)
          + " GFLOP/s", flush=True)
    return recs


# (batch, resolution, channels C): the chains C -> 4C -> C of Conv-M's stages (blocks.2.x, 3.x, 4.x-sized)
PW_CHAINS = [(8, 28, 80), (8, 14, 160), (8, 7, 256), (1, 28, 80), (1, 14, 160)]


def pointwise_vs_onnxruntime(threads, repeats):
    import torch.nn as nn

    from mnv4_kernels import baselines

    old = torch.get_num_threads()
    recs = []
    for t in sorted({1, threads}):
        torch.set_num_threads(t)
        for n, r, c in PW_CHAINS:
            g = torch.Generator().manual_seed(2)
            layers = []
            for _ in range(4):
                layers += [nn.Conv2d(c, 4 * c, 1), nn.ReLU(), nn.Conv2d(4 * c, c, 1), nn.ReLU()]
            chain = nn.Sequential(*layers).eval()
            for p in chain.parameters():
                p.data = torch.randn(p.shape, generator=g) / (p.shape[1] if p.dim() > 1 else 1) ** 0.5
            x = torch.randn(n, c, r, r, generator=g)
            xc = x.contiguous(memory_format=torch.channels_last)
            ws = [(channels_innermost(m.weight.detach()), m.bias.detach()) for m in chain if isinstance(m, nn.Conv2d)]
            ort = baselines.onnxruntime_cpu(chain, x, threads=t)

            def ours():
                h = xc
                for w, b in ws:
                    h = torch.ops.mnv4_cpu.pointwise(h, w, b, "relu")
                return h

            with torch.inference_mode():
                want = copy.deepcopy(chain).double()(x.double())
                err = max_rel_err(ours(), want)
                tm = interleaved({"ours": ours, "onnxruntime": lambda: ort(x)}, warmup=3, repeats=repeats, inner=3,
                                 settle=3, gap_s=0.05)
            flops = 2 * n * r * r * c * 4 * c * 8
            rec = dict(kind="pointwise_vs_onnxruntime", batch=n, res=r, channels=c, chain=f"{c}->{4 * c}->{c} x4",
                       threads=t, ours_ms=tm["ours"].median_ms, onnxruntime_ms=tm["onnxruntime"].median_ms,
                       ours_gflops=flops / tm["ours"].median_ms / 1e6,
                       onnxruntime_gflops=flops / tm["onnxruntime"].median_ms / 1e6,
                       ours_over_onnxruntime=tm["ours"].median_ms / tm["onnxruntime"].median_ms, max_rel_err=err)
            recs.append(rec)
            print(f"pointwise chain b{n} {r}x{r} {rec['chain']}, {t} thread(s): ours {rec['ours_gflops']:.0f} "
                  f"GFLOP/s, onnxruntime {rec['onnxruntime_gflops']:.0f}, ours/onnxruntime "
                  f"{rec['ours_over_onnxruntime']:.2f}  err {err:.1e}", flush=True)
    torch.set_num_threads(old)
    return recs


def stem_nchw(repeats):
    """The fused models' stem on the user's NCHW image: mnv4_cpu::conv converting its bands itself
    (channels_last=True, as forward_features calls it) against a whole-tensor x.contiguous(channels_last)
    first, and against an input already channels_last (no conversion)."""
    recs = []
    for n in (1, 8):
        g = torch.Generator().manual_seed(3)
        x = torch.randn(n, 3, 224, 224, generator=g)
        xc = x.contiguous(memory_format=torch.channels_last)
        w = torch.randn(32, 3, 3, 3, generator=g) / 27 ** 0.5
        b = torch.randn(32, generator=g)
        wi = channels_innermost(w)
        want = F.relu(F.conv2d(x.double(), w.double(), b.double(), 2, 1))
        cands = {
            "nchw_in": lambda: torch.ops.mnv4_cpu.conv(x, wi, b, 2, "relu", None, None, False, True),
            "convert_then_conv": lambda: torch.ops.mnv4_cpu.conv(x.contiguous(memory_format=torch.channels_last),
                                                                 wi, b, 2, "relu", None, None, False, False),
            "channels_last_in": lambda: torch.ops.mnv4_cpu.conv(xc, wi, b, 2, "relu", None, None, False, False),
        }
        with torch.inference_mode():
            errs = {k: max_rel_err(f(), want) for k, f in cands.items()}
            t = interleaved(cands, warmup=3, repeats=repeats, inner=5, settle=2, gap_s=0.02)
        rec = dict(kind="stem_nchw", batch=n, res=224, **{f"{k}_ms": t[k].median_ms for k in cands},
                   max_rel_err=errs)
        recs.append(rec)
        print(f"stem 3 -> 32 s2 b{n}, NCHW image: converting its bands {rec['nchw_in_ms'] * 1e3:.0f} us, "
              f"x.contiguous(channels_last) + conv {rec['convert_then_conv_ms'] * 1e3:.0f} us, channels_last "
              f"input {rec['channels_last_in_ms'] * 1e3:.0f} us  err {max(errs.values()):.1e}", flush=True)
    return recs


def head_pool(repeats):
    recs = []
    for dtype in (torch.float32, torch.bfloat16):
        for n in (1, 8):
            g = torch.Generator().manual_seed(4)
            x = torch.randn(n, 960, 7, 7, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
            want = x.double().mean((2, 3))
            cands = {"ours": lambda: torch.ops.mnv4_cpu.mean(x), "torch": lambda: x.mean((2, 3))}
            with torch.inference_mode():
                errs = {k: max_rel_err(f(), want) for k, f in cands.items()}
                t = interleaved(cands, warmup=3, repeats=repeats, inner=20, settle=5)
            rec = dict(kind="head_pool", dtype=str(dtype).split(".")[-1], shape=[n, 960, 7, 7],
                       ours_us=t["ours"].median_ms * 1e3, torch_us=t["torch"].median_ms * 1e3, max_rel_err=errs)
            recs.append(rec)
            print(f"head pool {rec['dtype']} [{n}, 960, 7, 7]: mnv4_cpu::mean {rec['ours_us']:.1f} us, torch mean "
                  f"{rec['torch_us']:.1f} us  err {max(errs.values()):.1e}", flush=True)
    return recs


def call_overhead(repeats):
    import time

    from mnv4_reference import create_model

    fused = mnv4_kernels.fuse(create_model("mobilenetv4_conv_small"))
    blk = dict(zip(fused.block_names, fused.blocks))["blocks.2.1"]
    x = torch.randn(1, 96, 1, 1).contiguous(memory_format=torch.channels_last)
    b = blk._buffers
    args = [b[k] for k in ("start_dw_w", "start_dw_b", "expand_w", "expand_b", "mid_dw_w", "mid_dw_b", "proj_w",
                           "proj_b")]
    op = torch.ops.mnv4.uib.default

    def per_call_us(fn, n=2000):
        best = float("inf")
        for _ in range(max(3, repeats // 3)):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            best = min(best, (time.perf_counter() - t0) / n * 1e6)
        return best

    with torch.inference_mode():
        module_us = per_call_us(lambda: blk(x))
        op_us = per_call_us(lambda: op(x, *args, blk.stride, blk.residual, blk.activation))
    print(f"fused UIB block call on a 1x1 input: module {module_us:.1f} us, op alone {op_us:.1f} us", flush=True)
    return [dict(kind="call_overhead", block="conv_small blocks.2.1", input=[1, 96, 1, 1], module_us=module_us,
                 op_us=op_us)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    records = [conv_case(*case, repeats=args.repeats) for case in CONVS]
    records += pointwise_widths(args.repeats)
    records += pointwise_vs_onnxruntime(args.threads, args.repeats)
    records += stem_nchw(args.repeats)
    records += call_overhead(args.repeats)
    records += head_pool(args.repeats)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"kernels-{report.machine_tag()}.json")
    report.write_json(out, dict(env=report.env_info(), threads=args.threads, isa=torch.ops.mnv4_cpu.isa(),
                                command="benches/kernels_cpu.py " + " ".join(sys.argv[1:]), records=records))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
