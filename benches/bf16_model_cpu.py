"""The bf16 fused model against the fp32 fused model on the CPU ops, interleaved in one process.

For each case (model, resolution, batch) both models are fused from the same randomized reference weights and
timed on the same input, A B A B ... (mnv4_kernels.timing.interleaved), with the thread count given. Reports
the medians, p10s, the ratio bf16 / fp32 of each, the bf16 table in use (lp_isa) and the logits' relative
error of each against the fp32 reference, beside that of the reference itself run in the reduced precision by
torch (rel_err_torch_<dtype>). JSON under benches/results/ with the machine and the command.
--dtype fp16 times the fp16 fused model instead: on the f16 kernels where the CPU has fp16 arithmetic (aarch64
with FP16: neon_fp16; x86 with AVX512-FP16: avx512fp16; torch.ops.mnv4_cpu.f16_isa(), recorded), else its chain
runs in fp32 and the ratio to fp32 is the cost of that, ~1.0. The randomized weights drive some models'
activations past fp16's range (65504): their fp16 logits are then inf, torch's as ours. The targets are bf16's.

    python benches/bf16_model_cpu.py [--threads 2] [--repeats 40] [--cases conv_m_224_b8,...] [--cpu-time]
                                     [--dtype bf16|fp16]

--cpu-time times the process's CPU time (time.process_time) instead of wall time: with --threads 1 it is what
the model costs whatever else the machine runs, and with --threads 2 and OMP_WAIT_POLICY=PASSIVE (waiting
threads sleep instead of spinning) the work of both threads. On a shared 2-core machine under load, 2-thread
wall times are dominated by the scheduler: each of a forward pass's parallel regions waits for a descheduled
thread for up to a time slice.
"""

import argparse
import copy
import time
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
sys.path.insert(0, os.path.join(HERE, ".."))

import mnv4_kernels  # noqa: E402
from mnv4_kernels import fuse, report, timing  # noqa: E402
from mnv4_reference.randomize import randomized_model  # noqa: E402
from mnv4_reference.testing import rel_err  # noqa: E402

# name -> (model, resolution, batch, target bf16 / fp32 median or None)
CASES = {
    "conv_m_224_b8": ("mobilenetv4_conv_medium", 224, 8, 0.6),
    "conv_s_224_b1": ("mobilenetv4_conv_small", 224, 1, 0.75),
    "conv_m_224_b1": ("mobilenetv4_conv_medium", 224, 1, None),
    "hybrid_m_256_b1": ("mobilenetv4_hybrid_medium", 256, 1, None),
}


def lp_isa():
    """The bf16 table the ops use here (MNV4_CPU_LP_ISA or the best the CPU has)."""
    return torch.ops.mnv4_cpu.lp_isa()


def run_case(key, repeats, clock, lp="bf16"):
    name, res, batch, target = CASES[key]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[lp]
    target = target if lp == "bf16" else None
    ref = randomized_model(name, seed=0)
    x = torch.randn(batch, 3, res, res, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = ref(x)
    f32 = fuse(ref, backend="cpu")
    b16 = fuse(ref, backend="cpu", dtype=dtype)
    xb = x.to(dtype)
    with torch.inference_mode():
        err32 = rel_err(f32(x), want)
        err16 = rel_err(b16(xb).float(), want)
        err_torch = rel_err(copy.deepcopy(ref).to(dtype)(xb).float(), want)  # Module.to is in place
        t = timing.interleaved({"fp32": lambda: f32(x), lp: lambda: b16(xb)}, warmup=3, repeats=repeats,
                               progress=key, clock=clock)
    row = {"case": key, "model": name, "resolution": res, "batch": batch,
           "fp32_median_ms": t["fp32"].median_ms, f"{lp}_median_ms": t[lp].median_ms,
           "fp32_p10_ms": t["fp32"].p10_ms, f"{lp}_p10_ms": t[lp].p10_ms,
           "ratio_median": t[lp].median_ms / t["fp32"].median_ms,
           "ratio_p10": t[lp].p10_ms / t["fp32"].p10_ms,
           "target_ratio": target, "repeats": t["fp32"].repeats,
           "rel_err_fp32": err32, f"rel_err_{lp}": err16, f"rel_err_torch_{lp}": err_torch}
    print(f"{key:18s} fp32 {row['fp32_median_ms']:8.2f} ms  {lp} {row[f'{lp}_median_ms']:8.2f} ms  "
          f"ratio {row['ratio_median']:.3f} (p10 {row['ratio_p10']:.3f})"
          + (f"  target <= {target}" if target else "") + f"  err {lp} {err16:.2e} (torch {err_torch:.2e})",
          flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--cpu-time", action="store_true", help="time process CPU time, not wall time")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"], help="the reduced-precision model timed")
    ap.add_argument("--out", default=None,
                    help="JSON path (default benches/results/<dtype>-model-<machine>.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    clock = time.process_time if args.cpu_time else time.perf_counter
    rows = [run_case(k, args.repeats, clock, args.dtype) for k in args.cases.split(",")]
    payload = {"env": report.env_info(), "uptime_before": uptime,
               "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
               "dtype": args.dtype, "lp_isa": lp_isa(), "f16_isa": torch.ops.mnv4_cpu.f16_isa(),
               "threads": args.threads,
               "clock": "process_time" if args.cpu_time else "perf_counter",
               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "rows": rows}
    out = args.out or os.path.join(HERE, "results", f"{args.dtype}-model-{report.machine_tag()}.json")
    print("wrote", report.write_json(out, payload))


if __name__ == "__main__":
    main()
