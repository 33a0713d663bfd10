"""bf16 (and fp16-arithmetic f16) tables against the fp32 kernels on MobileNetV4's GEMM and depthwise shapes, one
thread, with the peaks.

    .venv/bin/python benches/bf16_cpu.py [--rounds 15] [--out benches/results/bf16-kernels-<machine>.json]

Builds the torch-free kernels with CMake (build-native/, target mnv4_ukernels), benches/peak.c twice (the
standalone peak program, and its loops for the harness) and benches/bf16_kernels_cpu.cpp, then runs:
  1. peak 1: the register-only fp32 FMA, vdpbf16ps, vfmadd231ph and (where the CPU has AMX) tdpbf16ps peaks of
     one core;
  2. per GEMM shape (SHAPES) and per depthwise shape (DW_SHAPES), bf16_kernels_cpu: the fp32 kernels (AVX-512,
     AVX2), every usable bf16 table, the f16 tables with fp16 arithmetic and the peak loops interleaved round by
     round in one process (medians of thread CPU time), so the ratios hold under one load on these shared
     machines.
Records GFLOP/s, the ratio of each bf16 / f16 table to the fp32 kernel of its vector width (bf16_avx2 against
f32_avx2_fma, the others against f32_avx512) and to the peaks, and the CPU's ISA flags.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from mnv4_kernels import report

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# (what, M pixels, K = Cin, N = Cout): 1x1 expansions of MobileNetV4 at 224 (56x56, 28x28, 14x14, 7x7 planes)
SHAPES = [
    ("56x56 96->384", 3136, 96, 384),
    ("28x28 160->640", 784, 160, 640),
    ("14x14 256->1024", 196, 256, 1024),
    ("7x7 512->2048", 49, 512, 2048),
]
# (what, C, k, s, H = W): Conv-M@224's depthwise convs (UIB start and mid dws): stride-1 rows 56 to 7 wide,
# 3x3 and 5x5, and the stride-2 ones
DW_SHAPES = [
    ("56x56x48 k3 s1", 48, 3, 1, 56),
    ("28x28x80 k3 s1", 80, 3, 1, 28),
    ("14x14x640 k3 s1", 640, 3, 1, 14),
    ("14x14x640 k5 s1", 640, 5, 1, 14),
    ("7x7x256 k3 s1", 256, 3, 1, 7),
    ("7x7x1024 k5 s1", 1024, 5, 1, 7),
    ("56x56x192 k5 s2", 192, 5, 2, 56),
    ("28x28x480 k5 s2", 480, 5, 2, 28),
    ("14x14x960 k5 s2", 960, 5, 2, 14),
]


def cpu_isa_flags():
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return {k: k in flags for k in ("avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_fp16", "amx_tile",
                                    "amx_bf16")}


def measure(exe, what, shape, rounds):
    """One shape's variants (bf16_kernels_cpu's JSON lines), each bf16 table with its ratio to the fp32 kernel of
    its vector width and its fractions of the peaks."""
    out = subprocess.run([exe, *map(str, shape), str(rounds)], check=True, capture_output=True, text=True).stdout
    rows = {r["variant"]: r for r in (json.loads(line) for line in out.splitlines())}
    for name, r in rows.items():
        if name.startswith(("bf16_", "f16_")):
            # against the fp32 kernel of the same vector width (the one such a CPU runs fp32 on)
            base = "f32_avx2_fma" if name == "bf16_avx2" else "f32_avx512"
            r["ratio_vs_f32"] = r["gflops_median"] / rows[base]["gflops_median"]
            r["f32_baseline"] = base
            for p in ("fma32_peak", "vdpbf16ps_peak", "tdpbf16ps_peak", "vfmadd231ph_peak"):
                if p in rows:
                    r[f"fraction_of_{p}"] = r["gflops_median"] / rows[p]["gflops_median"]
    for name in ("f32_avx512", "f32_avx2_fma"):
        if name in rows and "fma32_peak" in rows:
            rows[name]["fraction_of_fma32_peak"] = rows[name]["gflops_median"] / rows["fma32_peak"]["gflops_median"]
    print(f"{what:18s} " + ", ".join(
        f"{r['variant']} {r['gflops_median']:.1f}" + (f" ({r['ratio_vs_f32']:.2f}x f32)" if "ratio_vs_f32" in r
                                                       else "") for r in rows.values()), flush=True)
    return list(rows.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    build = os.path.join(ROOT, "build-native")
    subprocess.run(["cmake", "-S", ROOT, "-B", build, "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", build, "-j", "2", "--target", "mnv4_ukernels"], check=True)
    with tempfile.TemporaryDirectory() as d:
        peak = os.path.join(d, "peak")
        subprocess.run(["gcc", "-O2", os.path.join(HERE, "peak.c"), "-o", peak, "-lpthread"], check=True)
        peak_o = os.path.join(d, "peak.o")
        subprocess.run(["gcc", "-O2", "-DPEAK_NO_MAIN", "-c", os.path.join(HERE, "peak.c"), "-o", peak_o],
                       check=True)
        exe = os.path.join(d, "bf16_kernels_cpu")
        subprocess.run([os.environ.get("CXX", "g++"), "-O2", "-std=c++17", "-I", os.path.join(ROOT, "csrc"),
                        os.path.join(HERE, "bf16_kernels_cpu.cpp"), peak_o, os.path.join(build, "libmnv4_ukernels.a"),
                        "-o", exe, "-lpthread"], check=True)
        peaks = subprocess.run([peak, "1"], check=True, capture_output=True, text=True).stdout
        print(peaks, end="", flush=True)
        standalone = {}
        for line in peaks.splitlines():
            parts = line.split()
            standalone[parts[0]] = float(parts[1]) if len(parts) == 3 else line
        records = [dict(gemm=what, M=m, K=k, N=n, variants=measure(exe, what, ["gemm", m, k, n], args.rounds))
                   for what, m, k, n in SHAPES]
        records += [dict(dw=what, C=c, k=k, s=s, H=h, W=h,
                         variants=measure(exe, what, ["dw", c, k, s, h, h], args.rounds))
                    for what, c, k, s, h in DW_SHAPES]
    out = args.out or os.path.join(HERE, "results", f"bf16-kernels-{report.machine_tag()}.json")
    report.write_json(out, dict(env=report.env_info(), isa_flags=cpu_isa_flags(), threads=1,
                                method=f"median of {args.rounds} interleaved rounds (~10 ms each, thread CPU time), "
                                       "operands hot, relu + bias epilogue; GEMM: B packed once; depthwise: pixels "
                                       "at the UIB scratch tiles' strides, fp32 taps",
                                standalone_peaks_1thread=standalone, records=records))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
