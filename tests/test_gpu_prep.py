"""What a GPU run depends on, checked without a GPU.

1. The Triton kernels' early_config_prune functions, called as Triton's autotuner calls them on a GPU
   (Autotuner.prune_configs: `early_config_prune(self.configs, self.nargs, **kwargs)` with `self.nargs` built
   from the positional arguments only) and as torch.compile's wrap_triton does (TritonHOPifier.do_prune_configs),
   with the GPU config lists and the exact arguments our ops launch with (recorded from real op calls; the
   constexprs such as HP are keyword arguments). Under the interpreter each kernel has one config, so pruning
   never runs there; on a GPU it runs on the first call of every shape.
2. MNV4_TRITON_ONE_CONFIG=1 leaves each kernel one config, valid for every shape without pruning.
3. benches/gpu_run.sh: `bash -n` and a dry run with every stage stubbed (MNV4_GPU_DRY_RUN=1), so the one
   prepared GPU run cannot fail on a typo, an unset variable or a wrong file count.
"""

import copy
import json
import os
import subprocess
import sys
import tarfile

import pytest
import torch
import triton
from torch._higher_order_ops.triton_kernel_wrap import TritonHOPifier

import mnv4_kernels  # noqa: F401  loads _C, which declares the mnv4 library
from mnv4_kernels.triton import mqa as Q
from mnv4_kernels.triton import uib as U
from mnv4_reference.testing import random_mqa_args, random_uib_args

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRET else "cuda"


# ------------------------------------------------------------------------------------------------ pruning
def _launch_of(kernel, monkeypatch, call):
    """(args, kwargs) of the one launch of `kernel` during call(), exactly as the op passes them to the
    autotuner's run (grid and warmup included, as `kernel[grid](...)` adds them). The launch is not executed."""
    seen = []
    monkeypatch.setattr(kernel, "run", lambda *args, **kwargs: seen.append((args, kwargs)))
    call()
    assert len(seen) == 1, f"{len(seen)} launches"
    return seen[0]


def _prune_like_triton(kernel, configs, args, kwargs):
    """Triton's own Autotuner.prune_configs on a copy of the kernel's autotuner holding `configs`."""
    tuner = copy.copy(kernel)
    tuner.configs = list(configs)
    tuner.nargs = dict(zip(tuner.arg_names, args))
    return tuner.prune_configs(kwargs)


def _prune_like_torch_compile(kernel, configs, args, kwargs):
    named = dict(zip(kernel.arg_names, args))
    return TritonHOPifier.do_prune_configs(kernel, kernel.early_config_prune, None, kernel.configs_top_k,
                                           list(configs), named, kwargs)


def _key(c):
    return tuple(sorted(c.kwargs.items())), c.num_warps, c.num_stages


def _attn_launch(monkeypatch, **case):
    args = [a.to(DEVICE) if isinstance(a, torch.Tensor) else a for a in random_mqa_args(**case)]
    monkeypatch.setattr(Q._mqa_kv_kernel, "run", lambda *a, **k: None)  # K/V not needed for the launch record
    return _launch_of(Q._mqa_attn_kernel, monkeypatch, lambda: torch.ops.mnv4.mqa_triton(*args))


# (case, M keys, expected number of configs after pruning): counted by hand from ATTN_GPU_CONFIGS.
ATTN_CASES = [
    # hybrid_medium stage 3 (16x16, kv stride 2: M = 64): 4 heads keep all 8 row counts (<= 256); BLOCK_M 128
    # clamps to 64 but differs from the other (16, 64) config in num_warps: 8 configs.
    (dict(n=1, c=64, h=16, w=16, num_heads=4, key_dim=64, kv_stride=2), 64, 8),
    # hybrid_large (24x24, kv stride 2: M = 144), 8 heads: BLOCK_P 64 (512 rows) goes: 7 configs.
    (dict(n=1, c=48, h=24, w=24, num_heads=8, key_dim=48, kv_stride=2), 144, 7),
    # tiny map (M = 9 keys): every BLOCK_M clamps to 16, BLOCK_CO to 16 (C_out 16), so the two
    # (16, *, 32, 64, 4, 2) configs meet; BLOCK_P 64 goes (8 heads): 6 configs.
    (dict(n=1, c=16, h=5, w=6, num_heads=8, key_dim=16, kv_stride=2), 9, 6),
    # 16 heads: only BLOCK_P 16 fits 256 rows: 4 configs (3 heads round up to HP 4 in the next case).
    (dict(n=1, c=16, h=8, w=8, num_heads=16, key_dim=16, kv_stride=1), 64, 4),
    (dict(n=2, c=24, h=7, w=9, num_heads=3, key_dim=16, value_dim=24, kv_stride=1), 63, 8),
]


