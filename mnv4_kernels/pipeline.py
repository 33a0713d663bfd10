"""Fast eval preprocessing and the overlapped decode -> batch -> model pipeline behind `infer`.

EvalTransform is timm's eval transform (mnv4_reference.preprocess: shorter side to floor(size / crop_pct),
bicubic, centre crop, per-model mean/std) made cheap:
  - a JPEG at least 2 * `draft` times the resize target is decoded by libjpeg at 1/2, 1/4 or 1/8 scale (PIL's
    draft mode: a downscale in the DCT domain, so the full-resolution image never exists), keeping at least
    `draft` times the target; the exact bicubic resize then runs from there;
  - resize and crop stay on uint8 (a grayscale image is resized as one channel); a draft-decoded image is
    resampled over the crop's source region only (PIL's resize box), not resized whole and then cropped;
  - one pass converts to float and normalises, x * (1 / (255 std)) - mean / std, straight into a slot of a
    preallocated channels_last batch.
Without draft decoding (draft=0, and for every image below the draft threshold) the uint8 crop is bit-identical
to the reference's. With it, the DCT-domain reduction is a different low-pass filter from the bicubic kernel it
replaces, so the result differs near sharp edges: tests/test_pipeline.py and benches/pipeline_cpu.py state by how
much. Images are taken as displayed (an EXIF orientation tag is applied), as the reference's load_image.

Pipeline: a bounded pool of decode threads (Pillow and numpy release the GIL while decoding, resizing and
normalising) fills a ring of preallocated batches while the model runs on the previous one; results come out in
input order; an unreadable file becomes an error record, never the end of the run.
"""

import io
import math
import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Iterator, List, Optional

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from mnv4_reference.preprocess import _cfg_of, eval_geometry

__all__ = ["EvalTransform", "image_files", "Prediction", "BatchPredictor", "predict", "Progress"]

