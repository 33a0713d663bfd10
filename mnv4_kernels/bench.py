"""`python -m mnv4_kernels bench`: per-layer and end-to-end microbenchmarks with roofline columns.

Per layer: every UIB and MQA block of the five MobileNetV4 models at native resolution (the table comes
from mnv4_kernels.layers, derived from the reference model), each of our backends available here against
the PyTorch op chain (mnv4_reference.functional on the same folded weights, channels_last input), candidates
interleaved in one process, medians. Each record carries the achieved GB/s (compulsory traffic) and
GFLOP/s next to the machine's ceilings (copy bandwidth, GEMM rate) measured in the same run.
End to end: the fused model against the reference in eager mode (channels_last).
Writes JSON (benches/results/ by default) and plots: per-layer speedup bars and a roofline chart.
"""

import os
import sys

import torch

from . import report
from .layers import MAIN_MODELS, layer_table, unique_layers
from .timing import geomean, interleaved

_MODEL_ALIASES = {n.replace("mobilenetv4_", ""): (n, r) for n, r in MAIN_MODELS}


def add_arguments(p):
    p.add_argument("--models", default=",".join(_MODEL_ALIASES),
                   help="comma-separated: " + ", ".join(_MODEL_ALIASES) + " (optionally name@res)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="default float32 on CPU, float16 on CUDA")
    p.add_argument("--batches", default=None, help="default 1,8 on CPU and 1,256 on CUDA")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's default)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--max-seconds", type=float, default=5.0, help="per layer and batch")
    p.add_argument("--all-layers", action="store_true", help="time repeated identical layers again")
    p.add_argument("--no-e2e", action="store_true")
    p.add_argument("--quick", action="store_true", help="conv_small only, batch 1, few repeats (for tests)")
    p.add_argument("--out", default=None, help="JSON path (default benches/results/bench-<machine>.json)")


def _parse_models(spec):
    out = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, res = item.partition("@")
        if name not in _MODEL_ALIASES:
            raise SystemExit(f"bench: unknown model {name!r}; choose from {', '.join(_MODEL_ALIASES)}")
        full, native = _MODEL_ALIASES[name]
        out.append((full, int(res) if res else native))
    return out


def cpu_gemm_probe():
    """(call, flops): our NHWC GEMM on 3136 x 512 x 512 (mnv4_cpu::pointwise), the CPU's fp32 GEMM ceiling
    probe. Timed beside the layers (benches/uib_layers_cpu.py, mqa_layers_cpu.py) it gives the ceiling of
    the same moments, which on a shared VM moves by up to 1.3x within a minute."""
    from .ops import channels_innermost

    xp, wp = torch.randn(3136, 512), channels_innermost(torch.randn(512, 512))
    return (lambda: torch.ops.mnv4_cpu.pointwise(xp, wp, None, "none")), 2 * 3136 * 512 * 512


def measure_ceilings(device, dtype):
    """Copy bandwidth (GB/s, bytes read + written) and GEMM rate (GFLOP/s) on this device, now.

    The GEMM rate is the best of torch.mm on a 2048^3 (8192^3 on a GPU) product and, on the CPU, of our own
    NHWC GEMM (mnv4_cpu::pointwise, 3136 x 512 x 512): MKL's AMD path stops at AVX2, so on an AVX-512 CPU
    torch.mm alone is not the machine's ceiling (our layers ran above it)."""
    dev = torch.device(device)
    n = (256 if dev.type == "cuda" else 64) * 2**20 // 4  # 256 MiB on GPU, 64 MiB on CPU (> any L3 here)
    src = torch.randn(n, device=dev)
    dst = torch.empty_like(src)
    size = 8192 if dev.type == "cuda" else 2048
    gdt = dtype if dev.type == "cuda" else torch.float32
    a = torch.randn(size, size, device=dev, dtype=gdt)
    b = torch.randn(size, size, device=dev, dtype=gdt)
    cands = {"copy": lambda: dst.copy_(src), "gemm": lambda: torch.mm(a, b)}
    pw_flops = 0
    if dev.type == "cpu" and hasattr(torch.ops.mnv4_cpu, "pointwise"):
        cands["pointwise"], pw_flops = cpu_gemm_probe()
    t = interleaved(cands, warmup=2, repeats=10, device=dev)
    gemm = 2 * size**3 / t["gemm"].median_ms / 1e6
    ours = pw_flops / t["pointwise"].median_ms / 1e6 if pw_flops else 0.0
    return {"copy_gbps": 2 * n * 4 / t["copy"].median_ms / 1e6, "gemm_gflops": max(gemm, ours),
            "torch_mm_gflops": gemm, "ours_gemm_gflops": ours,
            "gemm_dtype": str(gdt).replace("torch.", ""), "gemm_size": size, "copy_bytes": 2 * n * 4}


def layer_impls(kind, device):
    """[(impl name, op)] of our kernels that can run `kind` on `device`, plus the PyTorch op chain."""
    from mnv4_reference import functional

    from .backends import backends

    avail = backends()
    impls = [("torch-ops", getattr(functional, kind))]
    dev = torch.device(device)
    if dev.type == "cpu" and kind in avail["cpu"].ops:
        impls.append(("ours-cpu", getattr(torch.ops.mnv4, kind)))
    if dev.type == "cuda":
        if avail["cuda"].available and kind in avail["cuda"].ops:
            impls.append(("ours-cuda", getattr(torch.ops.mnv4, kind)))
        if avail["triton"].available:
            import mnv4_kernels.triton  # noqa: F401  registers the *_triton ops
            impls.append(("ours-triton", getattr(torch.ops.mnv4, f"{kind}_triton")))
    return impls


def bench_layers(models, batches, device, dtype, repeats, max_seconds, all_layers=False, log=print):
    from mnv4_reference.testing import rel_err

    records = []
    for model, res in models:
        layers = layer_table(model, res)
        todo = [(l, 1) for l in layers] if all_layers else unique_layers(layers)
        for layer, count in todo:
            impls = layer_impls(layer.kind, device)
            args = layer.args(dtype=dtype, device=device)
            # our CPU op gets the weights as the fused model stores them (same values, other strides)
            impl_args = {name: layer.args(dtype=dtype, device=device, cpu_layout=True) if name == "ours-cpu"
                         else args for name, _ in impls}
            for batch in batches:
                x = torch.randn(batch, *layer.in_shape, device=device).to(dtype)
                x = x.contiguous(memory_format=torch.channels_last)
                with torch.inference_mode():
                    want = impls[0][1](x.float(), *layer.args(dtype=torch.float32, device=device))
                    errs = {name: rel_err(op(x, *impl_args[name]), want) for name, op in impls}
                    times = interleaved({name: (lambda op=op, a=impl_args[name]: op(x, *a)) for name, op in impls},
                                        warmup=2, repeats=repeats, device=device, max_seconds=max_seconds)
                base = times["torch-ops"].median_ms
                flops, nbytes = layer.flops(batch), layer.bytes(batch, torch.finfo(dtype).bits // 8)
                line = []
                for name, t in times.items():
                    records.append(dict(kind="layer", model=model, res=res, batch=batch,
                                        dtype=str(dtype).replace("torch.", ""), layer=layer.name,
                                        block=layer.kind, form=layer.form, in_shape=list(layer.in_shape),
                                        count=count, impl=name, median_ms=t.median_ms, p10_ms=t.p10_ms,
                                        p90_ms=t.p90_ms, gbps=nbytes / t.median_ms / 1e6,
                                        tflops=flops / t.median_ms / 1e9, speedup_vs_torch_ops=base / t.median_ms,
                                        rel_err_vs_fp32_torch_ops=errs[name]))
                    line.append(f"{name} {t.median_ms:.3f} ms ({base / t.median_ms:.2f}x)")
                log(f"  {layer.label} b{batch} x{count}: " + ", ".join(line))
    return records


def bench_e2e(models, batches, device, dtype, repeats, max_seconds, log=print):
    from mnv4_reference import randomized_model

    from . import baselines
    from .fuse import fuse

    records = []
    for model, res in models:
        ref = randomized_model(model).to(device)
        fused = fuse(ref, dtype=dtype).to(device)
        ref = ref.to(dtype)
        eager = baselines.eager(ref)
        for batch in batches:
            x = torch.randn(batch, 3, res, res, device=device).to(dtype)
            with torch.inference_mode():
                times = interleaved({"ours": lambda: fused(x), "eager": lambda: eager(x)}, warmup=2,
                                    repeats=repeats, device=device, max_seconds=4 * max_seconds)
            for name, t in times.items():
                records.append(dict(kind="e2e", model=model, res=res, batch=batch,
                                    dtype=str(dtype).replace("torch.", ""), impl=name, median_ms=t.median_ms,
                                    p10_ms=t.p10_ms, p90_ms=t.p90_ms, img_per_s=1e3 * batch / t.median_ms,
                                    speedup_vs_eager=times["eager"].median_ms / t.median_ms))
            log(f"  e2e {model}@{res} b{batch}: ours {times['ours'].median_ms:.2f} ms, eager "
                f"{times['eager'].median_ms:.2f} ms ({times['eager'].median_ms / times['ours'].median_ms:.2f}x)")
    return records


def summarize(records):
    """Geomean speedup of each of our impls over the torch op chain, per (model, batch, block kind)."""
    groups = {}
    for r in records:
        if r["kind"] == "layer" and r["impl"] != "torch-ops":
            key = (r["model"], r["batch"], r["block"], r["impl"])
            groups.setdefault(key, []).append(r["speedup_vs_torch_ops"])
    return [dict(model=m, batch=b, block=k, impl=i, layers=len(v), geomean_speedup=geomean(v))
            for (m, b, k, i), v in sorted(groups.items())]


def plot(records, ceilings, stem):
    paths = []
    ours = [r for r in records if r["kind"] == "layer" and r["impl"] != "torch-ops"]
    for batch in sorted({r["batch"] for r in ours}):
        rows = [r for r in ours if r["batch"] == batch]
        if rows:
            labels = [f"{r['model'].replace('mobilenetv4_', '')} {r['layer']} {r['form']} [{r['impl']}]" for r in rows]
            paths.append(report.bar_plot(f"{stem}-layers-b{batch}.png", labels,
                                         [r["speedup_vs_torch_ops"] for r in rows],
                                         f"fused layer speedup over the PyTorch op chain, batch {batch}",
                                         "speedup (x), higher is better", reference_line=1.0))
    if ours:
        pts = [(f"{r['layer']} b{r['batch']}", r["tflops"] * 1e12 / (r["gbps"] * 1e9), r["tflops"] * 1e3)
               for r in ours]
        paths.append(report.roofline_plot(f"{stem}-roofline.png", pts, ceilings["gemm_gflops"],
                                          ceilings["copy_gbps"], "fused layers against this machine's ceilings"))
    return paths


def main(args):
    dev = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[
        args.dtype or ("float16" if dev.type == "cuda" else "float32")]
    if args.quick:
        models, batches, repeats, max_s = [("mobilenetv4_conv_small", 224)], [1], 3, 1.0
    else:
        models = _parse_models(args.models)
        batches = [int(b) for b in (args.batches or ("1,256" if dev.type == "cuda" else "1,8")).split(",")]
        repeats, max_s = args.repeats, args.max_seconds

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    log(f"bench on {dev} ({report.cpu_model() if dev.type == 'cpu' else torch.cuda.get_device_name(dev)}), "
        f"{torch.get_num_threads()} threads, {str(dtype).replace('torch.', '')}, batches {batches}")
    ceilings = measure_ceilings(dev, dtype)
    log(f"  ceilings: copy {ceilings['copy_gbps']:.1f} GB/s, GEMM {ceilings['gemm_gflops']:.1f} GFLOP/s")
    records = bench_layers(models, batches, dev, dtype, repeats, max_s, args.all_layers, log)
    if not args.no_e2e:
        records += bench_e2e(models, batches, dev, dtype, repeats, max_s, log)
    summary = summarize(records)
    print(report.format_table(summary, [("model", "model", "{}"), ("batch", "batch", "{}"), ("block", "block", "{}"),
                                        ("impl", "impl", "{}"), ("layers", "layers", "{}"),
                                        ("geomean_speedup", "geomean x torch ops", "{:.2f}")]))
    for r in (r for r in records if r["kind"] == "e2e" and r["impl"] == "ours"):
        print(f"e2e {r['model']}@{r['res']} batch {r['batch']}: {r['median_ms']:.2f} ms, "
              f"{r['speedup_vs_eager']:.2f}x eager")
    out = args.out or os.path.join("benches", "results", f"bench-{report.machine_tag(dev)}.json")
    report.write_json(out, dict(env=report.env_info(dev), ceilings=ceilings, summary=summary, records=records))
    pngs = plot(records, ceilings, os.path.splitext(out)[0])
    print(f"wrote {out}" + "".join(f", {p}" for p in pngs))
    return 0
