"""Every csrc/cuda/*.cu compiles with nvcc for sm_80 and sm_90 against the installed torch's headers.

The CPU torch wheel cannot link CUDA code, so this is `nvcc -c` only (object files under a temp dir), with
the flags torch's BuildExtension would pass (COMMON_NVCC_FLAGS, -std=c++20, the ABI and extension -D flags)
plus setup.py's own nvcc flags, `-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE` (the CPU wheel ships no
cuda_cmake_macros.h) and warnings as errors for our own code (host -Wall, ptxas spills). The kernels
themselves run in tests/test_cuda.py on a GPU machine.
"""

import glob
import os
import re
import shutil
import subprocess
import time

import pytest
import torch
import torch.utils.cpp_extension as cpp_ext

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_SOURCES = sorted(glob.glob(os.path.join(REPO, "csrc", "cuda", "*.cu")))
ARCHS = ("80", "90")

pytestmark = pytest.mark.cuda_compile


def _nvcc():
    nvcc = shutil.which("nvcc")
    for cand in ("/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc"):
        if nvcc is None and os.path.exists(cand):
            nvcc = cand
    if nvcc is None:
        pytest.fail("nvcc not found on PATH, /usr/local/cuda/bin or /usr/local/bin: the CUDA compile check "
                    "needs the CUDA toolkit (CI has it)")
    return nvcc


def _setup_nvcc_flags():
    """The nvcc flags setup.py passes to CUDAExtension (read from its text, so the two cannot drift)."""
    with open(os.path.join(REPO, "setup.py")) as f:
        text = f.read()
    m = re.search(r'"nvcc":\s*\[([^\]]*)\]', text)
    assert m, "setup.py no longer has an extra_compile_args['nvcc'] list; update this test"
    return re.findall(r'"([^"]+)"', m.group(1))


def _flags():
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    flags = list(cpp_ext.COMMON_NVCC_FLAGS)
    flags += ["-I" + p for p in cpp_ext.include_paths()] + ["-I" + os.path.join(REPO, "csrc")]
    flags += ["-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C", f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
              "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE", "-std=c++20", "-Xcompiler", "-fPIC"]
    flags += [f for f in _setup_nvcc_flags() if f not in flags]
    for arch in ARCHS:
        flags += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    # One nvcc thread: CI has two busy cores. Warnings in our code (and register spills) are errors.
    flags += ["-t", "1", "-Xcompiler", "-Wall,-Werror", "-Werror", "all-warnings", "-Xptxas", "-warn-spills"]
    return flags


def test_there_are_cuda_sources():
    names = sorted(os.path.basename(p) for p in CUDA_SOURCES)
    assert {"uib.cu", "mqa.cu"} <= set(names), f"csrc/cuda has {names}"


def test_setup_builds_the_cuda_sources():
    """setup.py's CUDA branch globs csrc/cuda/*.cu, targets sm 8.0 and 9.0, and passes the flags we use here."""
    with open(os.path.join(REPO, "setup.py")) as f:
        text = f.read()
    assert '"cuda/*.cu"' in text, "setup.py must glob csrc/cuda/*.cu"
    assert "CUDAExtension" in text and '"8.0;9.0"' in text, "setup.py must build the CUDA sources for 8.0;9.0"
    flags = _setup_nvcc_flags()
    assert "--expt-relaxed-constexpr" in flags, flags


@pytest.fixture(scope="module")
def nvcc_results(tmp_path_factory):
    """Compiles every source at once (one nvcc process each, -t 1): {source: (returncode, stderr, stdout,
    seconds, object path, command)}."""
    nvcc = _nvcc()
    out_dir = tmp_path_factory.mktemp("nvcc")
    procs = {}
    t0 = time.monotonic()
    for source in CUDA_SOURCES:
        obj = out_dir / (os.path.basename(source) + ".o")
        cmd = [nvcc, "-c", source, "-o", str(obj)] + _flags()
        procs[source] = (subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO),
                         obj, cmd)
    results = {}
    for source, (proc, obj, cmd) in procs.items():
        stdout, stderr = proc.communicate(timeout=900)
        results[source] = (proc.returncode, stderr, stdout, time.monotonic() - t0, obj, cmd)
    return results


