"""Synthetic photo-like images for tests and benchmarks (no dataset download needed).

A photo's cost to decode grows with its compressed size, and a downscale's error with its sharp edges, so a
plain gradient or pure noise would misstate both: these have a smooth colour field, mid-scale texture, hard-edged
discs and sensor-like grain (`grain`, the noise's standard deviation in levels, sets the entropy).
"""

import os

import numpy as np
from PIL import Image

__all__ = ["photo", "checker", "write_jpeg_folder"]


def photo(w: int, h: int, seed: int = 0, grain: float = 4.0) -> Image.Image:
    """An RGB w x h photo-like image, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, h // 300), max(2, w // 300), 3), dtype=np.uint8)
    a = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.float32).copy()
    tex = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16)), dtype=np.uint8)
    a += (np.asarray(Image.fromarray(tex).resize((w, h), Image.BILINEAR), dtype=np.float32)[..., None] - 128) * 0.3
    for _ in range(6):
        r = rng.uniform(0.05, 0.3) * min(w, h)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        x0, x1 = int(max(0, cx - r)), int(min(w, cx + r + 1))
        y0, y1 = int(max(0, cy - r)), int(min(h, cy + r + 1))
        if x1 <= x0 or y1 <= y0:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        m = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        sub = a[y0:y1, x0:x1]
        sub[m] = sub[m] * 0.3 + rng.uniform(0, 255, 3).astype(np.float32) * 0.7
    if grain:
        a += rng.normal(0, grain, (h, w, 1)).astype(np.float32)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def checker(w: int, h: int, cell: int = 97) -> Image.Image:
    """An RGB w x h black/white checkerboard of `cell` px squares: the worst case for a downscale's filter (all
    its energy sits in hard edges), where two different low-pass filters differ the most."""
    yy, xx = np.ogrid[:h, :w]
    a = (((yy // cell) + (xx // cell)) % 2 * 255).astype(np.uint8)
    return Image.fromarray(a).convert("RGB")


def write_jpeg_folder(folder, n: int, w: int, h: int, distinct: int = 4, quality: int = 90, grain: float = 4.0):
    """n JPEGs of w x h in `folder` (img00000.jpg, ...), cycling through `distinct` different images (generating a
    12 MP image takes seconds; decoding a copy costs the same as decoding a new one). Returns the paths."""
    os.makedirs(folder, exist_ok=True)
    blobs = []
    for k in range(min(distinct, n)):
        path = os.path.join(folder, f"img{k:05d}.jpg")
        photo(w, h, seed=k, grain=grain).save(path, "JPEG", quality=quality)
        with open(path, "rb") as f:
            blobs.append(f.read())
    paths = []
    for i in range(n):
        path = os.path.join(folder, f"img{i:05d}.jpg")
        if i >= len(blobs):
            with open(path, "wb") as f:
                f.write(blobs[i % len(blobs)])
        paths.append(path)
    return paths
