"""CPU benchmark: torch.ops.mnv4.mqa (fused) vs the composite mnv4_reference.functional.mqa, per layer, and
MobileNetV4-Hybrid-M end to end (fused on the CPU backend vs onnxruntime vs the reference model in eager).

Layers: every Mobile MQA block of Hybrid-M@256 and Hybrid-L@384, taken from mnv4_kernels.layers.layer_table
(the folded weights of a randomised reference model), at batch 1 and 8, channels_last fp32 input,
torch.set_num_threads(2) (override: --threads). Identical layers (same shape and form) are timed once and
reported with their count. A second per-layer pass at 1 thread (--no-single-thread skips it) gives the
work ratio, which shared cores distort far less than OpenMP at 2 threads. Candidates are interleaved
(mnv4_kernels.timing.interleaved), figures are medians; speedup = composite / fused, geomean over the
distinct layers per batch.
End to end: fuse(randomized_model("mobilenetv4_hybrid_medium"), backend="cpu") vs onnxruntime on the same
reference model (baselines.onnxruntime_cpu) vs baselines.eager, batch 1 at 256x256, interleaved.
Writes benches/results/mqa-<machine>.json (mnv4_kernels.report) with the command and environment.

    .venv/bin/python benches/mqa_layers_cpu.py [--batches 1 8] [--repeats 30] [--threads 2] [--no-e2e]
"""

import argparse
import os
import sys

import torch

import mnv4_kernels
from mnv4_kernels import baselines, report
from mnv4_kernels.layers import layer_table, unique_layers
from mnv4_kernels.bench import cpu_gemm_probe, measure_ceilings
from mnv4_kernels.timing import geomean, interleaved
from mnv4_reference import functional as F
from mnv4_reference.testing import rel_err

MODELS = (("mobilenetv4_hybrid_medium", 256), ("mobilenetv4_hybrid_large", 384))
E2E_MODEL, E2E_RES = "mobilenetv4_hybrid_medium", 256


def distinct_mqa_layers():
    """[(layer, count)]: the MQA layers of MODELS, one per (model, shape, form), in model order."""
    return [(l, c) for name, res in MODELS for l, c in unique_layers(layer_table(name, res)) if l.kind == "mqa"]


def bench_layers(batches, repeats, max_seconds, threads):
    torch.set_num_threads(threads)
    # fp32 GEMM ceiling at these threads: composite_ms / (flops / ceiling) bounds any speedup. Per layer from
    # bench.cpu_gemm_probe timed beside it (one call per sample); once at the start for reference.
    ceiling = measure_ceilings("cpu", torch.float32)["gemm_gflops"]
    print(f"t{threads} GEMM ceiling at the start {ceiling:.1f} GFLOP/s", flush=True)
    probe, probe_flops = cpu_gemm_probe()
    rows = []
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for batch in batches:
            for layer, count in distinct_mqa_layers():
                c, h, w = layer.in_shape
                x = torch.randn(batch, c, h, w, generator=gen).contiguous(memory_format=torch.channels_last)
                args = (x,) + tuple(layer.args())
                fused = lambda: torch.ops.mnv4.mqa(*args)  # noqa: E731
                comp = lambda: F.mqa(*args)  # noqa: E731
                err = rel_err(fused(), comp())
                t = interleaved({"fused": fused, "composite": comp, "ceiling": probe}, warmup=3, repeats=repeats,
                                max_seconds=max_seconds)
                tf, tc = t["fused"].median_ms, t["composite"].median_ms
                layer_ceiling = probe_flops / t["ceiling"].median_ms / 1e6
                rows.append(dict(layer=layer.label, threads=threads, model=layer.model, res=layer.res,
                                 name=layer.name, form=layer.form, count=count, batch=batch,
                                 in_shape=list(layer.in_shape), fused_ms=tf, composite_ms=tc, speedup=tc / tf, rel_err=err,
                                 fused=t["fused"].as_dict(), composite=t["composite"].as_dict(),
                                 gflops_fused=layer.flops(batch) / tf * 1e-6, gemm_ceiling_gflops=layer_ceiling,
                                 gemm_ceiling_gflops_at_start=ceiling,
                                 speedup_bound_at_ceiling=tc / (layer.flops(batch) / layer_ceiling * 1e-6)))
                print(f"t{threads} b{batch} {layer.label:58s} x{count}  fused {tf:8.3f} ms  composite {tc:8.3f} ms  "
                      f"x{tc / tf:5.2f}  err {err:.1e}", flush=True)
    geo = {}
    for batch in batches:
        geo[str(batch)] = geomean([r["speedup"] for r in rows if r["batch"] == batch])
        bound = geomean([r["speedup_bound_at_ceiling"] for r in rows if r["batch"] == batch])
        geo[f"{batch}_bound_at_ceiling"] = bound
        print(f"threads {threads} batch {batch}: geomean speedup fused/composite x{geo[str(batch)]:.2f} "
              f"(at the GEMM ceiling probed beside each layer: x{bound:.2f})", flush=True)
    return rows, geo


