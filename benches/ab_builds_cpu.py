"""Two builds of the package side by side on this machine: CPU speed after / before a change (fp32, or bf16).

Each round runs the same measurements for both builds, each in its own child process, BEFORE then AFTER in
even rounds and AFTER then BEFORE in odd ones, so drift of a shared machine falls on both alike:
  layers: `python -m mnv4_kernels bench --no-e2e --kinds uib` on Conv-M@224 at batch 1 and 8; a round's value
          is the geomean over the distinct layers of our op's median time (torch's op chain, which is the same
          code in both builds, is reported beside it as a control: its ratio shows the noise);
  e2e:    `benches/e2e_cpu.py --candidates ours-<dtype>` on --cases; a round's value is the case's median time;
  blocks: (--blocks head,...) `benches/profile_blocks_cpu.py --dtype <dtype> --no-other` on --cases: those
          blocks' first-call times inside whole passes, each one's share of the sum over all blocks (which
          drift on a shared machine scales less), and that sum (a change to a few blocks, which the e2e noise
          would bury).
--dtype (fp32 or bf16) picks the e2e and blocks models' dtype; the layers are fp32.
A child imports the build from PYTHONPATH=<tree>:<tree>/python and refuses to run if mnv4_kernels comes from
anywhere else. Per metric the file keeps every round's pair and the after/before ratio of the rounds (median,
p10, p90).

    .venv/bin/python benches/ab_builds_cpu.py --before OLD_TREE --after . [--rounds 4] [--layer-seconds 0.5]
        [--e2e-seconds 8] [--threads 2] [--cases conv_small@224:1,conv_medium@224:1,conv_medium@224:8]
        [--dtype fp32|bf16] [--blocks head,stem] [--block-passes 30]
Writes benches/results/ab-builds-<machine>.json.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from mnv4_kernels import report
from mnv4_kernels.timing import _quantile, geomean

from e2e_cpu import parse_cases  # benches/ is this script's sys.path[0]

CASES = "conv_small@224:1,conv_medium@224:1,conv_medium@224:8"

# Run in the child before the benchmark: the build under test must be the one imported.
_CHILD = """
import os, runpy, sys
import mnv4_kernels, mnv4_kernels._C as ext
tree = os.path.realpath(os.environ["AB_TREE"])
for mod in (mnv4_kernels, ext):
    if not os.path.realpath(mod.__file__).startswith(tree + os.sep):
        sys.exit(f"ab_builds: {mod.__name__} comes from {mod.__file__}, not from {tree}")
target, sys.argv = sys.argv[1], sys.argv[1:]
if target.endswith(".py"):
    runpy.run_path(target, run_name="__main__")
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


