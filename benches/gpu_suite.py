"""GPU correctness pass, benchmarks and sanitizer workload for the CUDA and Triton kernels, run by
benches/gpu_run.sh (one budgeted run: build, check, e2e, tests, sanitizer, layers) or directly:

    python benches/gpu_suite.py check [--backends cuda,triton] [--what ops,models] [--part I/N] --json FILE
    python benches/gpu_suite.py e2e [--models conv_medium@224,hybrid_medium@256] [--batches 256,1]
                                    [--impls eager,ours-cuda,compile,ours-triton] [--deadline EPOCH] [--out DIR]
    python benches/gpu_suite.py warm [--models ...] [--batches ...] [--impls compile,ours-triton]
    python benches/gpu_suite.py layers [--models conv_medium,...] [--batches 256,1] [--triton] [--compile]
                                       [--deadline EPOCH] [--out DIR]
    python benches/gpu_suite.py workload [--tiny] [--dtypes float32,float16,bfloat16] [--triton]
    python benches/gpu_suite.py report --work DIR --out DIR
Every command takes --dry-run: parse the arguments, print what would run, exit (no torch import), so that
gpu_run.sh's dry run checks the command lines it would use.

check: the compact correctness pass, one case per op x dtype (fp32/fp16/bf16) x layout (NCHW/channels_last) x
  form (uib: ExtraDW, IB, ConvNext, FFN; mqa: kv stride 2 with dw, kv stride 1 without), one NaN case per op,
  and the fused models conv_small@224 / hybrid_medium@256 (fp32, fp16) against the reference, per backend.
  Oracle: the composite (mnv4_reference.functional) / the reference model in float64 on the CPU. fp32:
  rel_err <= 1e-5; fp16/bf16: <= max(2x (1.5x for models) the error of the composite / reference run in that
  dtype by PyTorch on the GPU, one unit roundoff); NaN: the isnan() mask equals the composite's. Writes a JSON
  list of records; exits 1 if any failed.
e2e: the headline benchmark, whole models in fp16 on channels_last input: batch >= 32 throughput (CUDA events,
  candidates interleaved), batch < 32 latency (each sample a CUDA graph of GRAPH_CALLS forward passes), for
  the fused model (backends cuda and triton; MNV4_TRITON_ONE_CONFIG says whether Triton autotuned), eager
  channels_last and torch.compile (default mode, dynamic=False) of the reference; the card's copy-bandwidth
  and GEMM ceilings. Writes <gpu>.json after every (model, batch), so a run stopped early keeps what it
  measured; candidates whose build would overrun --deadline are skipped with the reason.
warm: builds the e2e compile / triton candidates once (filling the inductor and Triton caches on disk), so
  that e2e, run later in another process, finds them compiled.
layers: per layer (timm block names, real shapes and folded weights), ours vs the cuDNN op chain
  (mnv4_reference.functional on channels_last) and optionally torch.compile / Triton -> <gpu>-layers.json.
workload: both ops on tiny shapes, every dtype and layout, checked; what compute-sanitizer wraps.
report: merges the check parts, writes summary.txt and status.json from gpu_run.sh's stage table.
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

torch = None  # imported by main() after the arguments are parsed: --dry-run and report need no torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"conv_small": ("mobilenetv4_conv_small", 224), "conv_medium": ("mobilenetv4_conv_medium", 224),
          "conv_large": ("mobilenetv4_conv_large", 384), "hybrid_medium": ("mobilenetv4_hybrid_medium", 256),
          "hybrid_large": ("mobilenetv4_hybrid_large", 384)}
DTYPE_NAMES = ("float32", "float16", "bfloat16")
GRAPH_CALLS = 20
FP32_TOL = 1e-5
UNIT_ROUNDOFF = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}


def log(msg):
    print(msg, flush=True)


def dtype_of(name):
    return getattr(torch, name)


def parse_models(spec):
    """'conv_medium@224,hybrid_medium' -> [(timm name, res)] (res defaults to MODELS')."""
    out = []
    for item in filter(None, (m.strip() for m in spec.split(","))):
        key, _, res = item.partition("@")
        if key not in MODELS:
            raise SystemExit(f"unknown model {key!r}; expected one of {', '.join(MODELS)}")
        out.append((MODELS[key][0], int(res) if res else MODELS[key][1]))
    return out


def versions():
    v = dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
             cudnn=torch.backends.cudnn.version())
    try:
        import triton

        v["triton"] = triton.__version__
    except Exception as e:  # noqa: BLE001
        v["triton"] = f"unavailable ({type(e).__name__})"
    for key, cmd in (("driver", ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
                     ("git", ["git", "rev-parse", "HEAD"])):
        try:
            v[key] = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=30).stdout.strip()
        except Exception:  # noqa: BLE001
            v[key] = "unknown"
    return v


