"""Compile the Triton kernels ahead of time for an NVIDIA target, without a GPU: `python -m
mnv4_kernels.triton.aot_check [--arch 90] [--all]`.

The interpreter (TRITON_INTERPRET=1) checks the kernels' arithmetic but not that they lower to PTX/cubin
(layouts for tl.gather, tl.dot shapes, constexpr control flow); Triton's bundled ptxas does, on any machine.
Default: one autotune config per kernel over the block forms in fp16, fp32 and bf16; --all: every config.
Prints one line per compile (seconds, shared memory bytes); exits non-zero on the first failure.
Must run without TRITON_INTERPRET (the interpreter replaces @triton.jit functions).

Each uib kernel's TTIR is also checked for NaN-dropping max/min (arith.maxnumf / minnumf, what tl.maximum /
tl.minimum compile to by default): its only max is the ReLU, which must keep NaN as torch.relu does. The
interpreter cannot show this (it evaluates both flavours with numpy.maximum, which keeps NaN). mqa's softmax
max may drop NaN: a NaN score still makes the row's sum, and so its output, NaN.
"""

import argparse
import os
import sys
import time


def _signature(fn, ptr_dtype, constexprs):
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*" + ptr_dtype
        elif name == "qk_scale":
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def _compile(kernel, ptr_dtype, constexprs, config, arch):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = kernel.fn  # Autotuner -> JITFunction
    consts = dict(constexprs, **config.kwargs)
    src = ASTSource(fn, _signature(fn, ptr_dtype, consts), consts)
    t = time.time()
    k = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                       options=dict(num_warps=config.num_warps, num_stages=config.num_stages))
    return time.time() - t, k.metadata.shared, k.asm["ttir"]


NAN_DROPPING = ("arith.maxnumf", "arith.minnumf")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability x10 (80, 90, ...)")
    ap.add_argument("--all", action="store_true", help="every autotune config, not one per kernel")
    ap.add_argument("--dtypes", default="fp16,fp32,bf16")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("aot_check: unset TRITON_INTERPRET (the interpreter replaces the compiled kernels)")
    from . import mqa as Q
    from . import uib as U

    def pick(cfgs):
        return cfgs if args.all else cfgs[:1]

    # (KS, S_START, KM, S_MID, CI_ALL, ACT): ExtraDW stride-2 mid not hoisted, IB hoisted, ConvNext stride-2
    # start, FFN; ReLU (1) on the two forms with a mid dw (both activation sites), GELU (2) and none (0).
    uib_forms = [(3, 1, 5, 2, 512, 1), (0, 1, 3, 1, 64, 1), (5, 2, 0, 1, 64, 2), (0, 1, 0, 1, 512, 0)]
    jobs = []
    for dt in args.dtypes.split(","):
        for cfg in pick(U._configs()):
            for ks, ss, km, sm, ci, act in uib_forms:
                c = dict(KS=ks, S_START=ss, KM=km, S_MID=sm, ACT=act, RESIDUAL=True, UPCAST_DOT=False, CI_ALL=ci)
                jobs.append((f"uib {dt} {cfg} form={(ks, ss, km, sm)} CI_ALL={ci} ACT={act}", U._uib_kernel, dt, c,
                             cfg))
        for cfg in pick(Q._kv_configs()):
            for kk, s in [(3, 2), (0, 1)]:
                c = dict(KK=kk, S_KV=s, DKP=64, DVP=64, UPCAST_DOT=False)
                jobs.append((f"mqa_kv {dt} {cfg} KK={kk}", Q._mqa_kv_kernel, dt, c, cfg))
        for cfg in pick(Q._attn_configs()):
            for hp in (4, 8):
                if hp * cfg.kwargs["BLOCK_P"] > 256:
                    continue
                c = dict(HP=hp, DKP=64, DVP=64, RESIDUAL=True, UPCAST_DOT=False)
                jobs.append((f"mqa_attn {dt} {cfg} HP={hp}", Q._mqa_attn_kernel, dt, c, cfg))
    for name, kernel, dt, c, cfg in jobs:
        secs, shared, ttir = _compile(kernel, dt, c, cfg, args.arch)
        dropping = [op for op in NAN_DROPPING if op in ttir]
        if kernel is U._uib_kernel and dropping:
            sys.exit(f"aot_check: {name}: NaN-dropping {', '.join(dropping)} in the TTIR (use a NaN-keeping "
                     "max/min: tl.where, or propagate_nan=tl.PropagateNan.ALL)")
        print(f"ok sm_{args.arch} {name}: {secs:.1f} s, {shared} B shared", flush=True)
    print(f"compiled {len(jobs)} kernels for sm_{args.arch}")


if __name__ == "__main__":
    main()
