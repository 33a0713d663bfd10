"""Where the end-to-end time goes, block by block: the fused model against another runtime's per-node times.

For one model, resolution, batch and dtype (--dtype fp32 or bf16; 2 threads): every block of the fused model
(stem, blocks, head) timed inside whole forward passes, twice in a row per pass: `first` is the block as the
model runs it (its weights cold after the other blocks), `repeat` the same call again at once (weights, scratch
and output memory warm); medians over the passes. Each block's FLOPs, split into dense (1x1 and k x k convs,
the classifier, the attention matmuls) and depthwise convs, counted on the reference model; with the register
peaks of the same threads (benches/peak.c), each block's time at the peak of its precision (dense FLOPs at the
fp32 FMA or vdpbf16ps peak): the per-block view of the end-to-end bound (benches/README.md, Bounds). fp32: onnxruntime's per-node kernel times from its profiler (nodes grouped by block name); bf16: OpenVINO's at
bf16 precision (PERF_COUNT, each node grouped by the block of the layers fused into it); each with its unprofiled median for
scale (profiling slows it).
Writes benches/results/profile-<model>-<res>-b<batch>[-bf16]-<machine>.json.

    .venv/bin/python benches/profile_blocks_cpu.py [--model mobilenetv4_conv_medium] [--res 224] [--batch 1]
        [--dtype fp32|bf16] [--no-other]
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
from mnv4_kernels import baselines, bench, report


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


def block_of(name):
    """The fused model's block name for a reference module name."""
    parts = name.split(".")
    if parts[0] == "blocks" and len(parts) >= 3:
        return ".".join(parts[:3])
    return "stem" if parts[0] in ("conv_stem", "bn1") else "head"


def block_flops(ref, x):
    """{block: {"dense": FLOPs, "depthwise": FLOPs}} of one forward pass of the reference (2 per multiply-add):
    convolutions with groups == in_channels > 1 are depthwise; other convolutions, the classifier and the MQA
    attention matmuls (q k^T and attn v) are dense."""
    from mnv4_reference.model import MultiQueryAttention2d

    out = collections.defaultdict(lambda: {"dense": 0, "depthwise": 0})
    hooks = []

    def conv(name):
        def hook(m, inp, y):
            macs = y.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
            kind = "depthwise" if m.groups > 1 and m.groups == m.in_channels else "dense"
            out[block_of(name)][kind] += 2 * macs
        return hook

    def linear(name):
        def hook(m, inp, y):
            out[block_of(name)]["dense"] += 2 * y.numel() * m.in_features
        return hook

    def attention(name):
        def hook(m, inp, y):
            b, _, h, w = inp[0].shape
            kv = -(-h // m.kv_stride) * -(-w // m.kv_stride)
            out[block_of(name)]["dense"] += 2 * b * m.num_heads * h * w * kv * (m.key_dim + m.value_dim)
        return hook

    for name, m in ref.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(conv(name)))
        elif isinstance(m, torch.nn.Linear):
            hooks.append(m.register_forward_hook(linear(name)))
        elif isinstance(m, MultiQueryAttention2d):
            hooks.append(m.register_forward_hook(attention(name)))
    try:
        with torch.inference_mode():
            ref(x)
    finally:
        for h in hooks:
            h.remove()
    return dict(out)


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
        groups[m.group(1) if m else OTHER] += statistics.median(durs[5:] or durs)
    return statistics.median(ts), dict(groups)


OTHER = "other (stem, head, reorders)"


