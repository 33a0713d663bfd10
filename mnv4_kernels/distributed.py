"""Batch classification on a Ray cluster with Ray Data (`pip install .[ray]`).

    files / folders / URIs, or a Ray Dataset of encoded images (e.g. ray.data.read_parquet)
      -> map_batches(decode): tasks run the same EvalTransform as the local pipeline and ship uint8 crops
      -> map_batches(classifier actor pool): each actor loads the fused model once (the cpu backend with its own
         thread count; cuda when it is given a GPU), normalises into a channels_last batch, top-k
      -> a Dataset of results {path, error, top_index, top_prob, top_label}: streamed back, or written by the
         workers as JSONL or Parquet.

Ray Data streams blocks between the stages with backpressure, so no stage holds the whole dataset. The fused model's
output for an image does not depend on its batch (BatchPredictor), so the results equal the local `infer`'s
exactly. An image that cannot be decoded gets an error in its row; the run goes on.
"""

import os
import tempfile
from typing import Iterator, Optional

import numpy as np
import torch

from .pipeline import BatchPredictor, EvalTransform, Prediction, image_files

__all__ = ["classify", "predictions", "write", "cmd_infer_ray"]

RESULT_COLUMNS = ("path", "error", "top_index", "top_prob", "top_label")
DECODE_TASK_MEMORY = 256 * 2**20


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ImportError("the Ray path needs Ray Data: pip install '.[ray]' (ray[data]==2.60.0)") from e
    return ray


def _decode_batch(batch, *, cfg, draft, key_column, bytes_column):
    """{key, [bytes]} -> {path, pixels uint8 [n, S, S, 3], error ('' when decoded)}. Reads the file when no
    bytes column is given."""
    t = EvalTransform(cfg, draft=draft)
    keys = batch[key_column]
    data = batch[bytes_column] if bytes_column is not None else None
    pixels = np.zeros((len(keys), t.size, t.size, 3), dtype=np.uint8)
    errors = np.full(len(keys), "", dtype=object)
    for i, key in enumerate(keys):
        try:
            src = bytes(data[i]) if data is not None else str(key)
            px, _ = t.decode(src)
            pixels[i] = px[:, :, None] if px.ndim == 2 else px
        except Exception as e:  # reported in the row; the other images go on
            errors[i] = f"{type(e).__name__}: {e}"
    return {"path": np.asarray([str(k) for k in keys], dtype=object), "pixels": pixels, "error": errors}


class _Classifier:
    """An actor: the fused model, loaded once."""

    def __init__(self, model_name, checkpoint, checkpoint_suffix, cfg, topk, dtype, backend, threads, use_gpu):
        import mnv4_kernels

        from .labels import class_name

        if threads:
            torch.set_num_threads(threads)
        device = "cuda" if use_gpu else "cpu"
        ray = _ray()
        if isinstance(checkpoint, ray.ObjectRef):
            checkpoint = ray.get(checkpoint)
        path, tmp = checkpoint, None
        if isinstance(checkpoint, (bytes, bytearray)):  # shipped through the object store: no shared disk needed
            tmp = tempfile.NamedTemporaryFile(suffix=checkpoint_suffix, delete=False)
            tmp.write(checkpoint)
            tmp.close()
            path = tmp.name
        try:
            model = mnv4_kernels.load(model_name, checkpoint=path, device=device, dtype=dtype,
                                      backend="cuda" if use_gpu and backend == "auto" else backend)
        finally:
            if tmp is not None:
                os.unlink(tmp.name)
        self.num_classes = model.num_classes
        self.class_name = class_name
        self.transform = EvalTransform(cfg)
        self.predict = BatchPredictor(model, topk=topk, device=device, dtype=dtype)

    def __call__(self, batch):
        import pandas as pd

        errors = [str(e) for e in batch["error"]]
        ok = [i for i, e in enumerate(errors) if not e]
        x = self.transform.new_batch(len(ok))
        for j, i in enumerate(ok):
            self.transform.normalize_into(batch["pixels"][i], x[j].permute(1, 2, 0).numpy())
        indices, probs = self.predict(x)
        n = len(errors)
        top_index, top_prob, top_label = [[] for _ in range(n)], [[] for _ in range(n)], [[] for _ in range(n)]
        for i, ci, pi in zip(ok, indices, probs):
            top_index[i], top_prob[i] = ci, pi
            top_label[i] = [self.class_name(c, self.num_classes) for c in ci]
        return pd.DataFrame({"path": [str(p) for p in batch["path"]], "error": errors, "top_index": top_index,
                             "top_prob": top_prob, "top_label": top_label})