def bench_e2e(repeats, max_seconds):
    from mnv4_reference import randomized_model

    ref = randomized_model(E2E_MODEL).eval()
    x = torch.randn(1, 3, E2E_RES, E2E_RES, generator=torch.Generator().manual_seed(1))
    fused_model = mnv4_kernels.fuse(ref, backend="cpu")
    assert {k: b for _, k, b in fused_model.block_backends}["mqa"] == "cpu"
    x_cl = x.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def fused():
        return fused_model(x_cl)

    cands = {"fused_cpu": fused}
    notes = {}
    try:
        ort = baselines.onnxruntime_cpu(ref, x)
        cands["onnxruntime"] = lambda: ort(x)
    except baselines.BaselineUnavailable as e:
        notes["onnxruntime"] = str(e)
    eager = baselines.eager(ref)  # (moves the reference model to channels_last: after the ONNX export)
    cands["eager"] = lambda: eager(x)
    t = interleaved(cands, warmup=3, repeats=repeats, max_seconds=max_seconds, progress="e2e", inner=10, settle=4,
                    gap_s=0.05)  # as benches/e2e_cpu.py: each runtime's threads idle before the next
    res = {n: v.as_dict() for n, v in t.items()}
    line = "  ".join(f"{n} {v.median_ms:8.2f} ms" for n, v in t.items())
    print(f"e2e {E2E_MODEL}@{E2E_RES} b1: {line}", flush=True)
    ratios = {}
    if "onnxruntime" in t:
        ratios["fused_over_onnxruntime"] = t["fused_cpu"].median_ms / t["onnxruntime"].median_ms
    ratios["fused_over_eager"] = t["fused_cpu"].median_ms / t["eager"].median_ms
    print("  " + "  ".join(f"{k} {v:.2f}" for k, v in ratios.items()), flush=True)
    return dict(model=E2E_MODEL, res=E2E_RES, batch=1, timings=res, ratios=ratios, notes=notes)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--max-seconds", type=float, default=20.0, help="per layer / per end-to-end comparison")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-single-thread", action="store_true",
                    help="skip the extra per-layer pass at 1 thread (the work ratio, robust to shared cores)")
    ap.add_argument("--no-e2e", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows, geo = bench_layers(args.batches, args.repeats, args.max_seconds, args.threads)
    rows1, geo1 = ([], None) if args.no_single_thread else bench_layers(args.batches, args.repeats,
                                                                         args.max_seconds, 1)
    torch.set_num_threads(args.threads)
    e2e = None if args.no_e2e else bench_e2e(args.repeats, args.max_seconds * 3)
    payload = dict(
        benchmark="mqa_layers_cpu", env=report.env_info(), isa=torch.ops.mnv4_cpu.isa(),
        dtype="float32", memory_format="channels_last",
        layer_source="mnv4_kernels.layers.layer_table(model, res), kind == 'mqa', distinct (shape, form) per model",
        method="mnv4_kernels.timing.interleaved (rotating order, warm-up 3), median ms per call; "
               "speedup = composite / fused; e2e ratios = fused / baseline time",
        threads=args.threads, geomean_speedup=geo, layers=rows, geomean_speedup_1thread=geo1,
        layers_1thread=rows1, e2e=e2e)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"mqa-{report.machine_tag()}.json")
    report.write_json(out, payload)
    print("wrote", os.path.relpath(out), file=sys.stderr)
    return payload


if __name__ == "__main__":
    main()