@pytest.mark.parametrize("case,m,expected", ATTN_CASES, ids=[f"h{c['num_heads']}-m{m}" for c, m, _ in ATTN_CASES])
@pytest.mark.parametrize("pruner", [_prune_like_triton, _prune_like_torch_compile], ids=["triton", "torch-compile"])
def test_attn_prune_reads_keyword_constexprs(monkeypatch, case, m, expected, pruner):
    args, kwargs = _attn_launch(monkeypatch, **case)
    named = dict(zip(Q._mqa_attn_kernel.arg_names, args))
    assert "HP" not in named and "HP" in kwargs, "HP is expected as a keyword argument of the launch"
    assert named["M"] == m
    hp = triton.next_power_of_2(case["num_heads"])
    assert kwargs["HP"] == hp
    pruned = pruner(Q._mqa_attn_kernel, Q.ATTN_GPU_CONFIGS, args, kwargs)
    keys = [_key(c) for c in pruned]
    assert len(set(keys)) == len(keys), "duplicate configs after pruning"
    m_cap = max(16, triton.next_power_of_2(m))
    co_cap = max(16, triton.next_power_of_2(case.get("cout") or case["c"]))
    for c in pruned:
        kw = c.kwargs
        assert hp * kw["BLOCK_P"] <= 256 and kw["BLOCK_M"] <= m_cap and kw["BLOCK_CO"] <= co_cap, c
    # Every GPU config within the row limit survives in its clamped form.
    for c in Q.ATTN_GPU_CONFIGS:
        if hp * c.kwargs["BLOCK_P"] <= 256:
            want = dict(c.kwargs, BLOCK_M=min(c.kwargs["BLOCK_M"], m_cap), BLOCK_CO=min(c.kwargs["BLOCK_CO"], co_cap))
            assert (tuple(sorted(want.items())), c.num_warps, c.num_stages) in keys, c
    assert len(pruned) == expected


UIB_CASES = [
    # conv_medium-like: Cin 80 -> mid 480 -> Cout 80, k3 mid dw, 28x28; 8x8 and 8x16 regions hoist (80*128 <=
    # 16K), 16x16 ones do not.
    dict(n=1, cin=80, h=28, w=28, mid=480, cout=80, k_start=0, k_mid=3, stride=1),
    # conv_large last stage: Cin 512, mid 2048, 7x7 (start dw 5, mid dw 5): only the 32K-limit 8x8 configs hoist.
    dict(n=1, cin=512, h=7, w=7, mid=2048, cout=512, k_start=5, k_mid=5, stride=1),
    # tiny channels: every block clamps to 16, many configs meet.
    dict(n=1, cin=8, h=5, w=5, mid=16, cout=8, k_start=3, k_mid=0, stride=2),
]


