"""Where the end-to-end time goes, block by block: the fused model against onnxruntime's own per-node times.

For one model, resolution and batch (fp32, 2 threads): every block of the fused model (stem, blocks, head)
timed inside whole forward passes, twice in a row per pass: `first` is the block as the model runs it (its
weights cold after the other blocks), `repeat` the same call again at once (weights, scratch and output
memory warm); and onnxruntime's per-node kernel times from its profiler (nodes grouped by block name), with
its unprofiled median for scale (profiling slows it). Medians over the passes.
Writes benches/results/profile-<model>-<res>-b<batch>-<machine>.json.

    .venv/bin/python benches/profile_blocks_cpu.py [--model mobilenetv4_conv_medium] [--res 224] [--batch 1]
"""

import argparse
import collections
import json
import os
import re
import statistics
import tempfile
import time

import torch

import mnv4_kernels
from mnv4_kernels import baselines, report
from mnv4_reference import create_model, randomize_


def ours(model, x, passes):
    # the stem as forward_features calls it: the NCHW image in, channels_last out (the conversion included)
    mods = ([("stem", lambda h: model.stem(h, channels_last=True))] + list(zip(model.block_names, model.blocks))
            + [("head", model.head)])
    first = collections.defaultdict(list)
    repeat = collections.defaultdict(list)

    def one_pass():
        h = x
        for name, mod in mods:
            t0 = time.perf_counter()
            y = mod(h)
            t1 = time.perf_counter()
            mod(h)
            t2 = time.perf_counter()
            first[name].append((t1 - t0) * 1e3)
            repeat[name].append((t2 - t1) * 1e3)
            h = y

    with torch.inference_mode():
        for _ in range(3):
            one_pass()
        first.clear()
        repeat.clear()
        for _ in range(passes):
            one_pass()
    return [(name, statistics.median(first[name]), statistics.median(repeat[name])) for name, _ in mods]


def onnxruntime_nodes(ref, x, passes, threads):
    import onnxruntime as ort

    onnx = baselines.onnx_bytes(ref, x)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    plain = ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"])
    xi = x.numpy()
    for _ in range(5):
        plain.run(None, {"input": xi})
    ts = []
    for _ in range(passes):
        t0 = time.perf_counter()
        plain.run(None, {"input": xi})
        ts.append((time.perf_counter() - t0) * 1e3)
    with tempfile.TemporaryDirectory() as tmp:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "ort")
        prof = ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"])
        for _ in range(5 + passes):
            prof.run(None, {"input": xi})
        with open(prof.end_profiling()) as f:
            events = json.load(f)
    per_node = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"]].append(e["dur"] / 1e3)
    groups = collections.defaultdict(float)
    for name, durs in per_node.items():
        m = re.search(r"blocks\.\d+/(blocks\.\d+\.\d+)", name)
        groups[m.group(1) if m else "other (stem, head, reorders)"] += statistics.median(durs[5:] or durs)
    return statistics.median(ts), dict(groups)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenetv4_conv_medium")
    ap.add_argument("--res", type=int, default=224)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--passes", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x16 = torch.randn(max(16, args.batch), 3, args.res, args.res, generator=torch.Generator().manual_seed(0))
    ref = randomize_(create_model(args.model), calibration_input=x16)
    x = x16[:args.batch].contiguous()
    rows = ours(mnv4_kernels.fuse(ref), x, args.passes)
    ort_ms, ort_groups = onnxruntime_nodes(ref, x, args.passes, args.threads)
    print(f"{args.model}@{args.res} b{args.batch}: ours first-call sum {sum(r[1] for r in rows):.2f} ms, repeated "
          f"{sum(r[2] for r in rows):.2f} ms; onnxruntime {ort_ms:.2f} ms unprofiled, node sum "
          f"{sum(ort_groups.values()):.2f} ms profiled")
    print(f"{'block':30s} {'first':>8s} {'repeat':>8s} {'ort nodes':>10s}")
    for name, f, r in rows:
        o = ort_groups.get(name)
        print(f"{name:30s} {f:8.3f} {r:8.3f} {'' if o is None else f'{o:10.3f}'}")
    print(f"{'ort: other (stem, head, reorders)':30s} {'':8s} {'':8s} {ort_groups.get('other (stem, head, reorders)', 0):10.3f}")
    payload = dict(benchmark="profile_blocks_cpu", env=report.env_info(), isa=torch.ops.mnv4_cpu.isa(),
                   model=args.model, res=args.res, batch=args.batch, threads=args.threads,
                   method="per block inside whole forward passes, each block called twice per pass (first, "
                          "repeat), medians over passes; onnxruntime per-node kernel times from its "
                          "profiler grouped by block name, with its unprofiled median",
                   ours=[dict(block=n, first_ms=f, repeat_ms=r) for n, f, r in rows],
                   onnxruntime_ms=ort_ms, onnxruntime_node_ms=ort_groups)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"profile-{args.model}-{args.res}-b{args.batch}-{report.machine_tag()}.json")
    report.write_json(out, payload)
    print("wrote", out)


if __name__ == "__main__":
    main()
