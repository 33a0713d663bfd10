"""Hot-cache rate of the NHWC GEMM tile, shipped against prototypes (benches/tile_shapes_cpu.cpp), on the GEMMs of
Conv-M@224's early blocks (the ones onnxruntime runs faster, issue 3) and two later ones for contrast.

    .venv/bin/python benches/tile_shapes_cpu.py [--out benches/results/tile-shapes-cpu-<machine>.json]

One thread, operands hot (the same buffers every call), M = rows per call as a UIB step or a conv band passes them.
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
# (what, M, K, N, taps): taps > 1 is a k x k conv as conv.cpp runs it (one tap per kernel row, K = k * Cin)
SHAPES = [
    ("0.0 FusedIB conv 3x3 s2 32->128", 448, 96, 128, 3),
    ("1.0 expand 48->192", 168, 48, 192, 1),
    ("1.1 expand 80->160", 112, 80, 160, 1),
    ("2.0 expand 80->480", 112, 80, 480, 1),
    ("2.1 expand 160->640", 56, 160, 640, 1),
    ("3.1 expand 256->1024", 49, 256, 1024, 1),
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
        for what, m, k, n, taps in SHAPES:
            reps = max(20, int(4e8 / (m * n * k * taps)))  # ~10 ms a round
            out = subprocess.run([exe, str(m), str(k), str(n), str(taps), str(reps)], check=True,
                                 capture_output=True, text=True).stdout
            rows = [json.loads(line) for line in out.splitlines()]
            shipped = rows[0]["us"]
            for r in rows:
                r["speedup_vs_shipped"] = shipped / r["us"]
            records.append(dict(gemm=what, M=m, K=k, N=n, taps=taps, reps=reps, variants=rows))
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
