"""CPU benchmark: torch.ops.mnv4.uib (fused) vs the composite mnv4_reference.functional.uib, per layer.

Every UIB layer of MobileNetV4-Conv-M at 224x224 input (mnv4_kernels.layers.layer_table: shapes and folded
weights from the randomised reference model, the table the tests and `bench` use), at batch 1 and 8,
channels_last fp32, torch.set_num_threads(2) (override: --threads). Candidates are interleaved (A B A B ...)
in one process after warm-up; each sample times back-to-back calls for >= 2 ms; the figure is the median.
Writes benches/results/<machine>.json with the command, versions, threads and ISA, and prints per-layer
ratios and their geomean.

    .venv/bin/python benches/uib_layers_cpu.py [--batches 1 8] [--reps 25] [--threads 2] [--clock wall|cpu]

The default (2 threads, wall clock) writes <machine>.json; other settings add -t<threads>-<clock>.
Also records the fp32 GEMM ceiling and per layer the speedup over the composite that running at it would
give: where it is below 2, the 2x target is out of reach for any implementation on this machine. The
ceiling is probed beside each layer (bench.cpu_gemm_probe, our NHWC GEMM 3136 x 512 x 512, one call per
sample interleaved with the layer's candidates), so a slow or fast phase of the VM moves both alike; the
best of torch.mm 2048^3 and that GEMM at the start (bench.measure_ceilings) is kept for reference.
The same bound at the fp32 FMA peak (benches/fma_peak.c: register-only FMA chains on the same threads, the
higher of a measurement at the start and one at the end, so a slow phase cannot lower it) is a hard one: no
fp32 implementation runs a layer faster than its FLOPs at that peak.
The load average at start and end is recorded: on a shared machine, read the figures with it.
"""

import argparse
import os
import re
import sys
import time

import torch

import mnv4_kernels  # noqa: F401  (registers torch.ops.mnv4.*)
from mnv4_kernels import report
from mnv4_kernels.bench import cpu_gemm_probe, measure_ceilings
from mnv4_kernels.layers import layer_table
from mnv4_kernels.timing import geomean, interleaved
from mnv4_reference import functional as F
from mnv4_reference.testing import rel_err

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_cpu import fma_peak_gflops  # noqa: E402

MODEL = "mobilenetv4_conv_medium"
RES = 224


