"""Input pipeline benchmark on generated JPEG folders (500x375 and 12 MP 4032x3024 photo-like images).

1. preprocess, one thread, CPU time per image: the plain reference (preprocess(load_image(f))) against the fast
   EvalTransform (draft decoding) and the fast one with --exact-decode semantics (draft=0), interleaved;
2. throughput on all cores (Conv-S, random weights in a temporary safetensors file): the pipeline as `infer` runs
   it (startup excluded), the model alone on pre-decoded batches, decoding alone; the bound for two stages sharing
   the cores is 1 / (1 / decode + 1 / model) images/s;
3. --memory: peak RSS of `python -m mnv4_kernels infer --json` on 1,000 and 10,000 small JPEGs (subprocesses).

    python benches/pipeline_cpu.py [--memory] [--out benches/results/pipeline-<machine>.json]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import mnv4_kernels
from mnv4_kernels import report
from mnv4_kernels.pipeline import BatchPredictor, EvalTransform, predict
from mnv4_kernels.sample_images import write_jpeg_folder
from mnv4_reference import load_image, preprocess, pretrained_cfg, randomized_model

MODEL = "mobilenetv4_conv_small"


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
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    workers = args.workers or os.cpu_count()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        print("generating folders ...", flush=True)
        folders = {"500x375": write_jpeg_folder(os.path.join(tmp, "small"), args.small, 500, 375),
                   "4032x3024": write_jpeg_folder(os.path.join(tmp, "large"), args.large, 4032, 3024)}
        ckpt = os.path.join(tmp, "model.safetensors")
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in randomized_model(MODEL, seed=0).state_dict().items()}, ckpt)

        print("1. preprocess, one thread (CPU time per image)", flush=True)
        pre = preprocess_one_thread(folders, args.repeats)
        print(f"2. throughput, {torch.get_num_threads()} threads, {workers} decode workers", flush=True)
        model = mnv4_kernels.load(MODEL, checkpoint=ckpt)
        thr = throughput(folders, model, args.batch, workers, args.rounds)
        ms = {r["folder"]: r["infer_ms_per_image"] for r in thr}
        ratio = ms["4032x3024"] / ms["500x375"]
        print(f"  infer per image: 12 MP costs {ratio:.2f}x a 500x375 image")
        mem = None
        if args.memory:
            mem = {}
            for n in (1000, 10000):
                d = os.path.join(tmp, f"mem{n}")
                write_jpeg_folder(d, n, 160, 120, distinct=16)
                mem[n] = dict(zip(("peak_rss_mb", "wall_s"), peak_rss(ckpt, d)))
                print(f"3. infer on {n} 160x120 JPEGs: peak RSS {mem[n]['peak_rss_mb']:.1f} MB "
                      f"({mem[n]['wall_s']:.1f} s)", flush=True)
            mem["ratio_10000_to_1000"] = mem[10000]["peak_rss_mb"] / mem[1000]["peak_rss_mb"]
            print(f"  peak RSS ratio 10,000 / 1,000 images: {mem['ratio_10000_to_1000']:.3f}")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"pipeline-{report.machine_tag()}.json")
    # the 1-minute load average before and after: other processes on these shared cores change every figure
    report.write_json(out, dict(env=report.env_info(), load_average_1min=[load_before[0], os.getloadavg()[0]],
                                model=MODEL, preprocess_one_thread=pre, throughput=thr,
                                infer_12mp_to_500x375_cost_ratio=ratio, memory=mem))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
