"""Input pipeline benchmark on generated JPEG folders (500x375 and 12 MP 4032x3024 photo-like images).

1. preprocess, one thread, CPU time per image: the plain reference (preprocess(load_image(f))) against the fast
   EvalTransform (draft decoding) and the fast one with --exact-decode semantics (draft=0), interleaved;
2. the decode bound, one thread, CPU time per 12 MP JPEG (bytes in memory): PIL at 1/8 scale (libjpeg's smallest
   DCT scale: every coefficient is still Huffman-decoded, only the IDCT shrinks to the DC term), at the scale the
   transform uses and in full, against the other decoders pip installs: simplejpeg, OpenCV, PyTurboJPEG (all
   libjpeg-turbo), kornia-rs (libjpeg-turbo, and zune-jpeg, a Rust decoder), ajpegli and pyjpegli (Google's
   jpegli); the last three have no DCT scaling, so full decodes only; a missing one is skipped with the reason.
   The fastest 1/8 decode is the floor of any preprocess that reads every coefficient, and with the model-alone
   rate it bounds infer's 12 MP / 500x375 per-image ratio on these cores;
3. draft accuracy: max |fast - reference| in uint8 levels (before normalisation) and CPU time for draft keeping
   >= 1x, >= 2x, >= 4x the resize target and a full decode, on generated photo-like JPEGs and a black/white checker;
4. throughput on all cores (Conv-S, random weights in a temporary safetensors file): the pipeline as `infer` runs
   it (startup excluded), the model alone on pre-decoded batches, decoding alone; the bound for two stages sharing
   the cores is 1 / (1 / decode + 1 / model) images/s;
5. --memory: peak RSS of `python -m mnv4_kernels infer --json` on 1,000 and 10,000 small JPEGs (subprocesses).

    python benches/pipeline_cpu.py [--sections preprocess,bound,accuracy,throughput] [--memory] \
        [--out benches/results/pipeline-<machine>.json]

The other decoders are not requirements; to compare them (exact pins, no dependencies pulled):
    pip install --no-deps simplejpeg==1.9.0 opencv-python-headless==5.0.0.93 kornia-rs==0.2.0 ajpegli==1.0.0 \
        pyjpegli==0.3.2 PyTurboJPEG==1.8.3
PyTurboJPEG loads the system libturbojpeg (Debian: apt-get install libturbojpeg0, libjpeg-turbo 2.1; its 2.x
releases require libjpeg-turbo >= 3).
"""

import argparse
import importlib.metadata
import io
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image, features

import mnv4_kernels
from mnv4_kernels import report
from mnv4_kernels.pipeline import BatchPredictor, EvalTransform, predict
from mnv4_kernels.sample_images import checker, photo, write_jpeg_folder
from mnv4_reference import load_image, preprocess, pretrained_cfg, randomized_model
from mnv4_reference.preprocess import center_crop, resize_shorter

MODEL = "mobilenetv4_conv_small"
SECTIONS = ("preprocess", "bound", "accuracy", "throughput")
TARGET_12MP_MS, TARGET_RATIO = 12.0, 2.5  # the requirement: one-core preprocess per 12 MP JPEG; infer per image


def _cpu_ms(fn, reps):
    out = []
    for _ in range(reps):
        t = time.process_time()
        fn()
        out.append(1e3 * (time.process_time() - t))
    return out


