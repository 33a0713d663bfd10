"""CPU benchmark: torch.ops.mnv4.uib on NCHW input against the same op through channels_last, per layer.

The CPU uib op computes on channels_last (pixel-major) tiles; an NCHW input is converted at entry and the
result converted back. This script measures what that costs against the alternative of a separate
channel-major kernel path: per UIB layer of MobileNetV4-Conv-M at 224x224 (mnv4_kernels.layers.layer_table),
at batch 1 and 8, fp32, two candidates interleaved (A B A B ...) in one process after warm-up:

    nchw:     torch.ops.mnv4.uib(x)                                  x NCHW-contiguous
    convert:  torch.ops.mnv4.uib(x.contiguous(channels_last)).contiguous()

With a build whose op converts at entry the two do the same work (ratio ~1); with a build that has its own
channel-major path, ratio = nchw / convert says what that path gains (< 1) or loses (> 1).
Writes benches/results/uib-nchw-<machine>.json with the command, versions, threads and ISA.

    .venv/bin/python benches/uib_nchw_cpu.py [--batches 1 8] [--reps 15] [--threads 2] [--clock wall|cpu]
                                             [--out PATH]
"""

import argparse
import os
import sys
import time

import torch

import mnv4_kernels  # noqa: F401  (registers torch.ops.mnv4.*)
from mnv4_kernels import report
from mnv4_kernels.layers import layer_table
from mnv4_kernels.timing import geomean, interleaved

MODEL = "mobilenetv4_conv_medium"
RES = 224


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: process CPU time (all threads), for a shared machine where other processes preempt "
                         "ours (use with --threads 1)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(args.threads)
    layers = [l for l in layer_table(MODEL, RES) if l.kind == "uib"]
    rows = []
    with torch.inference_mode():
        for batch in args.batches:
            for i, l in enumerate(layers):
                x = torch.randn(batch, *l.in_shape, generator=torch.Generator().manual_seed(i))
                a = l.args(cpu_layout=True)
                nchw = lambda: torch.ops.mnv4.uib(x, *a)  # noqa: E731
                convert = lambda: torch.ops.mnv4.uib(  # noqa: E731
                    x.contiguous(memory_format=torch.channels_last), *a).contiguous()
                torch.testing.assert_close(nchw(), convert(), rtol=1e-4, atol=1e-4)
                t0 = time.perf_counter()
                convert()
                inner = max(1, int(2e-3 / max(time.perf_counter() - t0, 1e-6)))  # samples of >= ~2 ms
                t = interleaved({"nchw": nchw, "convert": convert}, warmup=3, repeats=args.reps, inner=inner,
                            clock=clock)
                tn, tc = t["nchw"].median_ms, t["convert"].median_ms
                rows.append(dict(layer=l.name, form=l.form, batch=batch, in_shape=list(l.in_shape),
                                 nchw_ms=tn, convert_ms=tc, ratio=tn / tc))
                print(f"b{batch} {l.name:12s} {l.form:20s} nchw {tn:8.3f} ms  convert {tc:8.3f} ms  "
                      f"nchw/convert {tn / tc:5.2f}", flush=True)
    geo = {}
    for batch in args.batches:
        geo[str(batch)] = geomean([r["ratio"] for r in rows if r["batch"] == batch])
        print(f"batch {batch}: geomean nchw/convert {geo[str(batch)]:.3f} over {len(layers)} layers")
    result = dict(benchmark="uib_nchw_cpu", model=MODEL, resolution=RES, dtype="float32",
                  env=report.env_info(), isa=torch.ops.mnv4_cpu.isa(), threads=args.threads,
                  clock=args.clock, loadavg_end=os.getloadavg(),
                  method="interleaved A/B samples of >= 2 ms of back-to-back calls after warm-up, median per call; "
                         "ratio = nchw / convert",
                  geomean_ratio=geo, layers=rows)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"uib-nchw-{report.machine_tag()}.json")
    report.write_json(out, result)
    print("wrote", out)
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