@pytest.mark.parametrize("source", CUDA_SOURCES, ids=[os.path.basename(p) for p in CUDA_SOURCES])
def test_nvcc_compiles(source, nvcc_results):
    rc, stderr, stdout, elapsed, obj, cmd = nvcc_results[source]
    assert rc == 0, (
        f"nvcc failed ({rc}) on {os.path.relpath(source, REPO)} after {elapsed:.0f} s\n"
        f"command: {' '.join(cmd)}\n--- stderr ---\n{stderr[-20000:]}\n--- stdout ---\n{stdout[-4000:]}")
    assert obj.stat().st_size > 0
    # Both architectures made it into the object (fatbinary with sm_80 and sm_90 cubins).
    nvcc = _nvcc()
    cuobjdump = shutil.which("cuobjdump") or os.path.join(os.path.dirname(nvcc), "cuobjdump")
    if os.path.exists(cuobjdump):
        listing = subprocess.run([cuobjdump, "--list-elf", str(obj)], capture_output=True, text=True).stdout
        for arch in ARCHS:
            assert f"sm_{arch}" in listing, f"no sm_{arch} cubin in {obj.name}:\n{listing}"


# ------------------------------------------------------------------------------------------------ emulated run
# The kernels' device code (csrc/cuda/*_kernel.cuh, the same text nvcc compiles above) built with g++ against
# csrc/cuda/emu/cuda_emu.h, a CPU model of the CUDA features they use (a thread per CUDA thread, a barrier
# per __syncthreads, shared memory poisoned with NaN, WMMA tiles). It runs the real index math, tiling,
# masking, chunking and planning on the edge-case battery against the composite; what it cannot check
# (warp-level behaviour, the hardware) is left to tests/test_cuda.py on a GPU.
from mnv4_kernels import ops as mops  # noqa: E402
from mnv4_reference import functional as F  # noqa: E402
from mnv4_reference.testing import mqa_battery, random_mqa_args, random_uib_args, rel_err, uib_battery  # noqa: E402

