"""CPU benchmark: torch.ops.mnv4.uib (fused) vs the composite mnv4_reference.functional.uib, per layer.

Every UIB layer of MobileNetV4-Conv-M at 224x224 input, shapes taken from the reference model
(mnv4_reference.create_model("mobilenetv4_conv_medium")) by a forward hook on each UIB module, at batch 1
and 8; both candidates get the same random folded weights (mnv4_reference.testing.random_uib_args),
channels_last fp32, torch.set_num_threads(2) (override: --threads). Candidates are interleaved (A B A B ...)
in one process after warm-up; each sample times `inner` back-to-back calls; the figure is the median.
Writes benches/results/cpu-<machine>.json (machine = platform + CPU model short name) with the command,
versions, threads and ISA, and prints per-layer ratios and their geomean.

    .venv/bin/python benches/uib_layers_cpu.py [--batches 1 8] [--reps 25] [--threads 2] [--clock wall|cpu]

The default (2 threads, wall clock) writes cpu-<machine>.json; other settings add -t<threads>-<clock>.
The load average at start and end is recorded: on a shared machine, read the figures with it.
"""

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import time

import torch

import mnv4_kernels  # noqa: F401  (registers torch.ops.mnv4.*)
from mnv4_reference import create_model
from mnv4_reference import functional as F
from mnv4_reference.model import UniversalInvertedResidual
from mnv4_reference.testing import random_uib_args

MODEL = "mobilenetv4_conv_medium"
RES = 224


def uib_layers(model_name=MODEL, res=RES):
    """[(name, dict(cin, mid, cout, h, w, k_start, k_mid, stride, residual, activation))] in model order."""
    model = create_model(model_name).eval()
    found = []

    def hook(name):
        def fn(mod, inputs):
            _, c, h, w = inputs[0].shape
            found.append((name, dict(cin=c, mid=mod.mid_chs, cout=mod.out_chs, h=h, w=w, k_start=mod.start_kernel,
                                     k_mid=mod.mid_kernel, stride=mod.stride, residual=mod.has_skip,
                                     activation=mod.act or "none")))
        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, UniversalInvertedResidual)]
    with torch.no_grad():
        model(torch.randn(1, 3, res, res))
    for h in handles:
        h.remove()
    return found


def form(c):
    return {(True, True): "ExtraDW", (False, True): "IB", (True, False): "ConvNext", (False, False): "FFN"}[
        (bool(c["k_start"]), bool(c["k_mid"]))]


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_tag():
    short = re.sub(r"[^a-z0-9]+", "-", cpu_name().lower()).strip("-")
    short = re.sub(r"-(\d+-core-processor|processor|cpu)$", "", short)
    return f"{platform.system().lower()}-{platform.machine()}-{short}"


def bench_pair(fa, fb, reps, min_sample_s=2e-3, clock=time.perf_counter):
    """Interleaved medians (seconds per call) of fa and fb after warm-up."""
    for _ in range(3):
        fa(), fb()
    t0 = time.perf_counter()
    fa()
    one = max(time.perf_counter() - t0, 1e-6)
    inner = max(1, int(min_sample_s / one))
    ta, tb = [], []
    for _ in range(reps):
        for f, acc in ((fa, ta), (fb, tb)):
            t0 = clock()
            for _ in range(inner):
                f()
            acc.append((clock() - t0) / inner)
    return statistics.median(ta), statistics.median(tb), inner


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--reps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=str, default=None, help="regex on layer names")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: perf_counter (the figure to report); cpu: process CPU time (all threads), less "
                         "sensitive to other processes on a shared machine")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    load_start = os.getloadavg()
    torch.set_num_threads(args.threads)
    layers = uib_layers()
    if args.layers:
        layers = [(n, c) for n, c in layers if re.search(args.layers, n)]
    rows = []
    with torch.inference_mode():
        for batch in args.batches:
            for i, (name, c) in enumerate(layers):
                a = random_uib_args(batch, c["cin"], c["h"], c["w"], c["mid"], c["cout"], k_start=c["k_start"],
                                    k_mid=c["k_mid"], stride=c["stride"], residual=c["residual"],
                                    activation=c["activation"], channels_last=True, seed=i)
                fused = lambda: torch.ops.mnv4.uib(*a)  # noqa: E731
                comp = lambda: F.uib(*a)  # noqa: E731
                err = (fused() - comp()).norm().item() / comp().norm().item()
                tf, tc, inner = bench_pair(fused, comp, args.reps, clock=clock)
                rows.append(dict(layer=name, form=form(c), batch=batch, **c, fused_ms=tf * 1e3, composite_ms=tc * 1e3,
                                 speedup=tc / tf, rel_err=err, inner=inner))
                print(f"b{batch} {name:12s} {form(c):8s} {c['cin']:4d}->{c['mid']:5d}->{c['cout']:4d} "
                      f"{c['h']:3d}x{c['w']:<3d} ks{c['k_start']} km{c['k_mid']} s{c['stride']}  "
                      f"fused {tf * 1e3:8.3f} ms  composite {tc * 1e3:8.3f} ms  x{tc / tf:5.2f}", flush=True)
    geo = {}
    for batch in args.batches:
        r = [x["speedup"] for x in rows if x["batch"] == batch]
        geo[str(batch)] = math.exp(sum(math.log(v) for v in r) / len(r))
        print(f"batch {batch}: geomean speedup fused/composite x{geo[str(batch)]:.2f} over {len(r)} layers")
    result = dict(
        benchmark="uib_layers_cpu", model=MODEL, resolution=RES, dtype="float32", memory_format="channels_last",
        command=" ".join([os.path.relpath(sys.executable), *sys.argv]), machine=machine_tag(), cpu=cpu_name(),
        threads=torch.get_num_threads(), isa=torch.ops.mnv4_cpu.isa(), clock=args.clock,
        loadavg_start=load_start, loadavg_end=os.getloadavg(), logical_cpus=os.cpu_count(), torch=torch.__version__,
        python=platform.python_version(), time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        layer_source=f"forward pre-hooks on UniversalInvertedResidual modules of create_model({MODEL!r}) at {RES}",
        method="interleaved A/B samples after warm-up, median seconds per call; speedup = composite / fused",
        geomean_speedup=geo, layers=rows)
    suffix = "" if (args.threads, args.clock) == (2, "wall") else f"-t{args.threads}-{args.clock}"
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"cpu-{machine_tag()}{suffix}.json")
    if not args.layers:
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
        print("wrote", out)
    return result


if __name__ == "__main__":
    main()
