"""What the fused model's CPU forward gains from running as one op call, from merging a k x k conv step with the
1x1 conv after it, and from huge-page weights.

In-process A/Bs per case, candidates interleaved in round-robin blocks (mnv4_kernels.timing.POOL_BLOCKS: --inner
calls after --settle untimed ones and a --gap sleep), medians and p10s:
1. sequence vs blocks: one fused model, `model(x)` (a single mnv4_cpu::sequence call for the whole pass)
   against `model.forward_head(model.forward_features(x))` (the Python loop over the blocks, one op call
   each). Same kernels: the logits are checked bit-equal.
2. huge vs 4 KB pages: two fused copies of the same model, one packing its weights into chunks advised for
   transparent huge pages (the default), one with MNV4_HUGEPAGES=0 (csrc/cpu/weight_cache.cpp). Each copy
   streams its own weights, so both are cold every pass, as in real use. Logits checked bit-equal.
3. merged vs unmerged (only models whose program merges steps: Conv-S's stages 0 and 1): the sequence op on
   the model's program against the same op on the program without the merge (model._sequence(merge=False)),
   the same tensors. Logits checked bit-equal.
Writes benches/results/forward-<machine>.json.

    .venv/bin/python benches/forward_cpu.py [--threads 2] [--repeats 40] [--cases conv_medium@224:1,...]
"""

import argparse
import os
import sys

import torch

import mnv4_kernels
from mnv4_kernels import report
from mnv4_kernels.timing import POOL_BLOCKS, interleaved
from mnv4_reference import create_model, randomize_


def anon_huge_kb():
    """AnonHugePages of this process (kB), or None where /proc does not say."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def first_call(model, x, huge):
    """model(x) once (packing its weights into the cache), with MNV4_HUGEPAGES set for that packing."""
    old = os.environ.get("MNV4_HUGEPAGES")
    os.environ["MNV4_HUGEPAGES"] = "1" if huge else "0"
    try:
        with torch.inference_mode():
            return model(x)
    finally:
        if old is None:
            del os.environ["MNV4_HUGEPAGES"]
        else:
            os.environ["MNV4_HUGEPAGES"] = old


def ratio(t, a, b):
    return {"median": t[a].median_ms / t[b].median_ms, "p10": t[a].p10_ms / t[b].p10_ms}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="conv_medium@224:1,conv_medium@224:8,conv_small@224:1")
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--inner", type=int, default=POOL_BLOCKS["inner"])
    ap.add_argument("--settle", type=int, default=POOL_BLOCKS["settle"])
    ap.add_argument("--gap", type=float, default=POOL_BLOCKS["gap_s"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    timing = dict(warmup=3, repeats=args.repeats, inner=args.inner, settle=args.settle, gap_s=args.gap)
    records = []
    for case in args.cases.split(","):
        name, rest = case.split("@")
        res, batch = (int(v) for v in rest.split(":"))
        ref = create_model(f"mobilenetv4_{name}").eval()
        randomize_(ref)
        x = torch.randn(batch, 3, res, res, generator=torch.Generator().manual_seed(0))
        huge = mnv4_kernels.fuse(ref)
        small = mnv4_kernels.fuse(ref)
        y_huge, y_small = first_call(huge, x, True), first_call(small, x, False)
        with torch.inference_mode():
            y_blocks = huge.forward_head(huge.forward_features(x))
        assert torch.equal(y_huge, y_small) and torch.equal(y_huge, y_blocks), "the candidates must agree bit for bit"

        def run(f):
            def call():
                with torch.inference_mode():
                    f()
            return call

        t1 = interleaved({"sequence": run(lambda: huge(x)),
                          "blocks": run(lambda: huge.forward_head(huge.forward_features(x)))}, **timing)
        t2 = interleaved({"huge": run(lambda: huge(x)), "4k": run(lambda: small(x))}, **timing)
        merged, unmerged = huge._sequence(), huge._sequence(merge=False)
        t3 = None
        if merged[0] != unmerged[0]:
            def seq(plan):
                tensors = [None if m is None else m._buffers[k] for m, k in plan[1]]
                return lambda: torch.ops.mnv4_cpu.sequence(x, tensors, plan[0])
            with torch.inference_mode():
                assert torch.equal(seq(merged)(), seq(unmerged)()), "merged and unmerged must agree bit for bit"
            t3 = interleaved({"merged": run(seq(merged)), "unmerged": run(seq(unmerged))}, **timing)
        rec = dict(model=f"mobilenetv4_{name}", res=res, batch=batch, threads=args.threads,
                   sequence_ms=t1["sequence"].median_ms, blocks_ms=t1["blocks"].median_ms,
                   sequence_over_blocks=ratio(t1, "sequence", "blocks"),
                   huge_ms=t2["huge"].median_ms, small_pages_ms=t2["4k"].median_ms,
                   huge_over_small_pages=ratio(t2, "huge", "4k"),
                   anon_huge_pages_kb=anon_huge_kb())  # the process's, with both copies packed
        if t3 is not None:
            rec.update(steps_merged=len(merged[0]) // 4, steps_unmerged=len(unmerged[0]) // 4,
                       merged_ms=t3["merged"].median_ms, unmerged_ms=t3["unmerged"].median_ms,
                       merged_over_unmerged=ratio(t3, "merged", "unmerged"))
        records.append(rec)
        s, h = rec["sequence_over_blocks"], rec["huge_over_small_pages"]
        m = rec.get("merged_over_unmerged")
        print(f"{name}@{res} b{batch}, {args.threads} threads: sequence / blocks {s['median']:.3f} "
              f"(p10 {s['p10']:.3f}); huge / 4 KB pages {h['median']:.3f} (p10 {h['p10']:.3f}); "
              + (f"merged / unmerged {m['median']:.3f} (p10 {m['p10']:.3f}); " if m else "")
              + f"AnonHugePages {rec['anon_huge_pages_kb']} kB", flush=True)
        del huge, small
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"forward-{report.machine_tag()}.json")
    report.write_json(out, dict(env=report.env_info(), load_average=os.getloadavg(), records=records))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