_ORIENTATION = 0x0112
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class EvalTransform:
    """timm's eval transform for one model config, fast (see the module docstring).

    name_or_cfg: a model name, a cfg dict (input_size, crop_pct, mean, std) or a model carrying
    `pretrained_cfg`. size / crop_pct override the cfg. draft: keep a draft-decoded JPEG at least this many
    times the resize target (an int >= 1); 0 decodes every image in full (bit-identical to the reference).
    """

    def __init__(self, name_or_cfg, size: int = None, crop_pct: float = None, draft: int = 2):
        cfg = _cfg_of(name_or_cfg)
        s = size if size is not None else cfg["input_size"]
        self.size = int(s[-1]) if isinstance(s, (tuple, list)) else int(s)
        self.crop_pct = float(crop_pct if crop_pct is not None else cfg.get("crop_pct", 0.875))
        if cfg.get("interpolation", "bicubic") != "bicubic":
            raise ValueError(f"only bicubic interpolation is implemented; cfg asks for {cfg['interpolation']!r}")
        if not isinstance(draft, int) or draft < 0:
            raise ValueError(f"draft must be an int >= 0 (0 = always decode in full); got {draft!r}")
        if self.size < 1 or not 0 < self.crop_pct <= 1:
            raise ValueError(f"size must be >= 1 and 0 < crop_pct <= 1; got {self.size}, {self.crop_pct}")
        self.draft = draft
        std = np.asarray(cfg["std"], dtype=np.float64)
        self.scale = (1.0 / (255.0 * std)).astype(np.float32)
        self.shift = (np.asarray(cfg["mean"], dtype=np.float64) / std).astype(np.float32)

    # -- decoding -------------------------------------------------------------------------------------
    @staticmethod
    def open(source) -> Image.Image:
        """A path, bytes or a binary file object -> an opened (not yet decoded) PIL image."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            return Image.open(io.BytesIO(bytes(source)))
        if isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            if not os.path.exists(path):
                raise FileNotFoundError(f"image not found: {path}")
            with open(path, "rb") as f:  # one read: PIL's chunked reads cost Python time per 64 KiB
                return Image.open(io.BytesIO(f.read()))
        if hasattr(source, "read"):
            return Image.open(source)
        raise TypeError(f"expected a path, bytes or a file object; got {type(source).__name__}")

    def decode(self, source) -> tuple:
        """source (path, bytes, file object or PIL image) -> (uint8 array [S, S, 3] or [S, S] for grayscale,
        draft scale used: 1 = full decode). Raises ValueError naming the source if it cannot be decoded."""
        try:
            img = source if isinstance(source, Image.Image) else self.open(source)
            scale = 1
            orientation = img.getexif().get(_ORIENTATION, 1)
            if img.format == "JPEG" and self.draft:
                w, h = img.size
                if orientation in (5, 6, 7, 8):
                    w, h = h, w
                nw, nh, _, _ = eval_geometry(w, h, self.size, self.crop_pct)
                if img.size != (w, h):
                    nw, nh = nh, nw
                # PIL picks the largest scale 1/s (s in 8, 4, 2) with the decoded size >= the size asked for
                req = (self.draft * nw, self.draft * nh)
                if img.size[0] >= 2 * req[0] and img.size[1] >= 2 * req[1]:
                    full = img.size
                    img.draft(img.mode, req)
                    scale = full[0] // img.size[0] if img.size != full else 1
            img.load()
            if orientation not in (None, 1):
                img = ImageOps.exif_transpose(img)
            if img.mode not in ("RGB", "L"):
                img = img.convert("RGB")
            nw, nh, left, top = eval_geometry(img.size[0], img.size[1], self.size, self.crop_pct)
            if nw < self.size or nh < self.size:
                raise ValueError(f"image {nw}x{nh} is smaller than the crop {self.size}")
            if scale > 1:
                # resample only the crop's own source region: the same filter and centres as resizing the whole
                # image and cropping, but PIL takes the box in float32, so a centre may move by ~1e-5 px and a
                # pixel by 1 level; that is only acceptable where draft decoding already made the result approximate
                sx, sy = img.size[0] / nw, img.size[1] / nh
                s = self.size
                img = img.resize((s, s), Image.BICUBIC, box=(left * sx, top * sy, (left + s) * sx, (top + s) * sy))
            else:
                if (nw, nh) != img.size:
                    img = img.resize((nw, nh), Image.BICUBIC)
                img = img.crop((left, top, left + self.size, top + self.size))
            return np.asarray(img), scale
        except FileNotFoundError:
            raise
        except _DECODE_ERRORS as e:
            name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__
            why = "not an image file PIL can identify" if isinstance(e, UnidentifiedImageError) else str(e)
            raise ValueError(f"cannot read image {name}: {why}") from e

    def normalize_into(self, pixels: np.ndarray, out: np.ndarray) -> np.ndarray:
        """uint8 [S, S, 3] (or [S, S]) -> out float32 [S, S, 3] (an NHWC view), in one fused pass."""
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        np.multiply(pixels, self.scale, out=out)
        np.subtract(out, self.shift, out=out)
        return out

    def new_batch(self, n: int) -> torch.Tensor:
        """An uninitialised float32 [n, 3, S, S] batch in channels_last (NHWC in memory)."""
        return torch.empty(n, self.size, self.size, 3).permute(0, 3, 1, 2)

    def into(self, source, batch: torch.Tensor, index: int) -> int:
        """Decode, resize, crop and normalise `source` into batch[index]; returns the draft scale used."""
        pixels, scale = self.decode(source)
        self.normalize_into(pixels, batch[index].permute(1, 2, 0).numpy())
        return scale

    def __call__(self, sources) -> torch.Tensor:
        """One source or a list -> normalised float32 [N, 3, S, S] channels_last."""
        if isinstance(sources, (str, os.PathLike, bytes, Image.Image)):
            sources = [sources]
        sources = list(sources)
        batch = self.new_batch(len(sources))
        for i, s in enumerate(sources):
            self.into(s, batch, i)
        return batch


def image_files(paths: Iterable) -> Iterator[str]:
    """Image files under `paths` (files or folders), lazily: folders walked in sorted order, keeping files
    whose extension PIL registers; a path given explicitly is kept whatever its extension."""
    exts = {e.lower() for e in Image.registered_extensions()}
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for f in sorted(files):
                    if os.path.splitext(f)[1].lower() in exts:
                        yield os.path.join(root, f)
        else:
            yield p


@dataclass
class Prediction:
    """One input's result: `top` = [(class index, probability), ...] best first, or `error` (then top is []);
    `labels`, the class names of `top`, where the producer knows them."""
    key: object
    top: List[tuple] = field(default_factory=list)
    error: Optional[str] = None
    labels: List[str] = field(default_factory=list)


class BatchPredictor:
    """A fused model and its top-k head. Batches of one image are run as two identical rows: the kernels
    take another code path at batch 1 whose rounding differs in the last bits, so without this an image's
    probabilities would depend on how many images happened to share its batch."""

    def __init__(self, model, topk: int = 5, device="cpu", dtype=torch.float32):
        self.model, self.topk, self.device, self.dtype = model, topk, torch.device(device), dtype

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor):
        n = batch.shape[0]
        if n == 0:
            return [], []
        x = batch if n > 1 else batch.expand(2, -1, -1, -1).contiguous(memory_format=torch.channels_last)
        x = x.to(self.device, self.dtype, non_blocking=True)
        probs = self.model(x)[:n].float().softmax(-1).cpu()
        top = probs.topk(min(self.topk, probs.shape[-1]), dim=-1)
        return top.indices.tolist(), top.values.tolist()


class Progress:
    """A one-line progress display on a stream (images done, images/s, errors), redrawn at most 10x a second."""

    def __init__(self, enabled: bool, stream=None, label="images"):
        self.enabled, self.stream, self.label = enabled, stream or sys.stderr, label
        self.t0 = self.last = time.perf_counter()
        self.done = self.errors = 0

    def update(self, done: int, errors: int = 0, final: bool = False):
        self.done += done
        self.errors += errors
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.1 and not final):
            return
        self.last = now
        rate = self.done / max(now - self.t0, 1e-9)
        err = f", {self.errors} error{'s' if self.errors != 1 else ''}" if self.errors else ""
        print(f"\r  {self.done} {self.label}, {rate:.1f} images/s{err}", end="\n" if final else "",
              file=self.stream, flush=True)


def predict(sources: Iterable, transform: EvalTransform, predictor: BatchPredictor, batch_size: int = 32,
            workers: int = None, prefetch: int = 2, progress: Optional[Progress] = None) -> Iterator[Prediction]:
    """Classify `sources` (paths, bytes, file objects or PIL images) in input order, lazily.

    `workers` decode threads (default: the number of CPUs) fill up to `prefetch` + 1 preallocated batches of
    `batch_size` ahead of the model, so memory stays bounded whatever the number of sources. A source that
    cannot be read yields a Prediction with `error` set; the others are unaffected."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if prefetch < 0:
        raise ValueError(f"prefetch must be >= 0; got {prefetch}")
    workers = workers or os.cpu_count() or 1
    free = [transform.new_batch(batch_size) for _ in range(prefetch + 1)]
    it = iter(sources)
    pending = deque()  # (batch tensor, [(source, future)])

    def _fill(pool):
        while free:
            chunk = [s for _, s in zip(range(batch_size), it)]
            if not chunk:
                return
            buf = free.pop()
            pending.append((buf, [(s, pool.submit(transform.into, s, buf, i)) for i, s in enumerate(chunk)]))

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        _fill(pool)
        while pending:
            buf, items = pending.popleft()
            ok, errors = [], {}
            for i, (src, fut) in enumerate(items):
                try:
                    fut.result()
                    ok.append(i)
                except Exception as e:  # one bad image must not lose the others
                    errors[i] = f"{type(e).__name__}: {e}"
            x = buf[:len(items)] if len(ok) == len(items) else buf[ok]
            # the model runs while the decode threads fill the batches queued behind this one
            indices, probs = predictor(x)
            free.append(buf)
            _fill(pool)
            row = iter(zip(indices, probs))
            for i, (src, _) in enumerate(items):
                if i in errors:
                    yield Prediction(src, error=errors[i])
                else:
                    ci, pi = next(row)
                    yield Prediction(src, top=list(zip(ci, pi)))
            if progress is not None:
                progress.update(len(items), len(errors))
    if progress is not None:
        progress.update(0, 0, final=True)
