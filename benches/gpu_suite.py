"""GPU benchmark + sanitizer workload for the CUDA kernels (torch.ops.mnv4.uib / mqa). Run through
benches/gpu_run.sh (build, tests, compute-sanitizer, this benchmark) or directly:

    python benches/gpu_suite.py bench [--models conv_small,conv_medium,...] [--batches 256,1] [--dtype float16]
                                      [--compile] [--triton] [--max-seconds 2] [--out DIR]
    python benches/gpu_suite.py workload [--tiny]     # what compute-sanitizer runs: both ops, a few shapes

bench writes benches/results/<gpu-name>.json (and DIR/<gpu-name>.json when --out or $OUT is set) with the
device, versions, the command, the card's two ceilings measured in the same run (device-to-device copy
bandwidth, fp16 torch.matmul 8192^3), and one record per (layer, batch, impl):
    {kind: "layer", model, res, batch, dtype, impl, layer, form, in_shape, count, median_ms, p10_ms, p90_ms,
     img_per_s, gbps, tflops, frac_copy_bw, frac_gemm, speedup_vs_eager, rel_err_vs_fp32_eager, timing}
impl: "ours-cuda" (the fused op), "eager" (the composite op chain mnv4_reference.functional on channels_last
inputs, cuDNN with benchmark mode), "compile" (torch.compile of the composite, --compile), "ours-triton"
(--triton, when the Triton ops are importable).
Layer shapes come from the reference models (mnv4_kernels.layers.layer_table: timm module names, folded
weights via mnv4_kernels.fuse); repeated identical layers are timed once and carry a `count`.
Timing: CUDA events around each call, median over samples after warm-up, candidates interleaved; at batch
>= 32 every call gets a different input buffer from a ring larger than 2x the L2 cache (cold inputs); at
batch 1 each sample is a CUDA graph of 20 back-to-back calls (launch overhead out), reported per call.
"""

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"conv_small": ("mobilenetv4_conv_small", 224), "conv_medium": ("mobilenetv4_conv_medium", 256),
          "conv_large": ("mobilenetv4_conv_large", 384), "hybrid_medium": ("mobilenetv4_hybrid_medium", 256),
          "hybrid_large": ("mobilenetv4_hybrid_large", 384)}
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
GRAPH_CALLS = 20


def log(msg):
    print(msg, flush=True)