def device_info():
    p = torch.cuda.get_device_properties(0)
    return dict(name=p.name, capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                memory_gib=round(p.total_memory / 2**30, 1), l2_bytes=getattr(p, "L2_cache_size", 50 * 2**20))


def slug(name):
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)  # a reader (or a kill) never sees half a file


def oracle_f64(fn, args):
    """fn on float64 CPU copies of args' tensors (the composite as an exact oracle)."""
    return fn(*[a.detach().double().cpu() if isinstance(a, torch.Tensor) else a for a in args])


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


# ------------------------------------------------------------------------------------------------ check
# One case per op x form; every dtype and layout is applied to each. Channels not multiples of 8 or 16, odd
# and even sizes, stride 2, k 3 and 5, residual, every activation.
CHECK_UIB = {
    "extradw": dict(n=2, cin=20, h=13, w=12, mid=72, cout=20, k_start=3, k_mid=5, stride=1, activation="relu"),
    "ib": dict(n=2, cin=24, h=14, w=11, mid=96, cout=40, k_start=0, k_mid=3, stride=2, activation="gelu"),
    "convnext": dict(n=1, cin=33, h=9, w=10, mid=66, cout=33, k_start=5, k_mid=0, stride=1, activation="relu"),
    "ffn": dict(n=2, cin=48, h=7, w=7, mid=192, cout=48, k_start=0, k_mid=0, stride=1, activation="none"),
}
CHECK_MQA = {
    "kv2-dw": dict(n=2, c=64, h=12, w=11, num_heads=4, key_dim=48, kv_stride=2),
    "kv1": dict(n=1, c=40, h=7, w=9, num_heads=8, key_dim=16, value_dim=24, kv_stride=1, cout=48, residual=False),
}
CHECK_MODELS = ("conv_small@224", "hybrid_medium@256")


def _op(kind, backend):
    import mnv4_kernels  # noqa: F401  registers mnv4::uib / mqa (CUDA)

    if backend == "triton":
        import mnv4_kernels.triton  # noqa: F401  registers mnv4::*_triton
        return getattr(torch.ops.mnv4, f"{kind}_triton")
    return getattr(torch.ops.mnv4, kind)


def _bound(err_lowp, dtype_name, factor):
    return max(factor * err_lowp, UNIT_ROUNDOFF[dtype_name])


