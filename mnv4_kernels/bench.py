"""The benchmark runners behind `python -m mnv4_kernels run`, `... bench` and the scripts in benches/.

End to end (`e2e_case`): the fused model against what a user would pick instead (baselines.py: PyTorch eager,
torch.compile, onnxruntime, OpenVINO at f32 / bf16 / its default precision, ExecuTorch with XNNPACK) on the same
weights and input, every runtime on the same number of threads in its own pool, interleaved in round-robin
blocks of calls (timing.POOL_BLOCKS), medians; each output's relative error against the fp32 reference.

Per layer (`bench_layers`): every UIB and MQA block of the MobileNetV4 models (mnv4_kernels.layers, derived from
the reference model), our backends against the PyTorch op chain (mnv4_reference.functional on the same folded
weights, channels_last input), interleaved, medians. Each record carries the achieved GB/s (compulsory
traffic) and GFLOP/s, and on the CPU the speedup bounds: at the GEMM ceiling probed beside the layer and at
the fp32 FMA peak (benches/peak.c).

`bench` writes JSON (benches/results/ by default) and plots: per-layer speedup bars and a roofline chart.
"""

import copy
import os
import subprocess
import sys
import tempfile
import time

import torch

from . import report
from .layers import MAIN_MODELS, layer_table, unique_layers
from .timing import POOL_BLOCKS, geomean, interleaved