def versions():
    v = dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
             cudnn=torch.backends.cudnn.version())
    try:
        import triton

        v["triton"] = triton.__version__
    except Exception as e:  # noqa: BLE001
        v["triton"] = f"unavailable ({type(e).__name__})"
    try:
        v["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                     capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:  # noqa: BLE001
        v["driver"] = "unknown"
    try:
        v["git"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                                  timeout=30).stdout.strip()
    except Exception:  # noqa: BLE001
        v["git"] = "unknown"
    return v


def device_info():
    p = torch.cuda.get_device_properties(0)
    return dict(name=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                memory_gib=round(p.total_memory / 2**30, 1), l2_bytes=getattr(p, "L2_cache_size", 50 * 2**20))


def slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# ------------------------------------------------------------------------------------------------ timing
def time_events(fns, inputs, warmup=3, repeats=30, max_seconds=2.0):
    """{name: [ms per call]}: CUDA events around single calls, candidates interleaved, inputs rotated."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            for x in inputs[:2]:
                fns[n](x)
    torch.cuda.synchronize()
    samples = {n: [] for n in names}
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(len(names))]
    t0, r, k = time.perf_counter(), 0, 0
    while r < repeats and (r < 5 or time.perf_counter() - t0 < max_seconds):
        order = names[r % len(names):] + names[:r % len(names)]
        for i, n in enumerate(order):
            x = inputs[k % len(inputs)]
            k += 1
            ev[i][0].record()
            fns[n](x)
            ev[i][1].record()
        torch.cuda.synchronize()
        for i, n in enumerate(order):
            samples[n].append(ev[i][0].elapsed_time(ev[i][1]))
        r += 1
    return samples


def time_graphs(fns, x, repeats=30, max_seconds=2.0):
    """{name: [ms per call]}: each candidate captured as a CUDA graph of GRAPH_CALLS calls (same input)."""
    graphs = {}
    for n, fn in fns.items():
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                fn(x)
        torch.cuda.current_stream().wait_stream(s)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(GRAPH_CALLS):
                fn(x)
        graphs[n] = g
    for g in graphs.values():
        g.replay()
    torch.cuda.synchronize()
    names = list(graphs)
    samples = {n: [] for n in names}
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t0, r = time.perf_counter(), 0
    while r < repeats and (r < 5 or time.perf_counter() - t0 < max_seconds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            start.record()
            graphs[n].replay()
            end.record()
            end.synchronize()
            samples[n].append(start.elapsed_time(end) / GRAPH_CALLS)
        r += 1
    return samples


def ceilings(dtype):
    """Copy bandwidth (bytes read + written per second) and dense GEMM rate, measured now on this card."""
    n = 2**30 // 4  # 1 GiB fp32, far larger than any L2
    src = torch.randn(n, device="cuda")
    dst = torch.empty_like(src)
    copy = time_events({"copy": lambda _: dst.copy_(src)}, [None], warmup=3, repeats=20)["copy"]
    del src, dst
    size = 8192
    gdt = torch.float16 if dtype == torch.float32 else dtype
    a = torch.randn(size, size, device="cuda", dtype=gdt)
    b = torch.randn(size, size, device="cuda", dtype=gdt)
    gemm = time_events({"gemm": lambda _: torch.matmul(a, b)}, [None], warmup=3, repeats=20)["gemm"]
    del a, b
    torch.cuda.empty_cache()
    copy_ms, gemm_ms = statistics.median(copy), statistics.median(gemm)
    return dict(copy_gbps=2 * n * 4 / copy_ms / 1e6, copy_bytes=2 * n * 4, copy_ms=copy_ms,
                gemm_tflops=2 * size**3 / gemm_ms / 1e9, gemm_size=size, gemm_dtype=str(gdt).replace("torch.", ""),
                gemm_ms=gemm_ms)


# ------------------------------------------------------------------------------------------------ layers
def layer_list(model, res):
    """[(Layer, count)] for the model: real shapes and folded weights from the reference model."""
    from mnv4_kernels.layers import layer_table, unique_layers

    return unique_layers(layer_table(model, res))


def impls_for(kind, use_compile, use_triton):
    from mnv4_reference import functional as F

    composite = getattr(F, kind)
    impls = {"ours-cuda": getattr(torch.ops.mnv4, kind), "eager": composite}
    if use_compile:
        impls["compile"] = torch.compile(composite, dynamic=False)
    if use_triton:
        try:
            import mnv4_kernels.triton  # noqa: F401  registers torch.ops.mnv4.*_triton

            impls["ours-triton"] = getattr(torch.ops.mnv4, f"{kind}_triton")
        except Exception as e:  # noqa: BLE001
            log(f"  (triton ops unavailable: {type(e).__name__}: {e})")
    return impls


def bench_layers(models, batches, dtype, ceil, l2_bytes, use_compile, use_triton, max_seconds):
    from mnv4_reference.testing import rel_err

    records = []
    itemsize = torch.finfo(dtype).bits // 8
    for model, res in models:
        layers = layer_list(model, res)
        log(f"{model}@{res}: {len(layers)} distinct UIB/MQA layers")
        for layer, count in layers:
            impls = impls_for(layer.kind, use_compile, use_triton)
            wargs = layer.args(dtype=dtype, device="cuda")
            for batch in batches:
                shape = (batch, *layer.in_shape)
                one = torch.randn(shape, device="cuda").to(dtype).contiguous(memory_format=torch.channels_last)
                nbytes_in = one.numel() * itemsize
                ring = 1 if batch < 32 else max(2, -(-2 * l2_bytes // nbytes_in) + 1)
                inputs = [one] + [torch.randn_like(one).contiguous(memory_format=torch.channels_last)
                                  for _ in range(ring - 1)]
                with torch.inference_mode():
                    want = impls["eager"](one.float(), *layer.args(dtype=torch.float32, device="cuda"))
                    errs = {n: rel_err(op(one, *wargs), want) for n, op in impls.items()}
                    fns = {n: (lambda x, op=op: op(x, *wargs)) for n, op in impls.items()}
                    timing = "events"
                    if batch < 32:
                        try:
                            samples = time_graphs(fns, one, max_seconds=max_seconds)
                            timing = f"cuda-graph x{GRAPH_CALLS}"
                        except Exception as e:  # noqa: BLE001
                            log(f"  (graph capture failed: {type(e).__name__}: {e}; timing with events)")
                            torch.cuda.synchronize()
                            samples = time_events(fns, inputs, max_seconds=max_seconds)
                    else:
                        samples = time_events(fns, inputs, max_seconds=max_seconds)
                del inputs, one
                flops, nbytes = layer.flops(batch), layer.bytes(batch, itemsize)
                base = statistics.median(samples["eager"])
                parts = []
                for n, s in samples.items():
                    ms = statistics.median(s)
                    q = sorted(s)
                    rec = dict(kind="layer", model=model, res=res, batch=batch, dtype=str(dtype).replace("torch.", ""),
                               impl=n, layer=layer.name, block=layer.kind, form=layer.form,
                               in_shape=list(layer.in_shape), out_shape=list(layer.out_shape), count=count,
                               median_ms=ms, p10_ms=q[len(q) // 10], p90_ms=q[(9 * len(q)) // 10], samples=len(s),
                               img_per_s=1e3 * batch / ms, gbps=nbytes / ms / 1e6, tflops=flops / ms / 1e9,
                               speedup_vs_eager=base / ms, rel_err_vs_fp32_eager=errs[n], timing=timing,
                               input_ring=ring)
                    rec["frac_copy_bw"] = rec["gbps"] / ceil["copy_gbps"]
                    rec["frac_gemm"] = rec["tflops"] / ceil["gemm_tflops"]
                    records.append(rec)
                    parts.append(f"{n} {ms:.4f} ms ({base / ms:.2f}x, {rec['gbps']:.0f} GB/s, "
                                 f"{rec['tflops']:.1f} TF/s, err {errs[n]:.1e})")
                log(f"  {layer.label} b{batch} x{count}: " + "; ".join(parts))
    return records


def summarize(records):
    out = {}
    for r in records:
        if r["kind"] == "layer" and r["impl"] != "eager":
            out.setdefault((r["model"], r["batch"], r["block"], r["impl"]), []).append(r)
    rows = []
    for (m, b, k, i), rs in sorted(out.items()):
        sp = [r["speedup_vs_eager"] for r in rs]
        geo = float(torch.tensor(sp).log().mean().exp())
        # time-weighted over the whole network (count = how often the layer occurs)
        ours = sum(r["median_ms"] * r["count"] for r in rs)
        eager = sum(r["median_ms"] * r["speedup_vs_eager"] * r["count"] for r in rs)
        rows.append(dict(model=m, batch=b, block=k, impl=i, layers=len(rs), geomean_speedup=geo,
                         network_sum_speedup=eager / ours))
    return rows


def cmd_bench(args):
    assert torch.cuda.is_available(), "bench needs a CUDA device"
    import mnv4_kernels

    b = mnv4_kernels.backends()["cuda"]
    assert b.available, f"the CUDA kernels are not available: {b.reason}"
    torch.backends.cudnn.benchmark = True
    dtype = DTYPES[args.dtype]
    dev = device_info()
    ver = versions()
    log(f"device {dev}\nversions {ver}")
    ceil = ceilings(dtype)
    log(f"ceilings: copy {ceil['copy_gbps']:.0f} GB/s, {ceil['gemm_dtype']} GEMM {ceil['gemm_tflops']:.0f} TFLOP/s")
    models = [MODELS[m.strip()] for m in args.models.split(",") if m.strip()]
    batches = [int(b) for b in args.batches.split(",")]
    t0 = time.time()
    records = bench_layers(models, batches, dtype, ceil, dev["l2_bytes"], args.compile, args.triton,
                           args.max_seconds)
    # TODO(e2e): add {kind: "e2e"} rows (whole fused network vs eager / torch.compile of the reference,
    # batch 1 with CUDA graphs and batch 256) - mnv4_kernels.bench.bench_e2e is a starting point.
    result = dict(device=dev, versions=ver, command=" ".join(shlex.quote(a) for a in sys.argv),
                  date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), seconds=round(time.time() - t0, 1),
                  dtype=args.dtype, ceilings=ceil, summary=summarize(records), records=records)
    outs = [os.path.join(ROOT, "benches", "results")]
    if args.out or os.environ.get("OUT"):
        outs.append(args.out or os.environ["OUT"])
    for d in outs:
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, f"{slug(dev['name'])}.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        log(f"wrote {path}")
    for row in result["summary"]:
        log(f"  {row['model']} b{row['batch']} {row['block']} {row['impl']}: geomean {row['geomean_speedup']:.2f}x "
            f"over {row['layers']} layers, network-weighted {row['network_sum_speedup']:.2f}x")


# ------------------------------------------------------------------------------------------------ sanitizer
def cmd_workload(args):
    """Both ops on a few representative shapes, every dtype and layout, checked against the composite.
    Exits non-zero on a mismatch; compute-sanitizer (memcheck / racecheck) wraps this."""
    import mnv4_kernels  # noqa: F401
    from mnv4_reference import functional as F
    from mnv4_reference.testing import random_mqa_args, random_uib_args, rel_err

    uib_cases = [dict(n=2, cin=9, h=7, w=5, mid=27, cout=7, k_start=3, k_mid=5, stride=2, activation="gelu"),
                 dict(n=1, cin=16, h=9, w=6, mid=40, cout=16, k_start=0, k_mid=3, stride=1, residual=True),
                 dict(n=1, cin=8, h=5, w=5, mid=16, cout=5, k_start=5, k_mid=0, stride=2, activation="none"),
                 dict(n=2, cin=12, h=3, w=4, mid=24, cout=12, k_start=0, k_mid=0, stride=1)]
    mqa_cases = [dict(n=2, c=24, h=7, w=7, num_heads=4, key_dim=16, kv_stride=2),
                 dict(n=1, c=33, h=5, w=3, num_heads=2, key_dim=8, kv_stride=1),
                 dict(n=1, c=16, h=6, w=5, num_heads=2, key_dim=8, value_dim=12, cout=10, residual=False,
                      kv_stride=2)]
    if not args.tiny:
        uib_cases.append(dict(n=1, cin=192, h=12, w=12, mid=768, cout=192, k_start=5, k_mid=3, stride=1))
        mqa_cases.append(dict(n=1, c=192, h=12, w=12, num_heads=8, key_dim=48, kv_stride=2))
    dtypes = [torch.float32] if args.tiny else [torch.float32, torch.float16, torch.bfloat16]
    bad = 0
    for kind, cases, make, comp in (("uib", uib_cases, random_uib_args, F.uib), ("mqa", mqa_cases, random_mqa_args, F.mqa)):
        for case in cases:
            for dtype in dtypes:
                for cl in (False, True):
                    args = make(**case, dtype=dtype, device="cuda", channels_last=cl)
                    out = getattr(torch.ops.mnv4, kind)(*args)
                    torch.cuda.synchronize()
                    ref = comp(*[a.double().cpu() if isinstance(a, torch.Tensor) else a for a in args])
                    err = rel_err(out, ref)
                    tol = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 1e-1}[dtype]
                    status = "ok" if err <= tol else "MISMATCH"
                    bad += status != "ok"
                    print(f"{kind} {case} {dtype} channels_last={cl}: rel_err {err:.2e} {status}", flush=True)
    print(f"workload done: {bad} mismatches", flush=True)
    sys.exit(1 if bad else 0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--models", default=",".join(MODELS))
    b.add_argument("--batches", default="256,1")
    b.add_argument("--dtype", default="float16", choices=list(DTYPES))
    b.add_argument("--compile", action="store_true", help="also time torch.compile of the composite (slow)")
    b.add_argument("--triton", action="store_true", help="also time the Triton ops")
    b.add_argument("--max-seconds", type=float, default=1.5, help="per layer and batch")
    b.add_argument("--out", default=None, help="extra output folder (default: $OUT when set)")
    w = sub.add_parser("workload")
    w.add_argument("--tiny", action="store_true", help="fp32 and the smallest shapes only (racecheck is slow)")
    args = p.parse_args()
    {"bench": cmd_bench, "workload": cmd_workload}[args.cmd](args)


if __name__ == "__main__":
    main()
