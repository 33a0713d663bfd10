"""Hot-cache rate of the NHWC GEMM tile, shipped against prototypes (benches/tile_shapes_cpu.cpp), on the GEMMs of
Conv-M@224's early blocks (where onnxruntime's per-node times are shortest against ours) and two later ones.

    .venv/bin/python benches/tile_shapes_cpu.py [--out benches/results/tile-shapes-cpu-<machine>.json]

One thread, operands hot (the same buffers every call), each GEMM's M (pixels per call) as the fused model passes it.
x86-64 with AVX-512F only. Builds the harness with $CXX (default g++) -O3 against this repo's csrc/.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from mnv4_kernels import report

HERE = os.path.dirname(os.path.abspath(__file__))
# (what, M, K, N, taps, lda, tap_offset): M, N and K as the fused Conv-M@224 passes them at batch 1 on 2 threads (read
# from a trace of every microkernel call; the 7x7 stage's N is half its 1024 mid channels: the mid-channel split). A conv (taps > 1) is conv.cpp's interior row call: one tap per kernel row, K = k * Cin
# floats of an input row, lda = stride * Cin, taps an input row (112 px x 32 ch) apart. A pointwise conv reads the
# start dw's scratch tile: lda = uib.cpp's tile_stride(Cin) (Cin rounded up to an odd number of 64-byte lines).
SHAPES = [
    ("0.0 FusedIB conv 3x3 s2 32->128", 49, 96, 128, 3, 64, 112 * 32),
    ("1.0 expand 48->192", 336, 48, 192, 1, 48, 0),
    ("1.1 expand 80->160", 420, 80, 160, 1, 80, 0),
    ("2.0 expand 80->480", 168, 80, 480, 1, 80, 0),
    ("2.1 expand 160->640", 98, 160, 640, 1, 176, 0),
    ("3.1 expand 256->1024 (a 512-channel slice)", 49, 256, 512, 1, 272, 0),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        exe = os.path.join(d, "tile_shapes_cpu")
        subprocess.run([os.environ.get("CXX", "g++"), "-O3", "-std=c++17", "-I", os.path.join(HERE, "..", "csrc"),
                        os.path.join(HERE, "tile_shapes_cpu.cpp"), "-o", exe], check=True)
        records = []
        for what, m, k, n, taps, lda, tap_offset in SHAPES:
            reps = max(20, int(4e8 / (m * n * k * taps)))  # ~10 ms a round
            argv = [exe] + [str(v) for v in (m, k, n, taps, reps, lda, tap_offset)]
            out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
            rows = [json.loads(line) for line in out.splitlines()]
            shipped = rows[0]["us"]
            for r in rows:
                r["speedup_vs_shipped"] = shipped / r["us"]
            records.append(dict(gemm=what, M=m, K=k, N=n, taps=taps, lda=lda, tap_offset=tap_offset, reps=reps,
                                variants=rows))
            print(f"{what:34s} M={m:4d} K={k:3d}x{taps} N={n:4d}: " +
                  ", ".join(f"{r['variant']} {r['gflops']:.1f} ({r['speedup_vs_shipped']:.3f}x)" for r in rows),
                  flush=True)
    out = args.out or os.path.join(HERE, "results", f"tile-shapes-{report.machine_tag()}.json")
    report.write_json(out, dict(env=report.env_info(), threads=1, method="best of 7 interleaved rounds",
                                records=records))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
