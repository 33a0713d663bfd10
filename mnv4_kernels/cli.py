"""Command line: `python -m mnv4_kernels [run|infer|bench] ...` (run is the default).

run    build the fused model on the best backend here, check it against the reference on a fresh input,
       then time it side by side with PyTorch eager, torch.compile, onnxruntime, OpenVINO (f32, bf16, its
       default) and ExecuTorch XNNPACK where installed; JSON + PNG to --out.
infer  classify image files or folders with a timm checkpoint (top-5, ImageNet names for 1000 classes).
bench  per-layer and end-to-end microbenchmarks over the real MobileNetV4 layer table (see bench.py).
"""

import argparse
import copy
import json
import os
import sys
import time

import torch

DEFAULT_MODEL = "mobilenetv4_conv_small"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def _log(msg=""):
    print(msg, file=sys.stderr, flush=True)


def _dtype(name):
    try:
        return DTYPES[name]
    except KeyError:
        raise argparse.ArgumentTypeError(f"--dtype must be one of {sorted(DTYPES)}; got {name!r}")


def _common(p, batch_default=1):
    from mnv4_reference import MODEL_NAMES

    p.add_argument("--model", default=DEFAULT_MODEL, choices=MODEL_NAMES, metavar="NAME",
                   help=f"timm model name (default {DEFAULT_MODEL}; one of: {', '.join(MODEL_NAMES)})")
    p.add_argument("--checkpoint", help="a timm checkpoint file (.safetensors, .pth, .bin)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--dtype", type=_dtype, default=torch.float32, help="float32 | float16 | bfloat16")
    p.add_argument("--backend", default="auto", help="auto | cpu | cuda | triton | reference")
    p.add_argument("--batch", type=int, default=batch_default)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's default)")


def _reference(args, res, seed):
    """(reference model, input batch). From --checkpoint, else random weights with BatchNorm statistics
    taken from a calibration batch of >= 16 images that contains the checked input (then perturbed) and
    layer scales randomised, so every block matters and activations are realistic at this resolution."""
    from mnv4_reference import create_model, load_checkpoint, randomize_

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(max(16, args.batch), 3, res, res, generator=gen)
    if args.checkpoint:
        _log(f"  loading {args.checkpoint}")
        return load_checkpoint(args.model, args.checkpoint).eval(), x[:args.batch], "checkpoint"
    model = create_model(args.model)
    randomize_(model, seed=seed, calibration_input=x)
    return model.eval(), x[:args.batch], "random (BatchNorm statistics and layer scales randomised)"