def preprocess_one_thread(folders, repeats):
    torch.set_num_threads(1)
    cfg = pretrained_cfg(MODEL)
    fast, exact = EvalTransform(cfg), EvalTransform(cfg, draft=0)
    rows = []
    for label, files in folders.items():
        cands = {
            "reference preprocess(load_image(f))": lambda f: preprocess(load_image(f), cfg),
            "fast (draft decoding)": lambda f: fast([f]),
            "fast, exact decode (draft=0)": lambda f: exact([f]),
        }
        samples = {k: [] for k in cands}
        for r in range(repeats):
            for k, fn in (list(cands.items())[r % 3:] + list(cands.items())[:r % 3]):  # rotating order
                f = files[r % len(files)]
                samples[k] += _cpu_ms(lambda: fn(f), 1)
        size = os.path.getsize(files[0])
        for k, s in samples.items():
            rows.append(dict(folder=label, impl=k, median_cpu_ms=statistics.median(s), p10_cpu_ms=sorted(s)[len(s) // 10],
                             file_mb=size / 1e6, repeats=len(s)))
            print(f"  {label:10s} {k:40s} {rows[-1]['median_cpu_ms']:8.2f} ms CPU per image (p10 "
                  f"{rows[-1]['p10_cpu_ms']:.2f}), file {size / 1e6:.2f} MB", flush=True)
    torch.set_num_threads(os.cpu_count())
    return rows


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def jpeg_decoders():
    """Every JPEG decoder this environment has: (candidates, skipped). A candidate is (name, version, library,
    fn(data, w, h, s) -> array decoded at 1/s scale, the scales it supports); skipped maps a name to the reason."""
    cands, skipped = [], {}

    def pil(data, w, h, s):
        img = Image.open(io.BytesIO(data))
        if s > 1:
            img.draft("RGB", (w // s, h // s))
        img.load()
        return img

    cands.append(("PIL", Image.__version__, f"libjpeg-turbo {features.version('libjpeg_turbo')}", pil, (8, 4, 2, 1)))
    try:
        import simplejpeg

        def sj(data, w, h, s):  # picks the smallest DCT scale that keeps min_width x min_height
            return simplejpeg.decode_jpeg(data, min_width=w // s, min_height=h // s)

        cands.append(("simplejpeg", _version("simplejpeg"), "libjpeg-turbo (bundled)", sj, (8, 4, 2, 1)))
    except ImportError as e:
        skipped["simplejpeg"] = f"not installed ({e})"
    try:
        import cv2

        cv2.setNumThreads(1)
        flags = {8: cv2.IMREAD_REDUCED_COLOR_8, 4: cv2.IMREAD_REDUCED_COLOR_4, 2: cv2.IMREAD_REDUCED_COLOR_2,
                 1: cv2.IMREAD_COLOR}

        def ocv(data, w, h, s):
            return cv2.imdecode(np.frombuffer(data, np.uint8), flags[s])

        build = cv2.getBuildInformation().split("JPEG:", 1)[-1].split("\n", 1)[0].strip()
        cands.append(("opencv", cv2.__version__, build, ocv, (8, 4, 2, 1)))
    except ImportError as e:
        skipped["opencv"] = f"not installed ({e})"
    try:
        import turbojpeg

        tj = turbojpeg.TurboJPEG()

        def ptj(data, w, h, s):
            return tj.decode(data, pixel_format=turbojpeg.TJPF_RGB, scaling_factor=(1, s))

        cands.append(("PyTurboJPEG", _version("PyTurboJPEG"), "system libturbojpeg", ptj, (8, 4, 2, 1)))
    except ImportError as e:
        skipped["PyTurboJPEG"] = f"not installed ({e})"
    except (RuntimeError, OSError) as e:  # the wrapper is there, the system library is not (or too old)
        skipped["PyTurboJPEG"] = f"no usable libturbojpeg: {str(e).splitlines()[0]}"
    try:
        import kornia_rs.io as kio

        cands.append(("kornia-rs zune-jpeg", _version("kornia-rs"), "zune-jpeg (Rust, no DCT scaling)",
                      lambda data, w, h, s: kio.decode_image_jpeg(data), (1,)))
        cands.append(("kornia-rs jpegturbo", _version("kornia-rs"), "libjpeg-turbo (turbojpeg crate)",
                      lambda data, w, h, s: kio.decode_image_jpegturbo(data, "rgb"), (1,)))
    except ImportError as e:
        skipped["kornia-rs"] = f"not installed ({e})"
    try:
        import ajpegli

        cands.append(("ajpegli", _version("ajpegli"), "jpegli (no DCT scaling)",
                      lambda data, w, h, s: ajpegli.decode(data), (1,)))
    except ImportError as e:
        skipped["ajpegli"] = f"not installed ({e})"
    try:
        import pyjpegli

        cands.append(("pyjpegli", _version("pyjpegli"), "jpegli (no DCT scaling)",
                      lambda data, w, h, s: np.frombuffer(pyjpegli.decode(data)[0], np.uint8).reshape(h, w, 3),
                      (1,)))
    except ImportError as e:
        skipped["pyjpegli"] = f"not installed ({e})"
    return cands, skipped


def decode_bound(files, repeats):
    """One thread, CPU time per JPEG of `files` (bytes in memory, so file reads don't count): each decoder at
    1/8 scale, at the transform's draft scale and in full, and the whole fast transform, interleaved."""
    cfg = pretrained_cfg(MODEL)
    fast = EvalTransform(cfg)
    blobs = []
    for f in files[:4]:
        with open(f, "rb") as fh:
            blobs.append(fh.read())
    w, h = Image.open(io.BytesIO(blobs[0])).size
    tscale = fast.decode(blobs[0])[1]
    cands, skipped = jpeg_decoders()
    for name, why in skipped.items():
        print(f"  skipped {name}: {why}", flush=True)
    jobs = {("EvalTransform (the whole fast transform)", tscale): lambda d: fast([d])}
    meta = {}
    for name, version, lib, fn, scales in cands:
        for s in sorted({8, tscale, 1}, reverse=True):
            if s not in scales:
                continue
            out = np.asarray(fn(blobs[0], w, h, s))
            if out.shape[:2] != (math.ceil(h / s), math.ceil(w / s)):
                raise RuntimeError(f"{name} at 1/{s} decoded {out.shape}, expected {h / s:.0f} x {w / s:.0f}")
            jobs[(name, s)] = (lambda fn_, s_: lambda d: fn_(d, w, h, s_))(fn, s)
            meta[(name, s)] = dict(version=version, library=lib)
    keys = list(jobs)
    samples = {k: [] for k in keys}
    for r in range(repeats):
        d = blobs[r % len(blobs)]
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:  # rotating order
            samples[k] += _cpu_ms(lambda: jobs[k](d), 1)
    size = statistics.mean(len(b) for b in blobs)
    rows = []
    for (name, s), v in samples.items():
        med = statistics.median(v)
        rows.append(dict(decoder=name, scale=f"1/{s}", median_cpu_ms=med, p10_cpu_ms=sorted(v)[len(v) // 10],
                         compressed_mb_per_s=size / 1e3 / med, **meta.get((name, s), {})))
        print(f"  {name:42s} 1/{s}  {med:7.2f} ms CPU (p10 {rows[-1]['p10_cpu_ms']:.2f}), "
              f"{rows[-1]['compressed_mb_per_s']:6.1f} MB/s of JPEG", flush=True)
    pil8 = statistics.median(samples[("PIL", 8)])
    floor = min((r for r in rows if r["scale"] == "1/8"), key=lambda r: r["median_cpu_ms"])
    res = dict(image=f"{w}x{h}", mean_file_mb=size / 1e6, transform_draft_scale=f"1/{tscale}", repeats=repeats,
               rows=rows, skipped=skipped,
               pil_1_8_cpu_ms=pil8, pil_entropy_decode_mb_per_s=size / 1e3 / pil8,
               pil_transform_scale_cpu_ms=statistics.median(samples[("PIL", tscale)]),
               transform_cpu_ms=statistics.median(samples[("EvalTransform (the whole fast transform)", tscale)]),
               floor_cpu_ms=floor["median_cpu_ms"], floor_decoder=floor["decoder"],
               fastest_1_8_speedup_over_pil=pil8 / floor["median_cpu_ms"])
    print(f"  entropy decoding (PIL at 1/8): {res['pil_entropy_decode_mb_per_s']:.1f} MB/s of JPEG; floor of any "
          f"preprocess reading every coefficient: {floor['median_cpu_ms']:.1f} ms ({floor['decoder']} at 1/8, "
          f"{res['fastest_1_8_speedup_over_pil']:.2f}x PIL's)", flush=True)
    return res


def draft_accuracy(tmp, large_files, repeats):
    """max |fast - reference| in uint8 levels and CPU time per image for draft = 1 (the smallest DCT scale that
    keeps the target: 1/8 on 12 MP, the decode floor), 2 (the default), 4 and 0 (full decode)."""
    cfg = pretrained_cfg(MODEL)
    size = cfg["input_size"][-1]
    short = math.floor(size / cfg["crop_pct"])
    d = os.path.join(tmp, "accuracy")
    os.makedirs(d, exist_ok=True)
    big = photo(2400, 1800, seed=1)
    made = {"2400x1800 q90": (big, {}), "2400x1800 grayscale q90": (big.convert("L"), {}),
            "2400x1800 CMYK q90": (big.convert("CMYK"), {}), "4032x3024 q95": (photo(4032, 3024, seed=8), dict(quality=95)),
            "4608x3456 q90": (photo(4608, 3456, seed=9), {}), "4032x3024 97 px checker q90": (checker(4032, 3024), {})}
    images = {f"4032x3024 q90 ({os.path.basename(f)})": f for f in large_files[:2]}
    for i, (name, (img, kw)) in enumerate(made.items()):
        images[name] = os.path.join(d, f"a{i}.jpg")
        img.save(images[name], "JPEG", **{"quality": 90, **kw})
    rows = []
    for name, path in images.items():
        want = np.asarray(center_crop(resize_shorter(load_image(path), short), size)).astype(np.int16)
        for draft in (1, 2, 4, 0):
            t = EvalTransform(cfg, draft=draft)
            px, scale = t.decode(path)
            if px.ndim == 2:
                px = np.repeat(px[:, :, None], 3, axis=2)
            diff = np.abs(px.astype(np.int16) - want)
            ms = statistics.median(_cpu_ms(lambda: t([path]), repeats))
            rows.append(dict(image=name, draft=draft, scale=f"1/{scale}", max_abs_levels=int(diff.max()),
                             mean_abs_levels=float(diff.mean()), pixels_over_1_level=int((diff > 1).sum()),
                             within_1_255=bool(diff.max() <= 1), median_cpu_ms=ms))
            print(f"  {name:34s} draft {draft} (1/{scale}): max {diff.max()} levels, mean {diff.mean():.3f}, "
                  f"{(diff > 1).sum():6d} values > 1 level, {ms:6.1f} ms CPU", flush=True)
    return rows


def throughput(folders, model, batch, workers, rounds):
    cfg = model.pretrained_cfg
    t = EvalTransform(cfg)
    predictor = BatchPredictor(model)
    rows = []
    for label, files in folders.items():
        n = len(files)
        x = t(files[:batch])

        def run_infer():
            return sum(1 for _ in predict(files, t, predictor, batch_size=batch, workers=workers))

        reps = max(1, n // len(x))  # x holds min(batch, n) images: count what ran, not the batch size

        def run_model():
            for _ in range(reps):
                predictor(x)
            return reps * len(x)

        def run_decode():
            from concurrent.futures import ThreadPoolExecutor
            buf = t.new_batch(n)
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(lambda i: t.into(files[i], buf, i), range(n)))
            return n

        cands = {"infer pipeline": run_infer, "model alone (pre-decoded batches)": run_model,
                 "decode alone": run_decode}
        rates = {k: [] for k in cands}
        run_model()
        for r in range(rounds):
            for k, fn in cands.items():
                time.sleep(0.05)
                t0 = time.perf_counter()
                cnt = fn()
                rates[k].append(cnt / (time.perf_counter() - t0))
        med = {k: statistics.median(v) for k, v in rates.items()}
        bound = 1.0 / (1.0 / med["decode alone"] + 1.0 / med["model alone (pre-decoded batches)"])
        row = dict(folder=label, images=n, batch=batch, workers=workers, rounds=rounds,
                   images_per_s={k: v for k, v in med.items()}, samples=rates, shared_core_bound_images_per_s=bound,
                   infer_fraction_of_bound=med["infer pipeline"] / bound,
                   infer_ms_per_image=1e3 / med["infer pipeline"])
        rows.append(row)
        print(f"  {label:10s} infer {med['infer pipeline']:7.1f} img/s | model alone "
              f"{med['model alone (pre-decoded batches)']:7.1f} | decode alone {med['decode alone']:7.1f} | bound "
              f"{bound:7.1f} -> infer at {100 * row['infer_fraction_of_bound']:.0f}% of the bound", flush=True)
    return rows


def infer_limits(bound, thr, cores):
    """What the decode floor allows: the 12 MP preprocess can't beat the fastest 1/8-scale decode, and infer's
    best 12 MP per-image cost is that floor spread over the cores (perfect decode scaling) plus the model's own
    cost per image, against the 500x375 folder's measured infer cost and its two-stage bound."""
    row = {r["folder"]: r for r in thr}
    small, large = row["500x375"], row["4032x3024"]
    model_ms = 1e3 / large["images_per_s"]["model alone (pre-decoded batches)"]
    best_ms = bound["floor_cpu_ms"] / cores + model_ms
    lim = dict(target_12mp_preprocess_ms=TARGET_12MP_MS, preprocess_floor_cpu_ms=bound["floor_cpu_ms"],
               floor_decoder=bound["floor_decoder"], target_12mp_reachable=bound["floor_cpu_ms"] <= TARGET_12MP_MS,
               cores=cores, model_alone_ms_per_image=model_ms, best_12mp_infer_ms_per_image=best_ms,
               infer_500x375_ms_per_image=small["infer_ms_per_image"],
               best_ratio_vs_measured_500x375=best_ms / small["infer_ms_per_image"],
               best_ratio_vs_500x375_bound=best_ms * small["shared_core_bound_images_per_s"] / 1e3,
               target_ratio=TARGET_RATIO)
    lim["target_ratio_reachable"] = lim["best_ratio_vs_measured_500x375"] <= TARGET_RATIO
    # the same with today's transform in place of the floor: what overlapping alone could still win
    lim["transform_12mp_infer_ms_per_image"] = bound["transform_cpu_ms"] / cores + model_ms
    lim["transform_ratio_vs_measured_500x375"] = lim["transform_12mp_infer_ms_per_image"] / small["infer_ms_per_image"]
    print(f"  bound: 12 MP preprocess >= {bound['floor_cpu_ms']:.1f} ms on one core (target {TARGET_12MP_MS:.0f}: "
          f"{'reachable' if lim['target_12mp_reachable'] else 'out of reach'}); infer per 12 MP image >= "
          f"{bound['floor_cpu_ms']:.1f} / {cores} + {model_ms:.2f} (model) = {best_ms:.2f} ms = "
          f"{lim['best_ratio_vs_measured_500x375']:.2f}x the measured 500x375 cost "
          f"({lim['best_ratio_vs_500x375_bound']:.2f}x its two-stage bound; target {TARGET_RATIO}); with today's "
          f"transform ({bound['transform_cpu_ms']:.1f} ms) in place of the floor: "
          f"{lim['transform_12mp_infer_ms_per_image']:.2f} ms = {lim['transform_ratio_vs_measured_500x375']:.2f}x",
          flush=True)
    return lim


def peak_rss(ckpt, folder):
    p = subprocess.Popen([sys.executable, "-m", "mnv4_kernels", "infer", "--json", "--no-progress", "--checkpoint",
                          ckpt, "--batch", "32", folder], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.perf_counter()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode not in (0, 1):
        raise RuntimeError(p.stderr.read().decode())
    return usage.ru_maxrss / 1024.0, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=96, help="500x375 images in the throughput folder")
    ap.add_argument("--large", type=int, default=32, help="4032x3024 images in the throughput folder")
    ap.add_argument("--repeats", type=int, default=30, help="per-image preprocess samples per candidate")
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds (candidates interleaved)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="decode threads (default: CPUs)")
    ap.add_argument("--memory", action="store_true", help="also peak RSS of infer on 1,000 vs 10,000 images")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    if not sections or set(sections) - set(SECTIONS):
        ap.error(f"--sections: expected a subset of {','.join(SECTIONS)}; got {args.sections!r}")
    workers = args.workers or os.cpu_count()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        print("generating folders ...", flush=True)
        folders = {"500x375": write_jpeg_folder(os.path.join(tmp, "small"), args.small, 500, 375),
                   "4032x3024": write_jpeg_folder(os.path.join(tmp, "large"), args.large, 4032, 3024)}
        ckpt = os.path.join(tmp, "model.safetensors")
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in randomized_model(MODEL, seed=0).state_dict().items()}, ckpt)

        pre = bound = acc = thr = ratio = limits = None
        if "preprocess" in sections:
            print("1. preprocess, one thread (CPU time per image)", flush=True)
            pre = preprocess_one_thread(folders, args.repeats)
        if "bound" in sections:
            print("2. the decode bound, one thread (CPU time per 4032x3024 JPEG)", flush=True)
            torch.set_num_threads(1)
            bound = decode_bound(folders["4032x3024"], args.repeats)
            torch.set_num_threads(os.cpu_count())
        if "accuracy" in sections:
            print("3. draft accuracy against the full-decode reference (uint8 levels, before normalisation)",
                  flush=True)
            torch.set_num_threads(1)
            acc = draft_accuracy(tmp, folders["4032x3024"], max(3, args.repeats // 5))
            torch.set_num_threads(os.cpu_count())
        if "throughput" in sections:
            print(f"4. throughput, {torch.get_num_threads()} threads, {workers} decode workers", flush=True)
            model = mnv4_kernels.load(MODEL, checkpoint=ckpt)
            thr = throughput(folders, model, args.batch, workers, args.rounds)
            ms = {r["folder"]: r["infer_ms_per_image"] for r in thr}
            ratio = ms["4032x3024"] / ms["500x375"]
            print(f"  infer per image: 12 MP costs {ratio:.2f}x a 500x375 image")
            if bound is not None:
                limits = infer_limits(bound, thr, os.cpu_count())
        mem = None
        if args.memory:
            mem = {}
            for n in (1000, 10000):
                d = os.path.join(tmp, f"mem{n}")
                write_jpeg_folder(d, n, 160, 120, distinct=16)
                mem[n] = dict(zip(("peak_rss_mb", "wall_s"), peak_rss(ckpt, d)))
                print(f"5. infer on {n} 160x120 JPEGs: peak RSS {mem[n]['peak_rss_mb']:.1f} MB "
                      f"({mem[n]['wall_s']:.1f} s)", flush=True)
            mem["ratio_10000_to_1000"] = mem[10000]["peak_rss_mb"] / mem[1000]["peak_rss_mb"]
            print(f"  peak RSS ratio 10,000 / 1,000 images: {mem['ratio_10000_to_1000']:.3f}")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"pipeline-{report.machine_tag()}.json")
    # the 1-minute load average before and after: other processes on these shared cores change every figure
    report.write_json(out, dict(env=report.env_info(), load_average_1min=[load_before[0], os.getloadavg()[0]],
                                model=MODEL, preprocess_one_thread=pre, decode_bound=bound, draft_accuracy=acc,
                                throughput=thr, infer_12mp_to_500x375_cost_ratio=ratio, limits=limits,
                                memory=mem))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