_MODEL_ALIASES = {n.replace("mobilenetv4_", ""): (n, r) for n, r in MAIN_MODELS}
_DTYPES = {"fp32": torch.float32, "f32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}

# End-to-end candidates: <runtime>-<precision>. ours / eager / compile take fp32, bf16 or fp16; the others
# below run on the CPU only.
E2E_FIXED = ("onnxruntime-fp32", "openvino-f32", "openvino-bf16", "openvino-default", "xnnpack-fp32")
E2E_RUNTIMES = ("ours", "eager", "compile", "onnxruntime", "openvino", "xnnpack")


def dtype_name(dtype):
    return _DTYPE_NAMES[dtype]


def default_e2e(device, dtype=torch.float32, compile=False):
    """The end-to-end candidates `bench` and `run` time by default on `device`, ours first."""
    dt = dtype_name(dtype)
    if torch.device(device).type != "cpu":
        names = [f"ours-{dt}", f"eager-{dt}"] + ([f"compile-{dt}"] if compile else [])
    else:
        names = ([f"ours-{dt}", "ours-bf16"] + list(E2E_FIXED) + [f"eager-{dt}", "eager-bf16"]
                 + ([f"compile-{dt}"] if compile else []))
    return list(dict.fromkeys(names))


def parse_e2e(spec):
    """'ours-fp32,openvino-bf16,...' -> list of candidate names (checked)."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for n in names:
        runtime, _, prec = n.partition("-")
        ok = n in E2E_FIXED or (runtime in ("ours", "eager", "compile") and prec in ("fp32", "bf16", "fp16"))
        if not ok:
            raise SystemExit(f"unknown end-to-end candidate {n!r}: choose from ours-/eager-/compile-"
                             f"{{fp32,bf16,fp16}} and {', '.join(E2E_FIXED)}")
    return names


# benches/peak.c: fp32 FMA, AVX512-BF16 dot product, AMX-BF16 tile, AVX512-FP16 FMA
PEAKS = ("fma32", "vdpbf16ps", "tdpbf16ps", "vfmadd231ph")


def peak_gflops(threads):
    """The register-only arithmetic peaks of `threads` cores (benches/peak.c, built with the system C compiler
    and -march=native): {"fma32": GFLOP/s, "vdpbf16ps": ..., "tdpbf16ps": ..., "vfmadd231ph": ...,
    "skipped": {name: why}}, a peak None where the CPU lacks its instructions (the reason in "skipped"), all
    None where the source or a compiler is missing (an installed package without the repository)."""
    out = dict.fromkeys(PEAKS)
    out["skipped"] = {}
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benches", "peak.c")
    if not os.path.exists(src):
        out["skipped"] = dict.fromkeys(PEAKS, f"{src} is missing")
        return out
    with tempfile.TemporaryDirectory() as d:
        exe = os.path.join(d, "peak")
        try:
            subprocess.run(["cc", "-O2", "-march=native", "-pthread", src, "-o", exe], check=True, capture_output=True)
            text = subprocess.run([exe, str(threads)], check=True, capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            out["skipped"] = dict.fromkeys(PEAKS, f"benches/peak.c did not build or run: {e}")
            return out
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if rest.startswith("skipped: "):
            out["skipped"][name] = rest[len("skipped: "):]
        elif name in PEAKS:
            out[name] = float(rest.split()[0])
    return out


def best_peaks(*measurements):
    """Per peak, the highest of several peak_gflops results (a slow phase of a shared machine must not lower
    a bound)."""
    out = dict.fromkeys(PEAKS)
    out["skipped"] = {}
    for m in measurements:
        for name in PEAKS:
            if m.get(name) and (out[name] is None or m[name] > out[name]):
                out[name] = m[name]
        out["skipped"].update({k: v for k, v in m.get("skipped", {}).items() if out.get(k) is None})
    out["skipped"] = {k: v for k, v in out["skipped"].items() if out.get(k) is None}
    return out


def model_flops(ref, x):
    """FLOPs of one forward pass of the reference (convolutions and matmuls, 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        ref(x)
    return counter.get_total_flops()


def cpu_gemm_probe(dtype=torch.float32):
    """(call, flops): our NHWC GEMM on 3136 x 512 x 512 (mnv4_cpu::pointwise) in `dtype`, the CPU's GEMM ceiling
    probe (fp32; bf16 on the bf16 kernels). Timed beside a layer it gives the ceiling of the same moments, which
    on a shared VM moves by up to 1.3x within a minute."""
    from .ops import channels_innermost

    xp, wp = torch.randn(3136, 512).to(dtype), channels_innermost(torch.randn(512, 512).to(dtype))
    return (lambda: torch.ops.mnv4_cpu.pointwise(xp, wp, None, "none")), 2 * 3136 * 512 * 512


def measure_ceilings(device, dtype):
    """Copy bandwidth (GB/s, bytes read + written) and GEMM rate (GFLOP/s) on this device, now.

    The GEMM rate is the best of torch.mm on a 2048^3 (8192^3 on a GPU) product and, on the CPU, of our own
    NHWC GEMM (cpu_gemm_probe): MKL's AMD path stops at AVX2, so on an AVX-512 CPU torch.mm alone is not the
    machine's ceiling. On the CPU also the bf16 GEMM ceiling (bf16_gemm_gflops): the best of torch.mm in bf16
    (oneDNN) and our NHWC GEMM on the bf16 kernels, on the same shapes: the dense rate a bf16 network's
    layers could at best run at here."""
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
        a16, b16 = a.bfloat16(), b.bfloat16()
        cands["gemm_bf16"] = lambda: torch.mm(a16, b16)
        cands["pointwise_bf16"], _ = cpu_gemm_probe(torch.bfloat16)
    t = interleaved(cands, warmup=2, repeats=10, device=dev)
    gemm = 2 * size**3 / t["gemm"].median_ms / 1e6
    ours = pw_flops / t["pointwise"].median_ms / 1e6 if pw_flops else 0.0
    out = {"copy_gbps": 2 * n * 4 / t["copy"].median_ms / 1e6, "gemm_gflops": max(gemm, ours),
           "torch_mm_gflops": gemm, "ours_gemm_gflops": ours,
           "gemm_dtype": str(gdt).replace("torch.", ""), "gemm_size": size, "copy_bytes": 2 * n * 4}
    if pw_flops:
        mm16 = 2 * size**3 / t["gemm_bf16"].median_ms / 1e6
        ours16 = pw_flops / t["pointwise_bf16"].median_ms / 1e6
        out.update(bf16_gemm_gflops=max(mm16, ours16), torch_mm_bf16_gflops=mm16, ours_bf16_gemm_gflops=ours16)
    return out


# ------------------------------------------------------------------------------------------- end to end
def e2e_reference(name, res, batch, seed=0):
    """(reference model, input batch): random weights with BatchNorm statistics from a calibration batch of
    >= 16 images that contains the input (then perturbed), so activations are realistic at this resolution.
    The same model and input for the same arguments in every process (timm's initialisation runs under `seed`;
    the global RNG is left as it was), so runs compare on the same weights."""
    from mnv4_reference import create_model, randomize_

    x = torch.randn(max(16, batch), 3, res, res, generator=torch.Generator().manual_seed(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(name)
    ref = randomize_(model, seed=seed, calibration_input=x)
    return ref.eval(), x[:batch].contiguous()


def e2e_candidates(ref, x, names, threads=None, log=print, prebuilt=None):
    """Build each named candidate on the fp32 reference `ref` and input `x` (fp32, on its device); `prebuilt`
    {name: zero-argument call} supplies some ready-made (e.g. a fused model on a chosen backend).

    Returns ({name: zero-argument call}, {name: reason it is missing}, {name: facts, e.g. the precision
    OpenVINO chose}). ExecuTorch is exported first: torch.export must not run under inference_mode."""
    from . import baselines
    from .fuse import fuse

    threads = threads or torch.get_num_threads()
    calls, skipped, info = {}, {}, {}
    shared = {}

    def onnx():
        if "onnx" not in shared:
            shared["onnx"] = baselines.onnx_bytes(ref, x)
        return shared["onnx"]

    def openvino():
        if "ov" not in shared:
            shared["ov"] = baselines.openvino_model(ref, x)
        return shared["ov"]

    order = sorted(names, key=lambda n: not n.startswith("xnnpack"))
    for name in order:
        runtime, _, prec = name.partition("-")
        t0 = time.perf_counter()
        try:
            if prebuilt and name in prebuilt:
                call = prebuilt[name]
            elif runtime == "ours":
                dt = _DTYPES[prec]
                fused = fuse(ref, dtype=dt).to(x.device)
                xin = x.to(dt)
                call = _in_inference_mode(lambda fused=fused, xin=xin: fused(xin))
            elif runtime in ("eager", "compile"):
                dt = _DTYPES[prec]
                model = copy.deepcopy(ref).to(x.device, dt)
                xin = x.to(dt)
                run = baselines.eager(model) if runtime == "eager" else baselines.compiled(model, xin)
                call = lambda run=run, xin=xin: run(xin)  # noqa: E731
            elif x.device.type != "cpu":
                raise baselines.BaselineUnavailable(f"{runtime} runs on the CPU only here")
            elif runtime == "onnxruntime":
                run = baselines.onnxruntime_cpu(ref, x, threads=threads, onnx=onnx())
                call = lambda run=run: run(x)  # noqa: E731
            elif runtime == "openvino":
                run = baselines.openvino_cpu(openvino(), x, threads=threads, precision=prec)
                info[name] = {"precision": run.precision}
                call = lambda run=run: run(x)  # noqa: E731
            elif runtime == "xnnpack":
                run = baselines.executorch_xnnpack(ref, x, threads=threads)
                info[name] = {"threads": run.threads}
                call = lambda run=run: run(x)  # noqa: E731
            else:
                raise ValueError(f"unknown candidate {name!r}")
        except baselines.BaselineUnavailable as e:
            skipped[name] = str(e)
            log(f"  no {name}: {e}")
            continue
        calls[name] = call
        info.setdefault(name, {}).setdefault("precision", prec)
        log(f"  built {name} in {time.perf_counter() - t0:.1f} s")
    return {n: calls[n] for n in names if n in calls}, skipped, info


def _in_inference_mode(fn):
    def call():
        with torch.inference_mode():
            return fn()
    return call


def e2e_case(ref, x, names, threads=None, repeats=30, max_seconds=None, warmup=3, blocks=None, log=print,
             progress=None, prebuilt=None):
    """Time the named candidates on one model and input, side by side; returns a record (dict).

    record["candidates"][name]: median / p10 / p90 ms, img/s, relative error of the logits against the fp32
    reference, time over the first candidate's (`relative_to`), and what the runtime chose (precision)."""
    from mnv4_reference.testing import rel_err

    threads = threads or torch.get_num_threads()
    calls, skipped, info = e2e_candidates(ref, x, names, threads, log, prebuilt)
    if not calls:
        raise RuntimeError("no end-to-end candidate could be built: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    with torch.inference_mode():
        want = ref(x).float()
        errs = {n: rel_err(c().float().to(want.device), want) for n, c in calls.items()}
    cpu = x.device.type == "cpu"
    blocks = dict(POOL_BLOCKS if cpu else dict(inner=1, settle=0, gap_s=0.0), **(blocks or {}))
    t = interleaved(calls, warmup=warmup, repeats=repeats, max_seconds=max_seconds, device=x.device,
                    progress=progress, **blocks)
    first = next(iter(calls))
    cands = {}
    for n, v in t.items():
        cands[n] = dict(median_ms=v.median_ms, p10_ms=v.p10_ms, p90_ms=v.p90_ms, samples=v.repeats,
                        img_per_s=1e3 * x.shape[0] / v.median_ms, rel_err_vs_reference_fp32=errs[n],
                        time_over_first=v.median_ms / t[first].median_ms, **info.get(n, {}))
    return dict(kind="e2e", batch=x.shape[0], res=x.shape[-1], threads=threads, device=str(x.device),
                relative_to=first, timing=dict(warmup=warmup, repeats=repeats, max_seconds=max_seconds, **blocks),
                candidates=cands, skipped=skipped)


def e2e_table(record):
    """A plain-text table of one e2e record's candidates."""
    rows = [dict(impl=n, **c) for n, c in record["candidates"].items()]
    first = record["relative_to"]
    return report.format_table(rows, [("impl", "implementation", "{}"), ("median_ms", "median ms", "{:.3f}"),
                                      ("p10_ms", "p10", "{:.3f}"), ("p90_ms", "p90", "{:.3f}"),
                                      ("img_per_s", "img/s", "{:.1f}"), ("time_over_first", f"x {first}", "{:.2f}"),
                                      ("rel_err_vs_reference_fp32", "rel err", "{:.1e}"),
                                      ("precision", "precision", "{}")])


# The bf16 target end to end: ours-bf16 at most this fraction of OpenVINO's time at bf16 precision.
BF16_TARGET_OVER_OPENVINO = 0.8


def e2e_bounds(record, flops, peaks, gemm_ceiling=None, bf16_gemm_ceiling=None):
    """Add to an e2e record how fast any implementation could run the model here (benches/README.md, Bounds).

    gflop: the model's FLOPs (model_flops). min_ms_at_fma_peak / min_ms_at_bf16_peak / min_ms_at_amx_peak:
    those FLOPs at the fp32 FMA / vdpbf16ps / tdpbf16ps peak of `peaks` (peak_gflops of the record's threads;
    None where the CPU lacks the instructions, the AMX one only where it has them), min_ms_at_gemm_ceiling at
    `gemm_ceiling`, min_ms_at_bf16_gemm_ceiling at `bf16_gemm_ceiling` (measure_ceilings' bf16_gemm_gflops).
    Each candidate: gflops. bf16_target, where openvino-bf16 ran at bf16 precision: target_ms
    (BF16_TARGET_OVER_OPENVINO x its median), target_needs_peak_fraction (min_ms_at_bf16_peak / target_ms: the
    share of the vdpbf16ps peak the whole network must sustain to meet it; near or above 1, out of reach),
    target_needs_bf16_gemm_ceiling_fraction (the same share of the bf16 GEMM ceiling: the whole network,
    depthwise convs, stem and head included, as efficient as a large dense bf16 GEMM) and, where ours-bf16 ran,
    its median and achieved fractions (min_ms_at_bf16_peak, min_ms_at_bf16_gemm_ceiling over its median); else
    None."""
    def at(rate):
        return flops / rate / 1e6 if rate else None

    record["gflop"] = flops / 1e9
    record["min_ms_at_fma_peak"] = at(peaks.get("fma32"))
    record["min_ms_at_bf16_peak"] = at(peaks.get("vdpbf16ps"))
    if peaks.get("tdpbf16ps"):
        record["min_ms_at_amx_peak"] = at(peaks["tdpbf16ps"])
    if gemm_ceiling:
        record["min_ms_at_gemm_ceiling"] = at(gemm_ceiling)
    ceil16 = record["min_ms_at_bf16_gemm_ceiling"] = at(bf16_gemm_ceiling)
    record["peaks_skipped"] = dict(peaks.get("skipped", {}))
    cands = record["candidates"]
    for c in cands.values():
        c["gflops"] = flops / c["median_ms"] / 1e6
    bound, ov, ours = record["min_ms_at_bf16_peak"], cands.get("openvino-bf16"), cands.get("ours-bf16")
    target = None
    if ov and ov.get("precision") == "bf16":
        target_ms = BF16_TARGET_OVER_OPENVINO * ov["median_ms"]
        target = dict(candidate="ours-bf16", against="openvino-bf16", factor=BF16_TARGET_OVER_OPENVINO,
                      target_ms=target_ms, target_needs_peak_fraction=bound / target_ms if bound else None)
        if record.get("min_ms_at_amx_peak"):
            target["target_needs_amx_peak_fraction"] = record["min_ms_at_amx_peak"] / target_ms
        if ceil16:
            target["target_needs_bf16_gemm_ceiling_fraction"] = ceil16 / target_ms
        if ours:
            target.update(ours_ms=ours["median_ms"], ours_over_target=ours["median_ms"] / target_ms,
                          ours_peak_fraction=bound / ours["median_ms"] if bound else None)
            if ceil16:
                target["ours_bf16_gemm_ceiling_fraction"] = ceil16 / ours["median_ms"]
    record["bf16_target"] = target
    return record


def e2e_bounds_line(record):
    """One line of an e2e record's bounds (e2e_bounds) for a run's summary."""
    def ms(key):
        v = record.get(key)
        return "n/a" if v is None else f"{v:.2f} ms"

    line = (f"{record['gflop']:.2f} GFLOP; at fp32 FMA peak {ms('min_ms_at_fma_peak')}, at bf16 peak "
            f"{ms('min_ms_at_bf16_peak')}" + (f", at AMX peak {ms('min_ms_at_amx_peak')}"
                                             if "min_ms_at_amx_peak" in record else ""))
    t = record.get("bf16_target")
    if t:
        need = t["target_needs_peak_fraction"]
        line += (f"; bf16 target {t['target_ms']:.2f} ms ({t['factor']}x {t['against']}) needs "
                 + ("n/a" if need is None else f"{100 * need:.0f}%") + " of the bf16 peak")
        if "target_needs_bf16_gemm_ceiling_fraction" in t:
            line += f" and {100 * t['target_needs_bf16_gemm_ceiling_fraction']:.0f}% of the bf16 GEMM ceiling"
        if "ours_ms" in t:
            got = t["ours_peak_fraction"]
            line += (f", ours-bf16 {t['ours_ms']:.2f} ms = {t['ours_over_target']:.2f}x the target, at "
                     + ("n/a" if got is None else f"{100 * got:.0f}%") + " of the peak"
                     + (f" and {100 * t['ours_bf16_gemm_ceiling_fraction']:.0f}% of the ceiling"
                        if "ours_bf16_gemm_ceiling_fraction" in t else ""))
    return line


# -------------------------------------------------------------------------------------------- per layer
def layer_impls(kind, device):
    """[(impl name, op)] of our kernels that can run `kind` on `device`, after the PyTorch op chain."""
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


def _inner_for(call, device, min_ms=2.0):
    """Back-to-back calls per sample so a sample lasts >= min_ms (timer and launch noise stay small)."""
    if torch.device(device).type != "cpu":
        return 1
    t0 = time.perf_counter()
    call()
    return max(1, int(min_ms * 1e-3 / max(time.perf_counter() - t0, 1e-6)))


def bench_layers(models, batches, device, dtype, repeats, max_seconds, all_layers=False, kinds=("uib", "mqa"),
                 fma_peak=None, log=print):
    """One record per (layer, batch, impl). On the CPU a GEMM probe (cpu_gemm_probe) is timed beside each
    layer's candidates: speedup_bound_at_ceiling = torch-ops time / (layer FLOPs at that rate); with `fma_peak`
    (GFLOP/s) also speedup_bound_at_fma_peak, a hard bound for any fp32 implementation."""
    from mnv4_reference.testing import rel_err

    cpu = torch.device(device).type == "cpu"
    probe, probe_flops = cpu_gemm_probe() if cpu else (None, 0)
    records = []
    for model, res in models:
        layers = [l for l in layer_table(model, res) if l.kind in kinds]
        todo = [(l, 1) for l in layers] if all_layers else [(l, c) for l, c in unique_layers(layers)]
        for i, (layer, count) in enumerate(todo):
            impls = layer_impls(layer.kind, device)
            args = layer.args(dtype=dtype, device=device)
            # our CPU op gets the weights as the fused model stores them (same values, other strides)
            impl_args = {name: layer.args(dtype=dtype, device=device, cpu_layout=True) if name == "ours-cpu"
                         else args for name, _ in impls}
            for batch in batches:
                gen = torch.Generator().manual_seed(i)
                x = torch.randn(batch, *layer.in_shape, generator=gen).to(device, dtype)
                x = x.contiguous(memory_format=torch.channels_last)
                calls = {name: (lambda op=op, a=impl_args[name]: op(x, *a)) for name, op in impls}
                with torch.inference_mode():
                    want = impls[0][1](x.float(), *layer.args(dtype=torch.float32, device=device))
                    errs = {name: rel_err(c(), want) for name, c in calls.items()}
                    inner = {name: _inner_for(c, device) for name, c in calls.items()}
                    if cpu:
                        calls["gemm-probe"], inner["gemm-probe"] = probe, 1
                    times = interleaved(calls, warmup=2, repeats=repeats, device=device, max_seconds=max_seconds,
                                        inner=inner)
                base = times["torch-ops"].median_ms
                flops, nbytes = layer.flops(batch), layer.bytes(batch, torch.finfo(dtype).bits // 8)
                bounds = {}
                if cpu:
                    ceiling = probe_flops / times.pop("gemm-probe").median_ms / 1e6
                    bounds = dict(gemm_ceiling_gflops=ceiling, speedup_bound_at_ceiling=base / (flops / ceiling / 1e6))
                    if fma_peak:
                        bounds["speedup_bound_at_fma_peak"] = base / (flops / fma_peak / 1e6)
                line = []
                for name, t in times.items():
                    records.append(dict(kind="layer", model=model, res=res, batch=batch,
                                        dtype=str(dtype).replace("torch.", ""), layer=layer.name,
                                        block=layer.kind, form=layer.form, in_shape=list(layer.in_shape),
                                        count=count, impl=name, median_ms=t.median_ms, p10_ms=t.p10_ms,
                                        p90_ms=t.p90_ms, inner=inner[name], gbps=nbytes / t.median_ms / 1e6,
                                        tflops=flops / t.median_ms / 1e9, speedup_vs_torch_ops=base / t.median_ms,
                                        rel_err_vs_fp32_torch_ops=errs[name], **bounds))
                    line.append(f"{name} {t.median_ms:.3f} ms ({base / t.median_ms:.2f}x)")
                if bounds:
                    line.append(f"bound {bounds['speedup_bound_at_ceiling']:.2f}x at {bounds['gemm_ceiling_gflops']:.0f}"
                                " GFLOP/s")
                log(f"  {layer.label} b{batch} x{count}: " + ", ".join(line))
    return records


def summarize(records):
    """Geomean speedup of each of our impls over the torch op chain, per (model, batch, block kind), with the
    geomean bounds where the records have them."""
    groups = {}
    for r in records:
        if r["kind"] == "layer" and r["impl"] != "torch-ops":
            groups.setdefault((r["model"], r["batch"], r["block"], r["impl"]), []).append(r)
    out = []
    for (m, b, k, i), rs in sorted(groups.items()):
        row = dict(model=m, batch=b, block=k, impl=i, layers=len(rs),
                   geomean_speedup=geomean([r["speedup_vs_torch_ops"] for r in rs]))
        for key in ("speedup_bound_at_ceiling", "speedup_bound_at_fma_peak"):
            if all(key in r for r in rs):
                row[f"geomean_{key}"] = geomean([r[key] for r in rs])
        out.append(row)
    return out


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


# ----------------------------------------------------------------------------------------------- bench
def add_arguments(p):
    p.add_argument("--models", default=",".join(_MODEL_ALIASES),
                   help="comma-separated: " + ", ".join(_MODEL_ALIASES) + " (optionally name@res)")
    p.add_argument("--kinds", default="uib,mqa", help="per-layer blocks to time: uib, mqa or both")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="default float32 on CPU, float16 on CUDA")
    p.add_argument("--batches", default=None, help="default 1,8 on CPU and 1,256 on CUDA")
    p.add_argument("--threads", type=int, default=None, help="threads of every runtime (default: torch's default)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--max-seconds", type=float, default=5.0, help="per layer and batch (x4 per e2e case)")
    p.add_argument("--all-layers", action="store_true", help="time repeated identical layers again")
    p.add_argument("--e2e", default=None,
                   help="end-to-end candidates, comma-separated (default: ours in --dtype and bf16, onnxruntime-fp32, "
                        "openvino-f32/-bf16/-default, xnnpack-fp32, eager in --dtype and bf16)")
    p.add_argument("--no-e2e", action="store_true")
    p.add_argument("--no-layers", action="store_true")
    p.add_argument("--quick", action="store_true", help="conv_small only, batch 1, few repeats, ours and eager")
    p.add_argument("--out", default=None, help="JSON path (default benches/results/bench-<machine>.json)")


def parse_models(spec):
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


def main(args):
    dev = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[
        args.dtype or ("float16" if dev.type == "cuda" else "float32")]
    kinds = tuple(k for k in args.kinds.split(",") if k)
    if args.quick:
        models, batches, repeats, max_s = [("mobilenetv4_conv_small", 224)], [1], 3, 1.0
        e2e = [f"ours-{dtype_name(dtype)}", f"eager-{dtype_name(dtype)}"]
    else:
        models = parse_models(args.models)
        batches = [int(b) for b in (args.batches or ("1,256" if dev.type == "cuda" else "1,8")).split(",")]
        repeats, max_s = args.repeats, args.max_seconds
        e2e = parse_e2e(args.e2e) if args.e2e else default_e2e(dev, dtype)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    log(f"bench on {dev} ({report.cpu_model() if dev.type == 'cpu' else torch.cuda.get_device_name(dev)}), "
        f"{torch.get_num_threads()} threads, {str(dtype).replace('torch.', '')}, batches {batches}")
    ceilings = measure_ceilings(dev, dtype)
    peaks = peak_gflops(torch.get_num_threads()) if dev.type == "cpu" and not args.quick else None
    peak = peaks["fma32"] if peaks else None
    ceilings["fma_peak_gflops"] = peak
    ceilings["peaks_gflops"] = peaks
    log(f"  ceilings: copy {ceilings['copy_gbps']:.1f} GB/s, GEMM {ceilings['gemm_gflops']:.1f} GFLOP/s"
        + (f", fp32 FMA peak {peak:.1f} GFLOP/s" if peak else ""))
    records = []
    if not args.no_layers:
        records += bench_layers(models, batches, dev, dtype, repeats, max_s, args.all_layers, kinds, peak, log)
    if not args.no_e2e:
        for model, res in models:
            for batch in batches:
                ref, x = e2e_reference(model, res, batch)
                rec = e2e_case(ref.to(dev), x.to(dev), e2e, repeats=repeats, max_seconds=4 * max_s, log=log)
                rec.update(model=model, dtype=str(dtype).replace("torch.", ""))
                if peaks:
                    e2e_bounds(rec, model_flops(ref, x), peaks, ceilings["gemm_gflops"],
                               ceilings.get("bf16_gemm_gflops"))
                records.append(rec)
                log(f"  e2e {model}@{res} b{batch}:\n" + e2e_table(rec))
    summary = summarize(records)
    cols = [("model", "model", "{}"), ("batch", "batch", "{}"), ("block", "block", "{}"), ("impl", "impl", "{}"),
            ("layers", "layers", "{}"), ("geomean_speedup", "geomean x torch ops", "{:.2f}")]
    if any("geomean_speedup_bound_at_ceiling" in s for s in summary):
        cols.append(("geomean_speedup_bound_at_ceiling", "bound (GEMM ceiling)", "{:.2f}"))
    if summary:
        print(report.format_table(summary, cols))
    for r in (r for r in records if r["kind"] == "e2e"):
        print(f"e2e {r['model']}@{r['res']} batch {r['batch']}:\n{e2e_table(r)}")
        if "gflop" in r:
            print("  bounds: " + e2e_bounds_line(r))
    out = args.out or os.path.join("benches", "results", f"bench-{report.machine_tag(dev)}.json")
    report.write_json(out, dict(env=report.env_info(dev), ceilings=ceilings, summary=summary, records=records))
    pngs = plot(records, ceilings, os.path.splitext(out)[0])
    print(f"wrote {out}" + "".join(f", {p}" for p in pngs))
    return 0