def uib_layers(model_name=MODEL, res=RES):
    """The UIB rows of the shared layer table, in network order."""
    return [l for l in layer_table(model_name, res) if l.kind == "uib"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--reps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=str, default=None, help="regex on layer names (no JSON is written)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: perf_counter (the figure to report); cpu: process CPU time (all threads), less "
                         "sensitive to other processes on a shared machine")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    load_start = os.getloadavg()
    torch.set_num_threads(args.threads)
    layers = [l for l in uib_layers() if not args.layers or re.search(args.layers, l.name)]
    # The machine's fp32 GEMM ceiling at these threads: a layer running at it takes flops / ceiling, so
    # composite_ms / (flops / ceiling) bounds the speedup over the composite. Per layer from the probe timed
    # beside it; once at the start (the best of torch.mm 2048^3 and the probe) for reference.
    ceiling = measure_ceilings("cpu", torch.float32)["gemm_gflops"]
    peak_start = fma_peak_gflops(args.threads)
    print(f"GEMM ceiling at the start {ceiling:.1f} GFLOP/s, FMA peak {peak_start:.1f} ({args.threads} threads)")
    probe, probe_flops = cpu_gemm_probe()
    rows = []
    with torch.inference_mode():
        for batch in args.batches:
            for i, l in enumerate(layers):
                x = torch.randn(batch, *l.in_shape, generator=torch.Generator().manual_seed(i))
                x = x.contiguous(memory_format=torch.channels_last)
                a = l.args()  # the composite gets the weights contiguous, the op as the fused model stores them
                a_cpu = l.args(cpu_layout=True)
                fused = lambda: torch.ops.mnv4.uib(x, *a_cpu)  # noqa: E731
                comp = lambda: F.uib(x, *a)  # noqa: E731
                err = rel_err(fused(), comp())
                t0 = time.perf_counter()
                fused()
                inner = max(1, int(2e-3 / max(time.perf_counter() - t0, 1e-6)))
                t = interleaved({"fused": fused, "composite": comp, "ceiling": probe}, warmup=3, repeats=args.reps,
                                inner={"fused": inner, "composite": inner, "ceiling": 1}, clock=clock)
                tf, tc = t["fused"].median_ms, t["composite"].median_ms
                layer_ceiling = probe_flops / t["ceiling"].median_ms / 1e6
                c, h, w = l.in_shape
                gflop = l.flops(batch) / 1e9
                rows.append(dict(layer=l.name, form=l.form, batch=batch, in_shape=list(l.in_shape),
                                 out_shape=list(l.out_shape), mid=int(l.module.expand_w.shape[0]), fused_ms=tf,
                                 composite_ms=tc, speedup=tc / tf, rel_err=err, inner=inner,
                                 fused_gflops=gflop / tf * 1e3, composite_gflops=gflop / tc * 1e3,
                                 gemm_ceiling_gflops=layer_ceiling,
                                 speedup_bound_at_ceiling=tc / (gflop / layer_ceiling * 1e3), gflop=gflop))
                print(f"b{batch} {l.name:12s} {l.form:20s} {c:4d}->{rows[-1]['mid']:5d}->{l.out_shape[0]:4d} "
                      f"{h:3d}x{w:<3d} fused {tf:8.3f} ms  composite {tc:8.3f} ms  x{tc / tf:5.2f}  "
                      f"(ceiling {layer_ceiling:5.1f} GFLOP/s: bound x{rows[-1]['speedup_bound_at_ceiling']:5.2f})",
                      flush=True)
    # the FMA-peak bound with the higher of the two peak measurements (a bound must not be lowered by a slow
    # phase of the VM)
    peak = max(peak_start, fma_peak_gflops(args.threads))
    for x in rows:
        x["speedup_bound_at_fma_peak"] = x["composite_ms"] / (x["gflop"] / peak * 1e3)
    geo, geo_bound, geo_peak = {}, {}, {}
    for batch in args.batches:
        r = [x["speedup"] for x in rows if x["batch"] == batch]
        geo[str(batch)] = geomean(r)
        bound = geomean([x["speedup_bound_at_ceiling"] for x in rows if x["batch"] == batch])
        geo_bound[str(batch)] = bound
        geo_peak[str(batch)] = geomean([x["speedup_bound_at_fma_peak"] for x in rows if x["batch"] == batch])
        print(f"batch {batch}: geomean speedup fused/composite x{geo[str(batch)]:.2f} over {len(r)} layers "
              f"(at the GEMM ceiling probed beside each layer: x{bound:.2f}; at the FMA peak: "
              f"x{geo_peak[str(batch)]:.2f})")
    result = dict(
        benchmark="uib_layers_cpu", model=MODEL, resolution=RES, dtype="float32", memory_format="channels_last",
        env=report.env_info(), isa=torch.ops.mnv4_cpu.isa(), clock=args.clock, loadavg_start=load_start,
        loadavg_end=os.getloadavg(), layer_source=f"mnv4_kernels.layers.layer_table({MODEL!r}, {RES})",
        method="interleaved A/B samples of >= 2 ms of back-to-back calls after warm-up, median per call; "
               "speedup = composite / fused; speedup_bound_at_ceiling = composite / (flops / GEMM ceiling), the "
               "ceiling per layer from bench.cpu_gemm_probe interleaved with that layer's candidates; "
               "speedup_bound_at_fma_peak = composite / (flops / fp32 FMA peak, benches/fma_peak.c, the higher of "
               "its measurements at the start and at the end)",
        gemm_ceiling_gflops_at_start=ceiling, fma_peak_gflops=peak, geomean_speedup=geo,
        geomean_speedup_bound_at_ceiling=geo_bound, geomean_speedup_bound_at_fma_peak=geo_peak, layers=rows)
    suffix = "" if (args.threads, args.clock) == (2, "wall") else f"-t{args.threads}-{args.clock}"
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"uib-{report.machine_tag()}{suffix}.json")
    if not args.layers:
        report.write_json(out, result)
        print("wrote", out)
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
