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
    assert "--expt-relaxed-constexpr" in flags and "-DMNV4_WITH_CUDA" in flags, flags


@pytest.mark.parametrize("source", CUDA_SOURCES, ids=[os.path.basename(p) for p in CUDA_SOURCES])
def test_nvcc_compiles(source, tmp_path):
    nvcc = _nvcc()
    obj = tmp_path / (os.path.basename(source) + ".o")
    cmd = [nvcc, "-c", source, "-o", str(obj)] + _flags()
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, (
        f"nvcc failed ({proc.returncode}) on {os.path.relpath(source, REPO)} after {elapsed:.0f} s\n"
        f"command: {' '.join(cmd)}\n--- stderr ---\n{proc.stderr[-20000:]}\n--- stdout ---\n{proc.stdout[-4000:]}")
    assert obj.stat().st_size > 0
    # Both architectures made it into the object (fatbinary with sm_80 and sm_90 cubins).
    cuobjdump = shutil.which("cuobjdump") or os.path.join(os.path.dirname(nvcc), "cuobjdump")
    if os.path.exists(cuobjdump):
        listing = subprocess.run([cuobjdump, "--list-elf", str(obj)], capture_output=True, text=True).stdout
        for arch in ARCHS:
            assert f"sm_{arch}" in listing, f"no sm_{arch} cubin in {obj.name}:\n{listing}"