H100_SMEM, A100_SMEM = 232448, 166912  # opt-in dynamic shared memory per block (bytes)
UNIT_ROUNDOFF = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}
UIB = uib_battery()
MQA = mqa_battery()


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    exe = tmp_path_factory.mktemp("emu") / "emu_main"
    # AddressSanitizer + UBSan: any out-of-bounds read or write of x, the weights, the output, the K/V
    # workspace or the (exactly sized) shared memory aborts the run.
    cmd = [shutil.which("g++") or "g++", "-std=c++20", "-O2", "-g0", "-pthread", "-Wall", "-Wextra", "-Werror",
           "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer",
           "-Wno-unknown-pragmas", "-DMNV4_CUDA_EMU", "-I" + os.path.join(REPO, "csrc"),
           os.path.join(REPO, "csrc", "cuda", "emu", "emu_main.cpp"), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"g++ failed on the emulated kernels:\n{proc.stderr[-20000:]}"
    return str(exe)


def _storage(x):
    n = x.untyped_storage().nbytes() // x.element_size()
    return torch.empty(0, dtype=x.dtype).set_(x.untyped_storage(), 0, (n,), (1,))


def _run_emu(exe, tmp_path, kind, args, smem_limit=H100_SMEM):
    """Runs the emulated CUDA op on CPU args; returns (output with the fake kernel's strides, plan line)."""
    d = tmp_path / f"call{len(list(tmp_path.iterdir()))}"
    d.mkdir()
    x = args[0]
    fake = (mops._uib_fake if kind == "uib" else mops._mqa_fake)(*args)
    spec = dict(op=kind, dtype=str(x.dtype).replace("torch.", ""), x_offset=x.storage_offset(),
                out_numel=fake.numel(), smem_limit=smem_limit, batch=x.shape[0])
    spec.update({f"xs{i}": s for i, s in enumerate(x.stride())})
    spec.update({f"os{i}": s for i, s in enumerate(fake.stride())})

    def put(name, t):
        if t is not None:
            t.detach().reshape(-1).float().numpy().tofile(d / f"{name}.f32")

    put("x", _storage(x))
    if kind == "uib":
        _, sw, sb, ew, eb, mw, mb, pw, pb, stride, residual, act = args
        for name, t in dict(sw=sw, sb=sb, ew=ew, eb=eb, mw=mw, mb=mb, pw=pw, pb=pb).items():
            put(name, None if t is None else t.contiguous())
        spec.update(cin=x.shape[1], h=x.shape[2], w=x.shape[3], mid=ew.shape[0], cout=pw.shape[0], oh=fake.shape[2],
                    ow=fake.shape[3], ks=sw.shape[-1] if sw is not None else 0,
                    km=mw.shape[-1] if mw is not None else 0, stride=stride, residual=int(residual),
                    act={"none": 0, "relu": 1, "gelu": 2}[act])
    else:
        _, sc, sf, qw, kdw, kdb, kw, vdw, vdb, vw, ow, heads, kvs, residual = args
        for name, t in dict(scale=sc, shift=sf, qw=qw, kdw=kdw, kdb=kdb, kw=kw, vdw=vdw, vdb=vdb, vw=vw, ow=ow).items():
            put(name, None if t is None else t.contiguous())
        spec.update(c=x.shape[1], h=x.shape[2], w=x.shape[3], heads=heads, dk=qw.shape[0] // heads, dv=vw.shape[0],
                    cout=ow.shape[0], kk=kdw.shape[-1] if kdw is not None else 0, kv_stride=kvs,
                    residual=int(residual))
    (d / "spec.txt").write_text("".join(f"{k} {v}\n" for k, v in spec.items()))
    proc = subprocess.run([exe, str(d)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"emulated {kind} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    flat = torch.from_numpy(__import__("numpy").fromfile(d / "out.f32", dtype="float32"))
    assert flat.numel() == fake.numel()
    out = torch.as_strided(flat.to(x.dtype), fake.shape, fake.stride())
    return out, proc.stdout.strip()


def _oracle(kind, args):
    comp = F.uib if kind == "uib" else F.mqa
    return comp(*[a.double() if isinstance(a, torch.Tensor) else a for a in args])


def _check(exe, tmp_path, kind, args, smem_limit=H100_SMEM):
    out, plan = _run_emu(exe, tmp_path, kind, args, smem_limit)
    ref = _oracle(kind, args)
    err = rel_err(out, ref)
    dtype = args[0].dtype
    if dtype == torch.float32:
        assert err <= 1e-5, f"rel_err {err:.3g} > 1e-5 ({plan})"
    else:
        comp = F.uib if kind == "uib" else F.mqa
        err_c = rel_err(comp(*args), ref)
        bound = max(2.0 * err_c, UNIT_ROUNDOFF[dtype])
        assert err <= bound, f"rel_err {err:.3g} > {bound:.3g} (composite in {dtype}: {err_c:.3g}; {plan})"
    return plan


def _uib_id(i, c):
    return f"{i}-cin{c['cin']}-mid{c['mid']}-hw{c['h']}x{c['w']}-ks{c['k_start']}-km{c['k_mid']}-s{c['stride']}"


@pytest.mark.parametrize("case", UIB, ids=[_uib_id(i, c) for i, c in enumerate(UIB)])
def test_emulated_uib_fp32(emu, tmp_path, case):
    _check(emu, tmp_path, "uib", random_uib_args(**case, channels_last=case["seed"] % 2 == 0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("case", UIB[1::5], ids=[_uib_id(i, c) for i, c in enumerate(UIB[1::5])])
def test_emulated_uib_low_precision(emu, tmp_path, case, dtype):
    _check(emu, tmp_path, "uib", random_uib_args(**case, dtype=dtype, channels_last=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("form", [(3, 5), (0, 3), (5, 0), (0, 0)], ids=["extradw", "ib", "convnext", "ffn"])
def test_emulated_uib_small_smem_many_tiles_and_chunks(emu, tmp_path, form, dtype):
    """A tight shared-memory limit forces small tiles and several mid chunks (partial last chunk)."""
    ks, km = form
    stride = 2 if (ks or km) else 1
    args = random_uib_args(2, 21, 11, 10, 72, 19, k_start=ks, k_mid=km, stride=stride, activation="gelu",
                           dtype=dtype, channels_last=True, seed=7)
    plan = _check(emu, tmp_path, "uib", args, smem_limit=24 * 1024)
    assert "mc 16" in plan or "mc 32" in plan, plan


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_emulated_uib_real_layer_shape(emu, tmp_path, dtype):
    """conv_large blocks.3.x-like (Cin 512 -> mid 2048 in chunks, k5) under A100's smem limit (fp32 fits there
    only because its GEMM operands are not padded to 16)."""
    fp32 = dtype == torch.float32
    args = random_uib_args(1, 512, 3 if fp32 else 5, 4, 2048, 512, k_start=5, k_mid=5 if fp32 else 3, dtype=dtype,
                           channels_last=True)
    _check(emu, tmp_path, "uib", args, smem_limit=A100_SMEM)


def test_emulated_uib_non_contiguous_input(emu, tmp_path):
    args = list(random_uib_args(2, 9, 7, 6, 24, 9, k_start=3, k_mid=5, residual=True, seed=3))
    big = torch.randn(2, 9, 7, 12)
    big[:, :, :, ::2] = args[0]
    args[0] = big[:, :, :, ::2]
    _check(emu, tmp_path, "uib", tuple(args))


def test_emulated_uib_too_wide_reports(emu, tmp_path):
    args = random_uib_args(1, 4096, 3, 3, 16, 8, k_start=5, k_mid=5)
    with pytest.raises(AssertionError, match="shared memory"):
        _run_emu(emu, tmp_path, "uib", args)


def _mqa_id(i, c):
    return f"{i}-c{c['c']}-hw{c['h']}x{c['w']}-h{c['num_heads']}-dk{c['key_dim']}-kvs{c['kv_stride']}"


@pytest.mark.parametrize("case", MQA, ids=[_mqa_id(i, c) for i, c in enumerate(MQA)])
def test_emulated_mqa_fp32(emu, tmp_path, case):
    _check(emu, tmp_path, "mqa", random_mqa_args(**case, channels_last=case["seed"] % 2 == 1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("case", MQA[::3], ids=[_mqa_id(i, c) for i, c in enumerate(MQA[::3])])
def test_emulated_mqa_low_precision(emu, tmp_path, case, dtype):
    _check(emu, tmp_path, "mqa", random_mqa_args(**case, dtype=dtype, channels_last=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_emulated_mqa_small_smem_many_chunks(emu, tmp_path, dtype):
    """Small limit: query tiles < 16, several weight chunks and key chunks (online softmax across chunks)."""
    args = random_mqa_args(2, 40, 9, 11, num_heads=3, key_dim=24, value_dim=20, cout=36, residual=False,
                           kv_stride=1, kv_dw=True, dtype=dtype, seed=9)
    plan = _check(emu, tmp_path, "mqa", args, smem_limit=40 * 1024)
    assert "kc 16" in plan or "kc 32" in plan, plan


def test_emulated_mqa_hybrid_large_stage2(emu, tmp_path):
    """hybrid_large blocks.2.7: C 192, 8 heads x 48, kv stride 2 at 12x12 (M 36 keys), fp16."""
    args = random_mqa_args(1, 192, 12, 12, num_heads=8, key_dim=48, kv_stride=2, dtype=torch.float16,
                           channels_last=True)
    _check(emu, tmp_path, "mqa", args)


# NaN propagation: a NaN reaches exactly the outputs it reaches in the composite (torch.relu / F.gelu keep
# NaN; the softmax row of a NaN score is NaN). Placed in x and in a 1x1 weight; a depthwise weight's NaN is left
# out, because torch's own convs disagree at the image border there (fp32 skips padded taps, float64
# multiplies them: NaN * 0). The emulator poisons shared memory with NaN, so a read of an unwritten element
# would also show up here as an extra NaN.
NAN_UIB = [
    (dict(n=2, cin=9, h=7, w=8, mid=20, cout=9, k_start=3, k_mid=5, stride=1, activation="relu", seed=60), "x"),
    (dict(n=1, cin=9, h=9, w=7, mid=20, cout=11, k_start=0, k_mid=3, stride=2, activation="relu", seed=61), "x"),
    (dict(n=1, cin=8, h=6, w=9, mid=24, cout=8, k_start=5, k_mid=0, stride=1, activation="gelu", seed=62), "x"),
    (dict(n=1, cin=12, h=5, w=6, mid=20, cout=7, k_start=0, k_mid=0, stride=1, activation="relu", seed=63), "x"),
    (dict(n=1, cin=9, h=6, w=7, mid=20, cout=9, k_start=3, k_mid=3, stride=1, activation="relu", seed=64), "expand_w"),
    (dict(n=1, cin=9, h=6, w=7, mid=20, cout=10, k_start=0, k_mid=5, stride=2, activation="none", seed=65), "proj_w"),
]
NAN_MQA = [
    (dict(n=2, c=12, h=5, w=6, num_heads=2, key_dim=16, kv_stride=2, seed=70), "x"),
    (dict(n=1, c=12, h=4, w=5, num_heads=2, key_dim=16, kv_stride=1, seed=71), "x"),
    (dict(n=1, c=12, h=5, w=6, num_heads=2, key_dim=16, kv_stride=2, seed=72), "o_w"),
    (dict(n=1, c=12, h=5, w=4, num_heads=3, key_dim=16, kv_stride=1, residual=False, cout=10, seed=73), "k_w"),
]
# Where the NaN goes: (argument index, element index); x's index is filled in from the case.
NAN_AT = {"expand_w": (3, (3, 2)), "proj_w": (7, (4, 5)), "o_w": (10, (5, 7)), "k_w": (6, (2, 4))}


def _with_nan(args, case, where):
    args = list(args)
    if where == "x":
        i, idx = 0, (case["n"] - 1, 1, case["h"] // 2, case["w"] // 2)
    else:
        i, idx = NAN_AT[where]
    t = args[i].clone()  # clone keeps x's memory format
    t[idx] = float("nan")
    args[i] = t
    return tuple(args)


def _check_nan(exe, tmp_path, kind, args):
    out, plan = _run_emu(exe, tmp_path, kind, args)
    ref = _oracle(kind, args)
    mask = ref.isnan()
    assert mask.any(), "the case must produce a NaN"
    assert torch.equal(out.isnan(), mask), (
        f"NaN mask differs: {int(out.isnan().sum())} NaN in the kernel, {int(mask.sum())} in the composite ({plan})")
    if not mask.all():  # the finite part, with _check's bounds
        dtype, err = args[0].dtype, rel_err(out[~mask], ref[~mask])
        if dtype == torch.float32:
            assert err <= 1e-5, f"rel_err {err:.3g} > 1e-5 ({plan})"
        else:
            comp = F.uib if kind == "uib" else F.mqa
            bound = max(2.0 * rel_err(comp(*args)[~mask], ref[~mask]), UNIT_ROUNDOFF[dtype])
            assert err <= bound, f"rel_err {err:.3g} > {bound:.3g} ({plan})"


# fp32 (FMA GEMM) for every case, the 16-bit WMMA path on the first of each op (the emulator is slow under ASan).
NAN_UIB_RUNS = [(c, w, torch.float32) for c, w in NAN_UIB] + [(*NAN_UIB[0], torch.float16)]
NAN_MQA_RUNS = [(c, w, torch.float32) for c, w in NAN_MQA] + [(*NAN_MQA[0], torch.bfloat16)]


def _nan_id(runs):
    return [f"{i}-{w}-{str(d)[6:]}" for i, (_, w, d) in enumerate(runs)]


@pytest.mark.parametrize("case,where,dtype", NAN_UIB_RUNS, ids=_nan_id(NAN_UIB_RUNS))
def test_emulated_uib_nan_propagates(emu, tmp_path, case, where, dtype):
    args = random_uib_args(**case, dtype=dtype, channels_last=case["seed"] % 2 == 1)
    _check_nan(emu, tmp_path, "uib", _with_nan(args, case, where))


@pytest.mark.parametrize("case,where,dtype", NAN_MQA_RUNS, ids=_nan_id(NAN_MQA_RUNS))
def test_emulated_mqa_nan_propagates(emu, tmp_path, case, where, dtype):
    args = random_mqa_args(**case, dtype=dtype, channels_last=case["seed"] % 2 == 1)
    _check_nan(emu, tmp_path, "mqa", _with_nan(args, case, where))