# ----------------------------------------------------------------------------------------------- run
def cmd_run(args):
    import mnv4_kernels
    from mnv4_reference import pretrained_cfg
    from mnv4_reference.testing import rel_err

    from . import bench, report
    from .fuse import LOW_PRECISION_ERROR_FACTOR

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    res = args.res or pretrained_cfg(args.model)["input_size"][-1]
    _log(f"mnv4_kernels run: {args.model} @{res}, batch {args.batch}, {str(args.dtype).replace('torch.', '')}, "
         f"{device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for b in mnv4_kernels.backends().values():
        _log(f"  backend {b}")

    ref, x, weights = _reference(args, res, seed=int(time.time()) % 100000)
    fused = mnv4_kernels.fuse(ref, backend=args.backend, dtype=args.dtype).to(device)
    ref = ref.to(device)
    blocks = [(k, b) for _, k, b in fused.block_backends if k in ("uib", "mqa")]
    per = sorted({f"{k} on {b}" for k, b in blocks})
    _log(f"  fused model: {len(blocks)} UIB/MQA blocks ({', '.join(per)}); weights: {weights}")

    # 1. correctness on a fresh input
    x = x.to(device)
    with torch.inference_mode():
        want = ref(x)
        got = fused(x.to(args.dtype)).float()
        err = rel_err(got, want)
        check = {"rel_err_vs_reference_fp32": err}
        if args.dtype == torch.float32:
            check["bound"] = 1e-5
        else:  # the accuracy contract: a multiple of the reference's own error in that dtype
            ref_lp = copy.deepcopy(ref).to(args.dtype)
            check["reference_own_error"] = rel_err(ref_lp(x.to(args.dtype)).float(), want)
            check["bound"] = LOW_PRECISION_ERROR_FACTOR * check["reference_own_error"]
        check["ok"] = err <= check["bound"]
    print(f"correctness: fused vs reference relative error {err:.2e} (bound {check['bound']:.1e}) "
          f"-> {'OK' if check['ok'] else 'FAIL'}")

    # 2. side-by-side timing: bench.e2e_case, the runner `bench` and benches/e2e_cpu.py use
    if args.candidates:
        names = bench.parse_e2e(args.candidates)
    else:
        names = bench.default_e2e(device, args.dtype, compile=not args.no_compile)
        if args.no_onnx:
            names = [n for n in names if not n.startswith("onnxruntime")]
    ours = f"ours-{bench.dtype_name(args.dtype)}"
    names = list(dict.fromkeys([ours] + names))
    xin = x.to(args.dtype)

    def run_fused():  # the model checked above, on the backend asked for
        with torch.inference_mode():
            return fused(xin)

    _log(f"  building {', '.join(names)} (exports and compiles can take a minute) ...")
    rec = bench.e2e_case(ref, x, names, repeats=args.repeats, max_seconds=args.max_seconds, log=_log,
                         progress="timing", blocks=dict(inner=5, settle=2) if device.type == "cpu" else None,
                         prebuilt={ours: run_fused})
    eager = f"eager-{bench.dtype_name(args.dtype)}"
    rows = []
    for name, c in rec["candidates"].items():
        row = dict(impl=name, **c)
        if eager in rec["candidates"]:
            row["speedup_vs_eager"] = rec["candidates"][eager]["median_ms"] / c["median_ms"]
        rows.append(row)
    print(report.format_table(rows, [("impl", "implementation", "{}"), ("precision", "precision", "{}"),
                                     ("median_ms", "median ms", "{:.3f}"), ("p10_ms", "p10", "{:.3f}"),
                                     ("p90_ms", "p90", "{:.3f}"), ("img_per_s", "img/s", "{:.1f}"),
                                     ("speedup_vs_eager", "x eager", "{:.2f}"),
                                     ("rel_err_vs_reference_fp32", "rel err", "{:.1e}")]))
    for name, why in rec["skipped"].items():
        print(f"  (no {name}: {why})")

    out = args.out or os.path.join("out", f"run-{args.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(out, exist_ok=True)
    payload = dict(env=report.env_info(device), model=args.model, res=res, batch=args.batch,
                   dtype=str(args.dtype).replace("torch.", ""), weights=weights, correctness=check,
                   block_backends=fused.block_backends, timing=rec["timing"], results=rows, skipped=rec["skipped"])
    report.write_json(os.path.join(out, "run.json"), payload)
    report.bar_plot(os.path.join(out, "run.png"), [r["impl"] for r in rows], [r["median_ms"] for r in rows],
                    f"{args.model} @{res} batch {args.batch} ({device}, {torch.get_num_threads()} threads)",
                    "median latency (ms), lower is better")
    print(f"wrote {out}/run.json and {out}/run.png")
    return 0 if check["ok"] else 1


# --------------------------------------------------------------------------------------------- infer
def _image_files(paths):
    from .pipeline import image_files

    return image_files(paths)


class _Output:
    """infer's results as they come: text (top-k per image) or one JSON document written incrementally
    ({"model", "checkpoint", "results": [...], "errors": [...]}), so nothing grows with the number of images
    but the (short) error list."""

    def __init__(self, args, stream=None):
        self.json, self.stream, self.errors, self.n = args.json, stream or sys.stdout, [], 0
        if self.json:
            head = json.dumps({"model": args.model, "checkpoint": args.checkpoint})[:-1]
            self.stream.write(head + ', "results": [')

    def result(self, path, top):
        self.n += 1
        if self.json:
            self.stream.write(("\n" if self.n == 1 else ",\n") + json.dumps({"path": path, "top": top}))
        else:
            lines = [path] + [f"  {k}. {t['label']:<40s} {100 * t['prob']:6.2f}%  (class {t['index']})"
                              for k, t in enumerate(top, 1)]
            self.stream.write("\n".join(lines) + "\n")

    def error(self, path, message):
        self.errors.append({"path": path, "error": message})
        if not self.json:
            print(f"error: {path}: {message}", file=sys.stderr)

    def close(self):
        if self.json:
            self.stream.write('], "errors": ' + json.dumps(self.errors) + "}\n")
        self.stream.flush()
        return 0 if self.n and not self.errors else (1 if self.n else 2)


def cmd_infer(args):
    import itertools

    if args.batch < 1 or args.topk < 1 or (args.workers is not None and args.workers < 1):
        print("error: --batch, --topk and --workers must be >= 1", file=sys.stderr)
        return 2
    if args.ray:
        from .distributed import cmd_infer_ray

        return cmd_infer_ray(args)
    if args.ray_output or args.ray_address:
        print("error: --ray-output and --ray-address need --ray", file=sys.stderr)
        return 2

    import mnv4_kernels

    from .labels import class_name
    from .pipeline import BatchPredictor, EvalTransform, Progress, predict

    if args.threads:
        torch.set_num_threads(args.threads)
    files = _image_files(args.paths)
    first = next(files, None)
    if first is None:
        print("infer: no image files found in " + ", ".join(args.paths), file=sys.stderr)
        return 2
    model = mnv4_kernels.load(args.model, checkpoint=args.checkpoint, device=args.device, dtype=args.dtype,
                              backend=args.backend)
    transform = EvalTransform(model.pretrained_cfg, draft=0 if args.exact_decode else 2)
    predictor = BatchPredictor(model, topk=args.topk, device=args.device, dtype=args.dtype)
    progress = Progress(enabled=args.progress or (sys.stderr.isatty() and not args.no_progress))
    out = _Output(args)
    for p in predict(itertools.chain([first], files), transform, predictor, batch_size=args.batch,
                     workers=args.workers, progress=progress):
        if p.error is not None:
            out.error(p.key, p.error)
        else:
            out.result(p.key, [{"index": ci, "label": class_name(ci, model.num_classes), "prob": pi}
                               for ci, pi in p.top])
    return out.close()


# --------------------------------------------------------------------------------------------- main
def build_parser():
    p = argparse.ArgumentParser(prog="python -m mnv4_kernels", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd")

    r = sub.add_parser("run", help="the main job: correctness check + side-by-side timing (default)")
    _common(r)
    r.add_argument("--res", type=int, default=None, help="input size (default: the model's pretrained size)")
    r.add_argument("--repeats", type=int, default=30)
    r.add_argument("--max-seconds", type=float, default=60.0, help="stop timing after this long (>= 3 rounds)")
    r.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    r.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime column")
    r.add_argument("--candidates", default=None,
                   help="comma-separated instead of the default columns: ours-/eager-/compile-{fp32,bf16,fp16}, "
                        "onnxruntime-fp32, openvino-f32, openvino-bf16, openvino-default, xnnpack-fp32")
    r.add_argument("--out", help="folder for run.json and run.png (default out/run-<model>-<time>)")
    r.set_defaults(func=cmd_run)

    i = sub.add_parser("infer", help="classify images with a checkpoint")
    _common(i, batch_default=16)
    i.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    i.add_argument("--topk", type=int, default=5)
    i.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    i.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    i.add_argument("--no-progress", action="store_true", help="no progress line on a terminal either")
    i.add_argument("--workers", type=int, default=None, help="decode threads (default: the number of CPUs)")
    i.add_argument("--exact-decode", action="store_true",
                   help="decode large JPEGs in full instead of DCT-domain downscaling (bit-identical to the "
                        "plain reference transform; several times slower on photos)")
    i.add_argument("--ray", action="store_true", help="run on a Ray cluster with Ray Data (pip install .[ray])")
    i.add_argument("--ray-address", default=None,
                   help="the cluster to join (e.g. HEAD_IP:6379 or ray://HEAD_IP:10001); default: RAY_ADDRESS, "
                        "else a running local cluster, else a new local instance")
    i.add_argument("--ray-actors", type=int, default=None,
                   help="model actors (default: one per --threads CPUs in the cluster)")
    i.add_argument("--ray-gpus", type=float, default=0.0,
                   help="GPUs per model actor (> 0: the actors run on GPU nodes with the cuda backend)")
    i.add_argument("--ray-output", default=None,
                   help="write the results from the cluster's workers to this folder (JSONL files, or Parquet "
                        "with --ray-format parquet) instead of printing them here")
    i.add_argument("--ray-format", choices=("jsonl", "parquet"), default="jsonl")
    i.set_defaults(func=cmd_infer)

    b = sub.add_parser("bench", help="per-layer and end-to-end microbenchmarks")
    from . import bench

    bench.add_arguments(b)
    b.set_defaults(func=bench.main)
    return p


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "infer", "bench", "-h", "--help"):
        argv = ["run"] + argv
    args = build_parser().parse_args(argv)
    from mnv4_reference import CheckpointError

    from .fuse import BackendError

    try:
        return args.func(args)
    except (CheckpointError, BackendError, FileNotFoundError) as e:  # user errors: a message, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