def git_description(tree):
    try:
        return subprocess.run(["git", "-C", tree, "describe", "--always", "--dirty"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_child(tree, target, args, out):
    """Run `target` (a module name or a script path) of `tree` with `args` + --out; returns the JSON it wrote."""
    env = dict(os.environ, AB_TREE=tree, PYTHONPATH=os.pathsep.join([tree, os.path.join(tree, "python")]))
    done = subprocess.run([sys.executable, "-c", _CHILD, target, *args, "--out", out], cwd=tree, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        sys.exit(f"ab_builds: {target} of {tree} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    with open(out) as f:
        return json.load(f)


def layer_values(tree, args, out):
    data = run_child(tree, "mnv4_kernels", ["bench", "--no-e2e", "--models", "conv_medium@224", "--kinds", "uib",
                                            "--batches", "1,8", "--threads", str(args.threads),
                                            "--max-seconds", str(args.layer_seconds)], out)
    values = {}
    for impl, label in (("ours-cpu", "ours"), ("torch-ops", "torch_ops_control")):
        for batch in (1, 8):
            times = [r["median_ms"] for r in data["records"]
                     if r["kind"] == "layer" and r["impl"] == impl and r["batch"] == batch]
            values[f"layers_uib_conv_medium@224_b{batch}_{label}_geomean_ms"] = geomean(times)
    return values, data["env"]


def e2e_values(tree, args, out):
    script = os.path.join(tree, "benches", "e2e_cpu.py")
    ours = f"ours-{args.dtype}"
    data = run_child(tree, script, ["--candidates", ours, "--cases", args.cases,
                                    "--threads", str(args.threads), "--max-seconds", str(args.e2e_seconds)], out)
    return {f"e2e_{r['model'].removeprefix('mobilenetv4_')}@{r['res']}_b{r['batch']}_ours_{args.dtype}_median_ms":
            r["candidates"][ours]["median_ms"] for r in data["records"]}, data["env"]


def block_values(tree, args, out):
    """Per case, the named blocks' first-call times inside whole passes and the sum over all blocks
    (benches/profile_blocks_cpu.py, ours only)."""
    script = os.path.join(tree, "benches", "profile_blocks_cpu.py")
    values, env = {}, None
    for name, res, batch in parse_cases(args.cases):
        data = run_child(tree, script, ["--model", name, "--res", str(res), "--batch", str(batch), "--threads",
                                        str(args.threads), "--passes", str(args.block_passes), "--dtype",
                                        args.dtype, "--no-other"], out)
        case = f"{name.removeprefix('mobilenetv4_')}@{res}_b{batch}_{args.dtype}"
        for rec in data["ours"]:
            if rec["block"] in args.blocks.split(","):
                values[f"blocks_{case}_{rec['block']}_first_ms"] = rec["first_ms"]
                # its share of the pass: a shared machine's drift scales a round's blocks alike
                values[f"blocks_{case}_{rec['block']}_share"] = rec["first_ms"] / data["first_sum_ms"]
        values[f"blocks_{case}_first_sum_ms"] = data["first_sum_ms"]
        env = env or data["env"]
    return values, env


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="package tree built before the change")
    ap.add_argument("--after", required=True, help="package tree built after the change")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layer-seconds", type=float, default=0.5, help="--max-seconds per layer and batch")
    ap.add_argument("--e2e-seconds", type=float, default=8.0, help="--max-seconds per e2e case")
    ap.add_argument("--cases", default=CASES)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="the e2e and blocks models' dtype")
    ap.add_argument("--no-layers", action="store_true")
    ap.add_argument("--no-e2e", action="store_true")
    ap.add_argument("--blocks", default="", help="comma-separated block names (stem, blocks.4.0, head, ...): "
                    "also their first-call times per case (benches/profile_blocks_cpu.py)")
    ap.add_argument("--block-passes", type=int, default=30)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    trees = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
    measurements = [m for m, off in ((layer_values, args.no_layers), (e2e_values, args.no_e2e),
                                     (block_values, not args.blocks)) if not off]
    described = {b: git_description(t) for b, t in trees.items()}  # before the run: HEAD may move meanwhile
    load_before = list(os.getloadavg())
    rounds, child_env = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            values = {}
            for measure in measurements:
                for build in order:
                    got, env = measure(trees[build], args, os.path.join(tmp, f"{build}.json"))
                    child_env.setdefault(build, env)
                    for metric, v in got.items():
                        values.setdefault(metric, {})[build] = v
            rounds.append(dict(order=order, values=values))
            print(f"round {r + 1}/{args.rounds} ({' '.join(order)}): " + ", ".join(
                f"{m} {v['after'] / v['before']:.3f}" for m, v in values.items()), flush=True)
    load_after = list(os.getloadavg())
    summary = []
    for metric in rounds[0]["values"]:
        pairs = [rd["values"][metric] for rd in rounds]
        ratios = [p["after"] / p["before"] for p in pairs]
        summary.append(dict(metric=metric, before_ms=statistics.median(p["before"] for p in pairs),
                            after_ms=statistics.median(p["after"] for p in pairs),
                            ratio_median=statistics.median(ratios), ratio_p10=_quantile(ratios, 0.1),
                            ratio_p90=_quantile(ratios, 0.9)))
    print(report.format_table(summary, [("metric", "metric", "{}"), ("before_ms", "before ms", "{:.3f}"),
                                        ("after_ms", "after ms", "{:.3f}"), ("ratio_median", "after/before", "{:.3f}"),
                                        ("ratio_p10", "p10", "{:.3f}"), ("ratio_p90", "p90", "{:.3f}")]))
    print(f"load average before {load_before}, after {load_after}")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"ab-builds-{report.machine_tag()}.json")
    report.write_json(out, dict(
        benchmark="ab_builds_cpu", env=report.env_info(), threads=args.threads,
        builds={b: dict(tree=t, git=described[b], mnv4_cpu_isa=child_env.get(b, {}).get("mnv4_cpu_isa"))
                for b, t in trees.items()},
        settings=dict(rounds=args.rounds, layer_seconds=args.layer_seconds, e2e_seconds=args.e2e_seconds,
                      cases=args.cases, dtype=args.dtype, blocks=args.blocks, block_passes=args.block_passes),
        method="per round one child process per build and measurement, order alternating (before after, after "
               "before, ...); layers: geomean over Conv-M@224's distinct UIB layers of each layer's median ms "
               "(mnv4_kernels.bench.bench_layers); e2e: the case's median ms (mnv4_kernels.bench.e2e_case); "
               "blocks: a block's median first-call ms inside whole passes, and their sum over the model's blocks "
               "(benches/profile_blocks_cpu.py); "
               "ratio = after / before of one round's values, median / p10 / p90 over the rounds",
        load_average_before=load_before, load_average_after=load_after, summary=summary, rounds=rounds))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