def openvino_nodes(ref, x, passes, threads):
    """OpenVINO at bf16 precision (the CPU plugin, latency hint, `threads` threads, PERF_COUNT): its unprofiled
    median and each block's summed per-node real times (medians over passes). Each node of the compiled model
    lists the converted model's layers fused into it (rt_info originalLayersNames: a conv with its batch norm,
    `__module.blocks.2.1.<...>.bn/aten::batch_norm`, its activation, an add); a node goes to the block those
    name, the others (stem, head, reorders) to OTHER."""
    import openvino as ov

    converted = baselines.openvino_model(ref, x)
    base = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "bf16"}
    xi = x.contiguous().numpy()
    ts = []
    plain = ov.Core().compile_model(converted, "CPU", base).create_infer_request()
    for i in range(5 + passes):
        t0 = time.perf_counter()
        plain.infer([xi])
        ts.append((time.perf_counter() - t0) * 1e3)
    compiled = ov.Core().compile_model(converted, "CPU", dict(base, PERF_COUNT=True))
    fused = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        fused[op.get_friendly_name()] = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""

    def block(node):
        m = re.search(r"blocks\.\d+\.\d+", fused.get(node, "") + "," + node)
        return m.group(0) if m else OTHER

    prof = compiled.create_infer_request()
    groups = collections.defaultdict(list)
    for i in range(5 + passes):
        prof.infer([xi])
        if i >= 5:
            sums = collections.defaultdict(float)
            for p in prof.get_profiling_info():
                sums[block(p.node_name)] += p.real_time.total_seconds() * 1e3
            for k, v in sums.items():
                groups[k].append(v)
    return statistics.median(ts[5:]), {k: statistics.median(v) for k, v in groups.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenetv4_conv_medium")
    ap.add_argument("--res", type=int, default=224)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--passes", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-other", action="store_true", help="ours only (benches/ab_builds_cpu.py --blocks)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    ref, x = bench.e2e_reference(args.model, args.res, args.batch)
    flops = block_flops(ref, x)
    total = bench.model_flops(ref, x)
    # FLOPs torch counts that the split does not place (the anti-aliased models' blur filters); 0 elsewhere
    unplaced = total - sum(f["dense"] + f["depthwise"] for f in flops.values())
    peaks = bench.peak_gflops(args.threads)
    peak_name = "fma32" if dtype == torch.float32 else "vdpbf16ps"
    peak = peaks[peak_name]
    rows = ours(mnv4_kernels.fuse(ref, dtype=dtype), x.to(dtype), args.passes)
    # the other runtime's per-node times: onnxruntime for fp32, OpenVINO at bf16 for bf16
    other = "onnxruntime" if dtype == torch.float32 else "openvino-bf16"
    ort_ms, ort_groups = (None, {}) if args.no_other else (
        (onnxruntime_nodes if dtype == torch.float32 else openvino_nodes)(ref, x, args.passes, args.threads))
    first_sum = sum(r[1] for r in rows)
    dense = sum(f["dense"] for f in flops.values())
    print(f"{args.model}@{args.res} b{args.batch} {args.dtype}: ours first-call sum {first_sum:.2f} ms, repeated "
          f"{sum(r[2] for r in rows):.2f} ms" + (f"; {other} {ort_ms:.2f} ms unprofiled, node sum "
                                               f"{sum(ort_groups.values()):.2f} ms profiled" if ort_ms else ""))
    print(f"{total / 1e9:.3f} GFLOP: dense {dense / 1e9:.3f} ({100 * dense / total:.1f}%), depthwise "
          f"{(total - dense - unplaced) / 1e9:.3f}, unplaced {unplaced / 1e9:.3f}; {peak_name} peak {peak} GFLOP/s on {args.threads} threads"
          + (f": dense FLOPs alone take {dense / peak / 1e6:.2f} ms there" if peak else
             f" ({peaks['skipped'].get(peak_name)})"))
    print(f"{'block':30s} {'first':>8s} {'repeat':>8s} {'dense MF':>9s} {'dw MF':>7s} {'at peak':>8s} {'x peak':>7s}"
          f" {other + ' nodes':>18s}")
    records = []
    for name, f, r in rows:
        fl = flops.get(name, {"dense": 0, "depthwise": 0})
        at_peak = fl["dense"] / peak / 1e6 if peak else None
        rec = dict(block=name, first_ms=f, repeat_ms=r, dense_mflop=fl["dense"] / 1e6,
                   depthwise_mflop=fl["depthwise"] / 1e6, dense_ms_at_peak=at_peak,
                   first_over_dense_at_peak=f / at_peak if at_peak else None)
        records.append(rec)
        o = ort_groups.get(name)
        print(f"{name:30s} {f:8.3f} {r:8.3f} {rec['dense_mflop']:9.2f} {rec['depthwise_mflop']:7.2f} "
              + (f"{at_peak:8.3f} {f / at_peak:7.2f}" if at_peak else f"{'':8s} {'':7s}")
              + ("" if o is None else f" {o:18.3f}"))
    if ort_ms:
        print(f"{other + ': ' + OTHER:30s} {'':8s} {'':8s} {'':9s} {'':7s} {'':8s} {'':7s} "
              f"{ort_groups.get(OTHER, 0):18.3f}")
    payload = dict(benchmark="profile_blocks_cpu", env=report.env_info(), isa=torch.ops.mnv4_cpu.isa(),
                   lp_isa=torch.ops.mnv4_cpu.lp_isa(), model=args.model, res=args.res, batch=args.batch,
                   dtype=args.dtype, threads=args.threads,
                   method="per block inside whole forward passes, each block called twice per pass (first, "
                          "repeat), medians over passes; FLOPs per block from the reference (2 per multiply-add; "
                          "depthwise = convs with groups == in_channels > 1; dense = other convs, the classifier, "
                          "the attention matmuls); dense_ms_at_peak = dense FLOPs at the register peak of the "
                          "dtype (fma32 for fp32, vdpbf16ps for bf16; benches/peak.c, same threads); fp32: "
                          "onnxruntime per-node kernel times from its profiler grouped by block name, with its "
                          "unprofiled median; bf16: OpenVINO at bf16 precision, per-node real times (PERF_COUNT) "
                          "grouped by the block of the layers fused into each node, with its unprofiled median",
                   gflop=total / 1e9, dense_gflop=dense / 1e9, depthwise_gflop=(total - dense - unplaced) / 1e9,
                   unplaced_gflop=unplaced / 1e9,
                   peaks_gflops=peaks, peak=peak_name,
                   dense_ms_at_peak=dense / peak / 1e6 if peak else None, first_sum_ms=first_sum,
                   ours=records, other_runtime=None if args.no_other else other, other_ms=ort_ms,
                   other_node_ms=ort_groups or None)
    suffix = "" if args.dtype == "fp32" else f"-{args.dtype}"
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"profile-{args.model}-{args.res}-b{args.batch}{suffix}-{report.machine_tag()}.json")
    report.write_json(out, payload)
    print("wrote", out)


if __name__ == "__main__":
    main()
