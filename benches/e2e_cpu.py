"""End-to-end CPU benchmark: the fused model against every runtime a user would pick instead, same weights.

Cases: Conv-S@224 batch 1, Conv-M@224 batch 1 and 8, Hybrid-M@256 batch 1 (--cases). Candidates (--candidates,
default mnv4_kernels.bench.default_e2e): ours fp32 and bf16, onnxruntime fp32, OpenVINO at f32, bf16 and its
default precision, ExecuTorch with the XNNPACK delegate (fp32; installed by `make bench`, skipped with the
reason where missing), PyTorch eager (channels_last) fp32 and bf16. Timed by mnv4_kernels.bench.e2e_case, the
runner `run` and `bench` use: every runtime on --threads threads in its own pool, round-robin blocks of calls,
medians; each candidate's relative error against the fp32 reference.

Each case also records how fast any implementation could be here (mnv4_kernels.bench.e2e_bounds): the model's
FLOPs at the fp32 FMA, vdpbf16ps and (where the CPU has AMX) tdpbf16ps register peaks of --threads cores
(benches/peak.c, per peak the higher of a measurement at the start and at the end) and at the GEMM ceiling
and the bf16 GEMM ceiling (mnv4_kernels.bench.measure_ceilings); and, where OpenVINO ran at bf16, the bf16 target
(0.8x its time) with the fractions of the vdpbf16ps peak and of the bf16 GEMM ceiling it requires and those
ours-bf16 achieves. See benches/README.md, Bounds.

    .venv/bin/python benches/e2e_cpu.py [--repeats 40] [--max-seconds 120] [--threads 2] [--cases conv_small@224:1,...]
Writes benches/results/e2e-<machine>.json.
"""

import argparse
import os
import re
import sys

import torch

from mnv4_kernels import bench, report
from mnv4_kernels.timing import POOL_BLOCKS

CASES = "conv_small@224:1,conv_medium@224:1,conv_medium@224:8,hybrid_medium@256:1"


def parse_cases(spec):
    """--cases: comma-separated name@res:batch (name without the mobilenetv4_ prefix)."""
    cases = []
    for item in spec.split(","):
        m = re.fullmatch(r"([a-z0-9_]+)@([0-9]+):([0-9]+)", item.strip())
        if not m:
            raise ValueError(f"--cases: expected name@res:batch (e.g. conv_small@224:1), got {item!r}")
        cases.append((f"mobilenetv4_{m[1]}", int(m[2]), int(m[3])))
    return cases


def _peaks_text(peaks):
    return ", ".join(f"{n} {peaks[n]:.1f}" if peaks[n] else f"{n} n/a ({peaks['skipped'].get(n, '?')})"
                     for n in bench.PEAKS) + " GFLOP/s"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=CASES)
    ap.add_argument("--candidates", default=None, help="comma-separated (mnv4_kernels.bench.parse_e2e)")
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--max-seconds", type=float, default=None, help="per case; stops after >= 3 rounds")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--inner", type=int, default=POOL_BLOCKS["inner"], help="timed calls per sample")
    ap.add_argument("--settle", type=int, default=POOL_BLOCKS["settle"], help="untimed calls before each sample")
    ap.add_argument("--gap", type=float, default=POOL_BLOCKS["gap_s"], help="seconds of sleep before each sample")
    ap.add_argument("--note", default=None, help="a line saved with the results (e.g. why repeats are few)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    try:
        cases = parse_cases(args.cases)
    except ValueError as e:
        ap.error(str(e))
    torch.set_num_threads(args.threads)
    names = bench.parse_e2e(args.candidates) if args.candidates else bench.default_e2e("cpu")
    peaks_start = bench.peak_gflops(args.threads)
    ceilings = bench.measure_ceilings("cpu", torch.float32)
    ceiling, ceiling16 = ceilings["gemm_gflops"], ceilings["bf16_gemm_gflops"]
    print(f"peaks {_peaks_text(peaks_start)}, GEMM ceiling {ceiling:.1f} GFLOP/s, bf16 {ceiling16:.1f} GFLOP/s "
          f"({args.threads} threads)", flush=True)
    records = []
    for name, res, batch in cases:
        print(f"{name}@{res} b{batch}", flush=True)
        ref, x = bench.e2e_reference(name, res, batch)
        rec = bench.e2e_case(ref, x, names, threads=args.threads, repeats=args.repeats, warmup=3,
                             max_seconds=args.max_seconds, progress=f"{name}@{res} b{batch}",
                             blocks=dict(inner=args.inner, settle=args.settle, gap_s=args.gap))
        rec.update(model=name, flops=bench.model_flops(ref, x))
        records.append(rec)
        print(bench.e2e_table(rec), flush=True)
        for n, why in rec["skipped"].items():
            print(f"  (no {n}: {why})", flush=True)
    peaks = bench.best_peaks(peaks_start, bench.peak_gflops(args.threads))
    print(f"\nbounds ({args.threads} threads; peaks {_peaks_text(peaks)}, GEMM ceiling {ceiling:.1f} GFLOP/s):")
    for rec in records:
        bench.e2e_bounds(rec, rec.pop("flops"), peaks, ceiling, ceiling16)
        print(f"  {rec['model']}@{rec['res']} b{rec['batch']}: {bench.e2e_bounds_line(rec)}")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"e2e-{report.machine_tag()}.json")
    report.write_json(out, dict(
        benchmark="e2e_cpu", env=report.env_info(), threads=args.threads, note=args.note,
        method="mnv4_kernels.bench.e2e_case: candidates interleaved in rotating order, each sample the mean of "
               "`inner` calls after `settle` untimed calls and a `gap_s` sleep, medians (record.timing); "
               "time_over_first = median / the first candidate's median; min_ms_at_* = model FLOPs (torch "
               "FlopCounterMode: convolutions and matmuls) at the fp32 FMA / vdpbf16ps / tdpbf16ps register peak "
               "(benches/peak.c, higher of start and end) / GEMM ceiling / bf16 GEMM ceiling (ceilings); "
               f"bf16_target: {bench.BF16_TARGET_OVER_OPENVINO}x openvino-bf16's median, target_needs_peak_fraction "
               "= min_ms_at_bf16_peak / target_ms, target_needs_bf16_gemm_ceiling_fraction = "
               "min_ms_at_bf16_gemm_ceiling / target_ms, ours_*_fraction the same over ours-bf16's median",
        fma_peak_gflops=peaks["fma32"], peaks_gflops=peaks, gemm_ceiling_gflops=ceiling, ceilings=ceilings,
        records=records))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