@pytest.mark.parametrize("case", UIB_CASES, ids=lambda c: f"cin{c['cin']}-mid{c['mid']}-cout{c['cout']}")
@pytest.mark.parametrize("pruner", [_prune_like_triton, _prune_like_torch_compile], ids=["triton", "torch-compile"])
def test_uib_prune_as_the_autotuner_calls_it(monkeypatch, case, pruner):
    args = [a.to(DEVICE) if isinstance(a, torch.Tensor) else a for a in random_uib_args(**case)]
    args, kwargs = _launch_of(U._uib_kernel, monkeypatch, lambda: torch.ops.mnv4.uib_triton(*args))
    assert {"KS", "KM", "CI_ALL"} <= set(kwargs), "the form constexprs are expected as keyword arguments"
    pruned = pruner(U._uib_kernel, U.GPU_CONFIGS, args, kwargs)
    keys = [_key(c) for c in pruned]
    assert pruned and len(set(keys)) == len(keys)

    def cap(n):
        return max(16, triton.next_power_of_2(n))
    ci, mc, co = cap(case["cin"]), cap(case["mid"]), cap(case["cout"])
    assert kwargs["CI_ALL"] == ci
    for c in pruned:
        kw = c.kwargs
        assert kw["BLOCK_MC"] <= mc and kw["BLOCK_CO"] <= co and kw["BLOCK_CI"] <= ci, c
        assert kw["HOIST_LIMIT"] in (0, ci * kw["RH"] * kw["RW"]), c
    # The kernel's hoisting decision (CI_ALL * RH * RW <= HOIST_LIMIT) is the one each original config makes.
    for c in U.GPU_CONFIGS:
        kw = c.kwargs
        hoist = ci * kw["RH"] * kw["RW"] <= kw["HOIST_LIMIT"]
        want = dict(kw, HOIST_LIMIT=ci * kw["RH"] * kw["RW"] if hoist else 0,
                    BLOCK_CI=16 if hoist else min(kw["BLOCK_CI"], ci), BLOCK_MC=min(kw["BLOCK_MC"], mc),
                    BLOCK_CO=min(kw["BLOCK_CO"], co))
        assert (tuple(sorted(want.items())), c.num_warps, c.num_stages) in keys, c
    if case["cin"] == 512:  # only the two 2*16K configs hoist a 512-wide 8x8 tile
        assert sum(c.kwargs["HOIST_LIMIT"] > 0 for c in pruned) == 2


def test_kv_kernel_has_no_prune():
    """The K/V kernel's configs are valid for every shape as they are (nothing to prune)."""
    assert Q._mqa_kv_kernel.early_config_prune is None