def classify(source, model: str = "mobilenetv4_conv_small", checkpoint: Optional[str] = None, *,
             key_column: str = "path", bytes_column: str = "bytes", batch_size: int = 32, topk: int = 5,
             actors: Optional[int] = None, threads_per_actor: int = 1, gpus_per_actor: float = 0.0,
             dtype=torch.float32, backend: str = "auto", exact_decode: bool = False, preserve_order: bool = True):
    """A lazy Ray Dataset of top-k results (columns path, error, top_index, top_prob, top_label).

    source: a path, URI (s3://..., read with ray.data.read_binary_files) or a list of them (files and folders;
    local folders are listed as the local `infer` lists them), or a ray.data.Dataset with `bytes_column`
    (encoded image bytes) and `key_column` (an id copied to the result's `path`), e.g. read_parquet(...).
    checkpoint: a local file; its bytes go to the actors through the object store.
    actors: model actors (default: the cluster's CPUs // (2 * threads_per_actor), at least 1, leaving the rest
    of the CPUs to the decode tasks); gpus_per_actor > 0 puts them on GPU nodes with the cuda backend.
    Call ray.init(...) first (or let Ray start a local instance)."""
    ray = _ray()
    from mnv4_reference import MODEL_NAMES, pretrained_cfg

    if model not in MODEL_NAMES:
        raise ValueError(f"unknown model {model!r}; expected one of: {', '.join(MODEL_NAMES)}")
    if batch_size < 1 or topk < 1 or threads_per_actor < 1:
        raise ValueError("batch_size, topk and threads_per_actor must be >= 1")
    cfg = pretrained_cfg(model)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = preserve_order

    if isinstance(source, ray.data.Dataset):
        ds, bytes_col = source, bytes_column
        names = source.schema().names if source.schema() is not None else []
        missing = [c for c in (key_column, bytes_column) if c not in names]
        if missing:
            raise ValueError(f"the dataset has no column {missing[0]!r} (columns: {names}); set key_column / "
                             f"bytes_column")
    else:
        paths = [os.fspath(source)] if isinstance(source, (str, os.PathLike)) else [os.fspath(p) for p in source]
        if any("://" in p for p in paths):
            from PIL import Image

            exts = sorted({e.lstrip(".").lower() for e in Image.registered_extensions()})
            ds = ray.data.read_binary_files(paths, include_paths=True, file_extensions=exts)
            key_column, bytes_col = "path", "bytes"
        else:
            files = list(image_files(paths))
            if not files:
                raise FileNotFoundError("no image files found in " + ", ".join(paths))
            ds = ray.data.from_items([{"path": f} for f in files])
            key_column, bytes_col = "path", None

    # `memory` reserves what one decode task may need (a full decode of a 12 MP PNG plus its RGB copy); as a
    # remote argument the model actors lack, it also keeps Ray Data from fusing decoding into the actors, where
    # it would run behind the model on the actor's cores instead of beside it on the others
    decoded = ds.map_batches(_decode_batch, batch_size=batch_size, batch_format="numpy", num_cpus=1,
                             memory=DECODE_TASK_MEMORY,
                             fn_kwargs=dict(cfg=cfg, draft=0 if exact_decode else 2, key_column=key_column,
                                            bytes_column=bytes_col))
    if actors is None:
        cpus = int(ray.cluster_resources().get("CPU", 2))
        actors = max(1, cpus // (2 * threads_per_actor))
    ckpt, suffix = None, None
    if checkpoint is not None:
        if not os.path.exists(checkpoint):
            raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
        with open(checkpoint, "rb") as f:
            ckpt = ray.put(f.read())
        suffix = os.path.splitext(checkpoint)[1]
    return decoded.map_batches(
        _Classifier, batch_size=batch_size, batch_format="numpy", concurrency=actors,
        num_cpus=threads_per_actor, num_gpus=gpus_per_actor or None,
        fn_constructor_kwargs=dict(model_name=model, checkpoint=ckpt, checkpoint_suffix=suffix, cfg=cfg, topk=topk,
                                   dtype=dtype, backend=backend, threads=threads_per_actor,
                                   use_gpu=gpus_per_actor > 0))


def predictions(results) -> Iterator[Prediction]:
    """Stream a classify() Dataset back to this process as Predictions (key = path; top = [(index, prob)])."""
    for row in results.iter_rows():
        if row["error"]:
            yield Prediction(row["path"], error=row["error"])
        else:
            yield Prediction(row["path"], top=[(int(c), float(p)) for c, p in zip(row["top_index"], row["top_prob"])],
                             labels=[str(x) for x in row["top_label"]])


def write(results, path: str, fmt: str = "jsonl"):
    """Have the workers write a classify() Dataset to a folder: JSON lines (probabilities to 15 decimal places,
    pandas' most) or Parquet files (exact)."""
    if fmt == "jsonl":
        results.write_json(path, double_precision=15)
    elif fmt == "parquet":
        results.write_parquet(path)
    else:
        raise ValueError(f"format must be 'jsonl' or 'parquet'; got {fmt!r}")


def cmd_infer_ray(args):
    """`python -m mnv4_kernels infer --ray ...`: the same output as the local infer, or files with --ray-output."""
    import sys

    from .cli import _Output

    ray = _ray()
    if not args.progress and (args.no_progress or not sys.stderr.isatty()):
        ray.data.DataContext.get_current().enable_progress_bars = False
    ray.init(address=args.ray_address, log_to_driver=False, include_dashboard=False)
    try:
        ds = classify(args.paths, args.model, args.checkpoint, batch_size=args.batch, topk=args.topk,
                      actors=args.ray_actors, threads_per_actor=args.threads or 1, gpus_per_actor=args.ray_gpus,
                      dtype=args.dtype, backend=args.backend, exact_decode=args.exact_decode)
        if args.ray_output:
            write(ds, args.ray_output, args.ray_format)
            print(f"wrote the results to {args.ray_output} ({args.ray_format})", file=sys.stderr)
            return 0
        out = _Output(args)
        for p in predictions(ds):
            if p.error is not None:
                out.error(p.key, p.error)
            else:
                out.result(p.key, [{"index": c, "label": name, "prob": q} for (c, q), name in zip(p.top, p.labels)])
        return out.close()
    finally:
        ray.shutdown()