def check_op_case(kind, form, backend, dtype_name, layout, nan=False):
    from mnv4_reference import functional as F
    from mnv4_reference.testing import random_mqa_args, random_uib_args, rel_err

    case = (CHECK_UIB if kind == "uib" else CHECK_MQA)[form]
    make = random_uib_args if kind == "uib" else random_mqa_args
    args = list(make(**case, dtype=dtype_of(dtype_name), device="cuda", channels_last=layout == "channels_last"))
    if nan:  # one NaN in x: the output's NaN mask must be the composite's
        x = args[0].clone()
        x[-1, 1, case["h"] // 2, case["w"] // 2] = float("nan")
        args[0] = x
    composite = F.uib if kind == "uib" else F.mqa
    out = _op(kind, backend)(*args)
    torch.cuda.synchronize()
    ref = oracle_f64(composite, args)
    rec = dict(what="op", kind=kind, form=form, backend=backend, dtype=dtype_name, layout=layout, nan=nan)
    want_fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    problems = []
    if out.shape != ref.shape or out.dtype != args[0].dtype or not out.is_contiguous(memory_format=want_fmt):
        problems.append(f"shape {tuple(out.shape)} / dtype {out.dtype} / layout (strides {out.stride()}) wrong")
    mask = ref.isnan()
    if nan:
        rec["nan_op"], rec["nan_composite"] = int(out.isnan().sum()), int(mask.sum())
        if not torch.equal(out.isnan().cpu(), mask):
            problems.append(f"NaN mask differs ({rec['nan_op']} NaN vs {rec['nan_composite']} in the composite)")
    keep = ~mask
    err = rel_err(out.cpu()[keep], ref[keep])
    if dtype_name == "float32":
        bound = FP32_TOL
    else:
        bound = _bound(rel_err(composite(*args).cpu()[keep], ref[keep]), dtype_name, 2.0)
    rec.update(rel_err=err, bound=bound)
    if not err <= bound:
        problems.append(f"rel_err {err:.3g} > {bound:.3g}")
    rec["ok"] = not problems
    if problems:
        rec["problem"] = "; ".join(problems)
    return rec


def check_model_case(spec, backend, dtype_name):
    import mnv4_kernels
    from mnv4_reference import randomized_model
    from mnv4_reference.testing import rel_err

    (name, res), = parse_models(spec)
    x = torch.randn(16, 3, res, res, generator=torch.Generator().manual_seed(0))
    ref = randomized_model(name, seed=0, calibration_input=x).eval()  # BN statistics of these images
    x = x[:2]
    with torch.inference_mode():
        want = ref.double()(x.double())
        ref = ref.float().cuda()
        fused = mnv4_kernels.fuse(ref, backend=backend, dtype=dtype_of(dtype_name))
        xin = x.cuda().to(dtype_of(dtype_name)).contiguous(memory_format=torch.channels_last)
        got = fused(xin)
        torch.cuda.synchronize()
        err = rel_err(got.cpu(), want)
        if dtype_name == "float32":
            bound = FP32_TOL
        else:  # the contract: 1.5x the error of the reference run in that dtype by PyTorch
            lowp = ref.to(dtype_of(dtype_name)).to(memory_format=torch.channels_last)
            bound = 1.5 * rel_err(lowp(xin).cpu(), want)
    rec = dict(what="model", model=name, res=res, backend=backend, dtype=dtype_name, rel_err=err, bound=bound,
               ok=bool(err <= bound))
    if not rec["ok"]:
        rec["problem"] = f"rel_err {err:.3g} > {bound:.3g}"
    return rec


def check_jobs(backends, what):
    jobs = []
    for backend in backends:
        if "ops" in what:
            for kind, forms in (("uib", CHECK_UIB), ("mqa", CHECK_MQA)):
                for form in forms:
                    for dt in DTYPE_NAMES:
                        for layout in ("nchw", "channels_last"):
                            jobs.append(("op", (kind, form, backend, dt, layout)))
                jobs.append(("op", (kind, next(iter(forms)), backend, "float16", "channels_last", True)))
        if "models" in what:
            for spec in CHECK_MODELS:
                for dt in ("float32", "float16"):
                    jobs.append(("model", (spec, backend, dt)))
    return jobs


def cmd_check(args):
    part, nparts = (int(v) for v in args.part.split("/"))
    jobs = check_jobs(args.backends.split(","), args.what.split(","))[part::nparts]
    records, t0 = [], time.time()
    for kind, job in jobs:
        t = time.time()
        try:
            rec = check_op_case(*job) if kind == "op" else check_model_case(*job)
        except Exception as e:  # noqa: BLE001  one failing case must not hide the others
            rec = dict(what=kind, job=list(job), ok=False, problem=f"{type(e).__name__}: {str(e)[:2000]}")
            try:
                torch.cuda.synchronize()
            except Exception:  # noqa: BLE001  a sticky CUDA error: the rest would fail the same way
                records.append(rec)
                log(f"FAIL {job}: {rec['problem']} (CUDA context lost; stopping this part)")
                break
        rec["seconds"] = round(time.time() - t, 2)
        records.append(rec)
        write_json(args.json, records)
        log(f"{'ok  ' if rec['ok'] else 'FAIL'} {job} {rec.get('rel_err', float('nan')):.2e} "
            f"(bound {rec.get('bound', float('nan')):.2e}) {rec['seconds']:.1f} s {rec.get('problem', '')}")
    write_json(args.json, records)
    bad = sum(not r["ok"] for r in records)
    log(f"check part {args.part}: {len(records)} of {len(jobs)} cases, {bad} failed, {time.time() - t0:.0f} s")
    sys.exit(1 if bad or len(records) < len(jobs) else 0)


# ------------------------------------------------------------------------------------------------ e2e
E2E_IMPLS = ("eager", "ours-cuda", "compile", "ours-triton")
# Seconds a candidate may take to build (first call included) when its caches are cold: a candidate is
# skipped, with the reason, when less than this is left before --deadline (measured ones are recorded).
BUILD_ESTIMATE_S = {"eager": 5, "ours-cuda": 10, "compile": 90, "ours-triton": 60}


def e2e_models(name, res):
    """(fp32 reference on CUDA, eval; the calibration batch) with the BN statistics of images at this res."""
    from mnv4_reference import randomized_model

    x = torch.randn(16, 3, res, res, generator=torch.Generator().manual_seed(0))
    return randomized_model(name, seed=0, calibration_input=x).eval().cuda(), x


def e2e_setup():
    """The backend flags of every e2e process (warm and e2e must agree: they can be part of a cache key)."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False  # the fp32 reference logits the errors are taken against


def e2e_candidate(impl, ref, x16):
    """A zero-argument forward for impl on the fp16 channels_last input x16 (fp16 weights)."""
    import copy

    if impl.startswith("ours-"):
        import mnv4_kernels  # loads _C: not before the build (torch.compile's warm-up runs beside it)

        fused = mnv4_kernels.fuse(ref, backend=impl[5:], dtype=torch.float16)
        return lambda: fused(x16)
    model = copy.deepcopy(ref).half().to(memory_format=torch.channels_last)
    if impl == "compile":
        model = torch.compile(model, dynamic=False)
    return lambda: model(x16)


def e2e_input(batch, res):
    x = torch.randn(batch, 3, res, res, generator=torch.Generator().manual_seed(1))
    return x.cuda().half().contiguous(memory_format=torch.channels_last)


def cmd_e2e(args):
    from mnv4_reference.testing import rel_err

    t_start = time.time()
    assert torch.cuda.is_available(), "e2e needs a CUDA device"
    e2e_setup()
    deadline = args.deadline or float("inf")
    dev, ver = device_info(), versions()
    log(f"device {dev}\nversions {ver}")
    out_dir = args.out or os.environ.get("OUT") or os.path.join(ROOT, "benches", "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{slug(dev['name'])}.json")
    result = dict(kind="gpu-e2e", device=dev, versions=ver, command=" ".join(shlex.quote(a) for a in sys.argv),
                  date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), dtype="float16", input="channels_last",
                  triton_configs=("first GPU config only, untuned (MNV4_TRITON_ONE_CONFIG=1)"
                                  if os.environ.get("MNV4_TRITON_ONE_CONFIG") == "1" else "autotuned"),
                  compile_mode="default, dynamic=False",
                  timing=dict(throughput="CUDA events per call, candidates interleaved, median",
                              latency=f"CUDA graph of {GRAPH_CALLS} calls per sample, per call, median"),
                  ceilings=ceilings(torch.float16), records=[], skipped=[])
    c = result["ceilings"]
    log(f"ceilings: copy {c['copy_gbps']:.0f} GB/s, fp16 GEMM {c['gemm_tflops']:.0f} TFLOP/s")
    write_json(path, result)
    impls = [i for i in args.impls.split(",") if i]
    with torch.inference_mode():
        for name, res in parse_models(args.models):
            ref, _ = e2e_models(name, res)
            for batch in (int(b) for b in args.batches.split(",")):
                x16 = e2e_input(batch, res)
                want = ref(x16.float())
                calls, built = {}, {}
                for impl in impls:
                    left = deadline - time.time()
                    if left < BUILD_ESTIMATE_S[impl] + 15:
                        result["skipped"].append(dict(model=name, batch=batch, impl=impl,
                                                      reason=f"{left:.0f} s left before the deadline"))
                        log(f"  skip {name} b{batch} {impl}: {left:.0f} s left")
                        continue
                    t = time.time()
                    try:
                        fn = e2e_candidate(impl, ref, x16)
                        errs = rel_err(fn().float(), want)
                        torch.cuda.synchronize()
                    except Exception as e:  # noqa: BLE001
                        result["skipped"].append(dict(model=name, batch=batch, impl=impl,
                                                      reason=f"{type(e).__name__}: {str(e)[:1000]}"))
                        log(f"  {impl} failed: {type(e).__name__}: {e}")
                        continue
                    calls[impl], built[impl] = fn, (time.time() - t, errs)
                    log(f"  built {name}@{res} b{batch} {impl} in {built[impl][0]:.1f} s (rel err {errs:.1e})")
                if not calls:
                    continue
                timing = "events"
                if batch < 32:
                    try:
                        samples = time_graphs({n: (lambda _x, f=f: f()) for n, f in calls.items()}, None,
                                              max_seconds=args.max_seconds)
                        timing = f"cuda-graph x{GRAPH_CALLS}"
                    except Exception as e:  # noqa: BLE001
                        log(f"  (graph capture failed: {type(e).__name__}: {e}; timing with events)")
                        torch.cuda.synchronize()
                        samples = time_events({n: (lambda _x, f=f: f()) for n, f in calls.items()}, [None],
                                              max_seconds=args.max_seconds)
                else:
                    samples = time_events({n: (lambda _x, f=f: f()) for n, f in calls.items()}, [None],
                                          repeats=20, max_seconds=args.max_seconds)
                base = {n: statistics.median(s) for n, s in samples.items()}
                parts = []
                for n, s in samples.items():
                    q = sorted(s)
                    ms = base[n]
                    rec = dict(model=name, res=res, batch=batch, impl=n, median_ms=ms, p10_ms=q[len(q) // 10],
                               p90_ms=q[(9 * len(q)) // 10], samples=len(s), img_per_s=1e3 * batch / ms,
                               latency_us=1e3 * ms, timing=timing, build_s=round(built[n][0], 1),
                               rel_err_vs_fp32_reference=built[n][1])
                    for other in ("eager", "compile"):
                        if other in base and other != n:
                            rec[f"speedup_vs_{other}"] = base[other] / ms
                    result["records"].append(rec)
                    parts.append(f"{n} {ms:.3f} ms ({rec['img_per_s']:.0f} img/s)")
                log(f"{name}@{res} b{batch} [{timing}]: " + "; ".join(parts))
                result["seconds"] = round(time.time() - t_start, 1)
                write_json(path, result)
                del calls, x16, want
                torch.cuda.empty_cache()
            del ref
    result["seconds"] = round(time.time() - t_start, 1)
    write_json(path, result)
    log(f"wrote {path}")


def cmd_warm(args):
    """Build the slow e2e candidates once (torch.compile's and Triton's caches on disk)."""
    e2e_setup()
    with torch.inference_mode():
        for name, res in parse_models(args.models):
            ref, _ = e2e_models(name, res)
            for batch in (int(b) for b in args.batches.split(",")):
                x16 = e2e_input(batch, res)
                for impl in args.impls.split(","):
                    t = time.time()
                    try:
                        e2e_candidate(impl, ref, x16)()
                        torch.cuda.synchronize()
                        log(f"warm {name}@{res} b{batch} {impl}: {time.time() - t:.1f} s")
                    except Exception as e:  # noqa: BLE001  warming is best effort; e2e reports failures
                        log(f"warm {name}@{res} b{batch} {impl} failed: {type(e).__name__}: {e}")


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


def bench_layers(models, batches, dtype, ceil, l2_bytes, use_compile, use_triton, max_seconds,
                 deadline=float("inf")):
    from mnv4_reference.testing import rel_err

    records = []
    itemsize = torch.finfo(dtype).bits // 8
    for model, res in models:
        layers = layer_list(model, res)
        log(f"{model}@{res}: {len(layers)} distinct UIB/MQA layers")
        for layer, count in layers:
            if time.time() > deadline - 20:
                log(f"  deadline: stopping before {layer.label}")
                return records
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


def cmd_layers(args):
    assert torch.cuda.is_available(), "layers needs a CUDA device"
    import mnv4_kernels

    b = mnv4_kernels.backends()["cuda"]
    assert b.available, f"the CUDA kernels are not available: {b.reason}"
    torch.backends.cudnn.benchmark = True
    dtype = dtype_of(args.dtype)
    dev = device_info()
    ver = versions()
    log(f"device {dev}\nversions {ver}")
    ceil = ceilings(dtype)
    log(f"ceilings: copy {ceil['copy_gbps']:.0f} GB/s, {ceil['gemm_dtype']} GEMM {ceil['gemm_tflops']:.0f} TFLOP/s")
    batches = [int(b) for b in args.batches.split(",")]
    t0 = time.time()
    records = bench_layers(parse_models(args.models), batches, dtype, ceil, dev["l2_bytes"], args.compile,
                           args.triton, args.max_seconds, args.deadline or float("inf"))
    result = dict(kind="gpu-layers", device=dev, versions=ver, command=" ".join(shlex.quote(a) for a in sys.argv),
                  date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), seconds=round(time.time() - t0, 1),
                  dtype=args.dtype, ceilings=ceil, summary=summarize(records), records=records)
    out_dir = args.out or os.environ.get("OUT") or os.path.join(ROOT, "benches", "results")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{slug(dev['name'])}-layers.json")
    write_json(path, result)
    log(f"wrote {path}")
    for row in result["summary"]:
        log(f"  {row['model']} b{row['batch']} {row['block']} {row['impl']}: geomean {row['geomean_speedup']:.2f}x "
            f"over {row['layers']} layers, network-weighted {row['network_sum_speedup']:.2f}x")


# ------------------------------------------------------------------------------------------------ sanitizer
def cmd_workload(args):
    """Both ops on a few representative shapes, in --dtypes (fp16 / bf16 take the tensor-core WMMA path, fp32
    the FMA path) and both layouts, checked against the composite; --triton: the Triton ops too. Exits
    non-zero on a mismatch; compute-sanitizer (memcheck / racecheck / synccheck) wraps this."""
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
    dtypes = [dtype_of(d) for d in args.dtypes.split(",")]
    suffixes = [""]
    if args.triton:
        import mnv4_kernels.triton  # noqa: F401  registers mnv4::*_triton
        suffixes.append("_triton")
    tol = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 1e-1}
    bad = 0
    for kind, cases, make, comp in (("uib", uib_cases, random_uib_args, F.uib),
                                    ("mqa", mqa_cases, random_mqa_args, F.mqa)):
        for case in cases:
            for dtype in dtypes:
                for cl in (False, True):
                    args_ = make(**case, dtype=dtype, device="cuda", channels_last=cl)
                    ref = oracle_f64(comp, args_)
                    for sfx in suffixes:
                        out = getattr(torch.ops.mnv4, kind + sfx)(*args_)
                        torch.cuda.synchronize()
                        err = rel_err(out, ref)
                        status = "ok" if err <= tol[dtype] else "MISMATCH"
                        bad += status != "ok"
                        log(f"{kind}{sfx} {case} {dtype} channels_last={cl}: rel_err {err:.2e} {status}")
    log(f"workload done: {bad} mismatches")
    sys.exit(1 if bad else 0)


# ------------------------------------------------------------------------------------------------ report
def _stages(work):
    rows = []
    path = os.path.join(work, "stages.tsv")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                name, rc, secs, note = (line.rstrip("\n").split("\t") + ["", "", "", ""])[:4]
                rows.append(dict(stage=name, rc=rc, seconds=secs, note=note))
    return rows


def _sanitizer_state(rc, note):
    """What a compute-sanitizer rc means with --error-exitcode 99 (note: the first telling log line)."""
    if rc == "0":
        return "ran: no errors"
    if rc == "99":
        return "ran: ERRORS reported"
    if rc in ("124", "137"):
        return "timed out"
    if rc == "skipped":
        return f"skipped ({note})"
    return f"did not run (rc {rc}: {note})" if note else f"failed (rc {rc})"


def cmd_report(args):
    os.makedirs(args.out, exist_ok=True)
    checks, parts = [], 0
    for name in sorted(os.listdir(args.work)):
        if name.startswith("check-") and name.endswith(".json"):
            parts += 1
            try:
                with open(os.path.join(args.work, name)) as f:
                    checks += json.load(f)
            except (OSError, ValueError) as e:
                checks.append(dict(what="part", part=name, ok=False, problem=f"unreadable: {e}"))
    if parts:
        write_json(os.path.join(args.out, "check.json"), checks)
    stages = _stages(args.work)
    sanitizer = {r["stage"].split(":", 1)[1]: _sanitizer_state(r["rc"], r["note"])
                 for r in stages if r["stage"].startswith("sanitize:")}
    e2e = []
    for name in sorted(os.listdir(args.out)):
        if name.endswith(".json") and name not in ("check.json", "status.json"):
            try:
                with open(os.path.join(args.out, name)) as f:
                    d = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(d, dict) and d.get("kind") == "gpu-e2e":
                e2e.append((name, d))
    status = dict(stages=stages, sanitizer=sanitizer, check=dict(cases=len(checks),
                                                                 failed=sum(not c.get("ok") for c in checks)),
                  results=[n for n, _ in e2e])
    write_json(os.path.join(args.out, "status.json"), status)

    lines = []
    info = os.path.join(args.work, "info.txt")
    if os.path.exists(info):
        with open(info) as f:
            lines += [ln.rstrip() for ln in f][:20]
    lines.append("")
    lines.append(f"{'stage':20s} {'rc':8s} {'seconds':>7s}  note")
    for r in stages:
        lines.append(f"{r['stage']:20s} {r['rc']:8s} {r['seconds']:>7s}  {r['note']}")
    lines.append("")
    lines.append(f"check: {len(checks)} cases, {status['check']['failed']} failed")
    for c in checks:
        if not c.get("ok"):
            what = {k: c[k] for k in ("kind", "form", "model", "backend", "dtype", "layout", "nan", "job") if k in c}
            lines.append(f"  FAIL {what}: {c.get('problem', '')}")
    for name, d in e2e:
        c = d.get("ceilings", {})
        lines.append("")
        lines.append(f"{name}: {d.get('device', {}).get('name')}, copy {c.get('copy_gbps', 0):.0f} GB/s, "
                     f"fp16 GEMM {c.get('gemm_tflops', 0):.0f} TFLOP/s; triton: {d.get('triton_configs')}")
        for r in d.get("records", []):
            extra = " ".join(f"{k[len('speedup_vs_'):]} {v:.2f}x" for k, v in r.items() if k.startswith("speedup_vs_"))
            lines.append(f"  {r['model']}@{r['res']} b{r['batch']:<4d} {r['impl']:12s} {r['median_ms']:9.3f} ms "
                         f"{r['img_per_s']:9.0f} img/s  err {r['rel_err_vs_fp32_reference']:.1e}  {extra}")
        for s in d.get("skipped", []):
            lines.append(f"  skipped {s['model']} b{s['batch']} {s['impl']}: {s['reason'][:200]}")
    if sanitizer:
        lines.append("")
        lines += [f"compute-sanitizer {tool}: {state}" for tool, state in sanitizer.items()]
    with open(os.path.join(args.out, "summary.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    log("\n".join(lines))


def dry_run_outputs(args):
    """Empty stand-ins for the files a real run writes, so that gpu_run.sh's dry run moves and counts them."""
    if args.cmd == "check":
        write_json(args.json, [])
    elif args.cmd in ("e2e", "layers"):
        out = args.out or os.environ.get("OUT") or os.path.join(ROOT, "benches", "results")
        name = "dry-run.json" if args.cmd == "e2e" else "dry-run-layers.json"
        write_json(os.path.join(out, name), dict(kind=f"gpu-{args.cmd}", dry_run=True, records=[], skipped=[]))


def validate(args):
    """Reject a bad value before anything runs (the dry run's check of gpu_run.sh's command lines)."""
    if hasattr(args, "models"):
        parse_models(args.models)
    if hasattr(args, "batches"):
        [int(b) for b in args.batches.split(",")]
    bad = [i for i in getattr(args, "impls", "").split(",") if i and i not in E2E_IMPLS]
    bad += [d for d in getattr(args, "dtypes", "").split(",") if d and d not in DTYPE_NAMES]
    if args.cmd == "check":
        bad += [b for b in args.backends.split(",") if b not in ("cuda", "triton")]
        bad += [w for w in args.what.split(",") if w not in ("ops", "models")]
        i, n = (int(v) for v in args.part.split("/"))
        if not 0 <= i < n:
            bad.append(args.part)
    if bad:
        raise SystemExit(f"gpu_suite.py {args.cmd}: unknown value(s) {', '.join(bad)}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("--backends", default="cuda,triton")
    c.add_argument("--what", default="ops,models", help="ops, models or both")
    c.add_argument("--part", default="0/1", help="I/N: this process runs every N-th case from the I-th")
    c.add_argument("--json", required=True, help="the records, rewritten after every case")
    e = sub.add_parser("e2e")
    w = sub.add_parser("warm")
    for q, impls in ((e, ",".join(E2E_IMPLS)), (w, "compile,ours-triton")):
        q.add_argument("--models", default="conv_medium@224,hybrid_medium@256")
        q.add_argument("--batches", default="256,1")
        q.add_argument("--impls", default=impls)
    e.add_argument("--max-seconds", type=float, default=2.0, help="timing per (model, batch)")
    lb = sub.add_parser("layers")
    lb.add_argument("--models", default="conv_medium,hybrid_medium")
    lb.add_argument("--batches", default="256,1")
    lb.add_argument("--dtype", default="float16", choices=DTYPE_NAMES)
    lb.add_argument("--compile", action="store_true", help="also time torch.compile of the composite (slow)")
    lb.add_argument("--triton", action="store_true", help="also time the Triton ops")
    lb.add_argument("--max-seconds", type=float, default=1.0, help="per layer and batch")
    for q in (e, lb):
        q.add_argument("--deadline", type=float, default=None, help="epoch seconds: skip what would overrun it")
        q.add_argument("--out", default=None, help="output folder (default: $OUT, else benches/results)")
    wl = sub.add_parser("workload")
    wl.add_argument("--tiny", action="store_true", help="the smallest shapes only (racecheck is slow)")
    wl.add_argument("--dtypes", default=",".join(DTYPE_NAMES))
    wl.add_argument("--triton", action="store_true", help="the Triton ops too")
    r = sub.add_parser("report")
    r.add_argument("--work", required=True, help="gpu_run.sh's work folder (stages.tsv, check-*.json)")
    r.add_argument("--out", required=True, help="the results folder")
    for q in (c, e, w, lb, wl, r):
        q.add_argument("--dry-run", action="store_true", help="parse the arguments, print them, exit")
    args = p.parse_args()
    validate(args)
    if args.dry_run:
        log(f"dry run: gpu_suite.py {args.cmd} {vars(args)}")
        dry_run_outputs(args)
        return
    if args.cmd != "report":
        global torch
        import torch as _torch

        torch = _torch
    {"check": cmd_check, "e2e": cmd_e2e, "warm": cmd_warm, "layers": cmd_layers, "workload": cmd_workload,
     "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