# ------------------------------------------------------------------------------------------------ one config
def test_one_config_switch():
    """MNV4_TRITON_ONE_CONFIG=1 (outside the interpreter, as on a GPU) leaves each kernel exactly the first of
    its GPU configs; without it, the whole list. Run in fresh processes: the switch is read at import."""
    code = ("from mnv4_kernels.triton import mqa as Q, uib as U\n"
            "print(len(U._uib_kernel.configs), len(Q._mqa_kv_kernel.configs), len(Q._mqa_attn_kernel.configs),\n"
            "      U._uib_kernel.configs[0] is U.GPU_CONFIGS[0],\n"
            "      Q._mqa_attn_kernel.configs[0] is Q.ATTN_GPU_CONFIGS[0])\n"
            "print(len(U.GPU_CONFIGS), len(Q.KV_GPU_CONFIGS), len(Q.ATTN_GPU_CONFIGS))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "MNV4_TRITON_ONE_CONFIG")}
    full = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    one = subprocess.run([sys.executable, "-c", code], env=dict(env, MNV4_TRITON_ONE_CONFIG="1"),
                         capture_output=True, text=True, timeout=300)
    assert full.returncode == 0 and one.returncode == 0, full.stderr[-3000:] + one.stderr[-3000:]
    counts = full.stdout.split("\n")[1]
    assert full.stdout.split("\n")[0] == counts + " True True", full.stdout
    assert one.stdout.split("\n")[0] == "1 1 1 True True", one.stdout
    assert counts == "11 5 8", counts


# ------------------------------------------------------------------------------------------------ gpu_run.sh
GPU_RUN = os.path.join(REPO, "benches", "gpu_run.sh")
STAGES = ["build", "check", "e2e", "tests_cuda", "tests_triton", "sanitize", "layers"]


def test_gpu_run_parses():
    r = subprocess.run(["bash", "-n", GPU_RUN], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _dry_run(tmp_path, **env):
    out = tmp_path / "out"
    # the script's own defaults, not the caller's build settings (make exports MAX_JOBS=2)
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("MNV4_GPU") and k not in ("MAX_JOBS", "TORCH_CUDA_ARCH_LIST")}
    e.update(MNV4_GPU_DRY_RUN="1", OUT=str(out), PYTHON=sys.executable, TMPDIR=str(tmp_path), **env)
    r = subprocess.run(["bash", GPU_RUN], env=e, capture_output=True, text=True, timeout=120)
    with tarfile.open(out / "logs.tar") as t:
        names = t.getnames()
    with open(out / "status.json") as f:
        stages = [(s["stage"], s["rc"]) for s in json.load(f)["stages"]]
    return r, out, names, stages


def test_gpu_run_dry_run(tmp_path):
    """Every stage runs in order (stubbed), each gpu_suite.py command line parses, the results folder holds at
    most 8 files (logs packed), and the work folder is removed."""
    r, out, names, stages = _dry_run(tmp_path)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and not any((out / f).is_dir() for f in files), files
    assert {"summary.txt", "status.json", "check.json", "logs.tar"} <= set(files), files
    assert [s for s, _ in stages if ":" not in s] == STAGES and all(rc == "0" for _, rc in stages), stages
    assert {f"logs/{s}.log" for s in STAGES} <= set(names), names
    assert [s for s, _ in stages if s.startswith("sanitize:")] == [
        "sanitize:memcheck", "sanitize:racecheck", "sanitize:synccheck"]
    log = r.stdout
    assert "dry run: gpu_suite.py check" in log and "'backends': 'triton'" in log and "'part': '3/4'" in log
    assert "PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck" in log
    assert "--tool racecheck" in log and "--dtypes float16,bfloat16,float32" in log
    assert "MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0" in log
    # the CUDA tests before the Triton tests, in separate pytest processes, each with a per-test timeout
    cuda_at, triton_at = log.index("tests/test_cuda.py"), log.index("tests/test_triton.py")
    assert cuda_at < triton_at
    for name in ("tests/test_cuda.py", "tests/test_triton.py", "tests/test_gpu_prep.py"):
        assert os.path.exists(os.path.join(REPO, name))
    assert log.count("-m pytest") == 2 and log.count("timeout=") >= 2
    assert not list(tmp_path.glob("mnv4-gpu-run.*")), "the work folder was left behind"


def test_gpu_run_stops_after_a_failed_build(tmp_path):
    r, out, names, stages = _dry_run(tmp_path, MNV4_GPU_DRY_RUN_FAIL="build")
    assert r.returncode != 0
    assert stages == [("build", "3")], stages
    assert "stopping" in r.stdout and (out / "summary.txt").exists()


def test_gpu_run_goes_on_after_a_failed_stage_and_skips_when_the_budget_runs_out(tmp_path):
    r, out, names, stages = _dry_run(tmp_path, MNV4_GPU_DRY_RUN_FAIL="check")
    assert r.returncode != 0 and ("check", "3") in stages and ("layers", "0") in stages, stages
    # 80 s (the stubs take ~0 s): build (needs 60) runs, check (45) runs, e2e (90) is skipped with the reason,
    # the others (<= 45) run, in order
    r, out, names, stages = _dry_run(tmp_path / "b", BUDGET_S="80")
    assert r.returncode != 0
    got = dict((s, rc) for s, rc in stages if ":" not in s)
    assert got.pop("e2e") == "skipped" and list(got) == [s for s in STAGES if s != "e2e"], stages
    assert set(got.values()) == {"0"}, stages
    assert "budget: " in (out / "summary.txt").read_text()
    # too little even for the build: nothing else runs
    r, out, names, stages = _dry_run(tmp_path / "c", BUDGET_S="50")
    assert r.returncode != 0 and stages == [("build", "skipped")], stages
