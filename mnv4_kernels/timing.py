"""Side-by-side timing: candidates interleaved (A B C A B C ...) in one process, medians after warm-up.

These machines are noisy (shared cores; absolute times vary 2-5x between runs), so only ratios measured in
one run mean anything on a CPU; interleaving spreads the drift over all candidates alike.
"""

import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Optional, Union

import torch


# Round-robin blocks for candidates with their own thread pools (onnxruntime, OpenVINO, XNNPACK, torch's
# OpenMP team): a sample is the mean of `inner` back-to-back calls after `settle` untimed ones and a `gap_s`
# sleep, so the previous candidate's spinning workers have gone idle and do not steal the cores.
POOL_BLOCKS = dict(inner=10, settle=4, gap_s=0.05)


@dataclass
class Timing:
    name: str
    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    samples_ms: list = field(default_factory=list, repr=False)

    def as_dict(self, samples=False):
        d = asdict(self)
        if not samples:
            d.pop("samples_ms")
        return d


def _sync_for(device):
    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def _quantile(xs, q):
    xs = sorted(xs)
    i = min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))
    return xs[i]


def interleaved(candidates: Dict[str, Callable[[], object]], *, warmup: int = 3, repeats: int = 20,
                device="cpu", min_seconds: float = 0.0, max_seconds: Optional[float] = None,
                progress: Optional[str] = None, inner: Union[int, Dict[str, int]] = 1, settle: int = 0,
                gap_s: float = 0.0,
                clock: Callable[[], float] = time.perf_counter) -> Dict[str, Timing]:
    """Time each zero-argument callable; returns {name: Timing}.

    Each round calls every candidate once, in a rotating order so no candidate always runs first.
    With `inner` > 1 a sample is the mean of that many back-to-back calls, after `settle` untimed calls
    (a dict gives each candidate its own count, e.g. 1 for a long reference call timed beside short ones):
    candidates with their own thread pools (onnxruntime's spinning workers, torch's OpenMP team) otherwise
    steal the cores from whoever runs right after them on a small machine; `gap_s` > 0 also sleeps that long
    before each candidate's calls, so the previous candidate's spinning threads have gone idle.
    `clock` = time.process_time measures CPU time (all threads) instead of wall time: less sensitive to other
    processes, for 1 thread.
    Stops after `repeats` rounds, but keeps going until `min_seconds` have passed, and stops early (with
    at least 3 rounds) once `max_seconds` have passed. `progress` prints a one-line status to stderr.
    """
    names = list(candidates)
    inner_of = inner if isinstance(inner, dict) else dict.fromkeys(names, inner)
    sync = _sync_for(device)
    for _ in range(warmup):
        for n in names:
            candidates[n]()
    sync()
    samples = {n: [] for n in names}
    start = time.perf_counter()
    r = 0
    while True:
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            if gap_s > 0:
                time.sleep(gap_s)
            for _ in range(settle):
                candidates[n]()
            sync()
            t0 = clock()
            for _ in range(inner_of[n]):
                candidates[n]()
            sync()
            samples[n].append((clock() - t0) * 1e3 / inner_of[n])
        r += 1
        elapsed = time.perf_counter() - start
        if progress and sys.stderr.isatty():
            print(f"\r  {progress}: round {r}/{repeats}", end="", file=sys.stderr, flush=True)
        if r >= repeats and elapsed >= min_seconds:
            break
        if max_seconds is not None and elapsed >= max_seconds and r >= 3:
            break
    if progress:
        end = "\n" if sys.stderr.isatty() else ""
        print(f"{end}  {progress}: {r} rounds in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return {n: Timing(n, statistics.median(s), _quantile(s, 0.1), _quantile(s, 0.9), len(s), s)
            for n, s in samples.items()}


def geomean(xs):
    xs = [x for x in xs if x > 0]
    if not xs:
        return float("nan")
    prod = 1.0
    for x in xs:
        prod *= x
    return prod ** (1.0 / len(xs))
