"""Builds mnv4_kernels._C.

The CPU sources are always built. The CUDA sources (csrc/cuda/) are built only when the installed torch
is a CUDA build and nvcc is found; otherwise the build says why it skipped them. Install with

    pip install --no-build-isolation -e .

(`--no-build-isolation` so that pip builds against the torch already installed instead of fetching one).
"""

import glob
import os
import shutil

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _sources(*patterns):
    found = []
    for pattern in patterns:
        found += glob.glob(os.path.join("csrc", pattern), recursive=True)
    return sorted(found)


def _cuda_skip_reason():
    """None when the CUDA sources can be built, else the reason they cannot."""
    if os.environ.get("MNV4_NO_CUDA") == "1":
        return "MNV4_NO_CUDA=1 is set"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else shutil.which("nvcc")
    if not nvcc or not os.path.exists(nvcc):
        return "nvcc was not found (set CUDA_HOME)"
    return None


cpu_sources = _sources("ops.cpp", "cpu/*.cpp", "cpu/kernels/**/*.cpp")
cuda_sources = _sources("cuda/*.cu", "cuda/*.cpp")
include_dirs = [os.path.join(ROOT, "csrc")]
cxx_flags = ["-O3", "-g0", "-fopenmp"]
link_flags = ["-fopenmp"]

skip = _cuda_skip_reason()
if skip is None and cuda_sources:
    arch = os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    print(f"mnv4_kernels: building CUDA kernels for sm {arch}")
    ext = CUDAExtension(
        "mnv4_kernels._C",
        cpu_sources + cuda_sources,
        include_dirs=include_dirs,
        extra_compile_args={
            "cxx": cxx_flags,
            "nvcc": ["-O3", "-lineinfo", "--expt-relaxed-constexpr"],
        },
        extra_link_args=link_flags,
    )
else:
    print(f"mnv4_kernels: skipping the CUDA kernels: {skip or 'no CUDA sources'}")
    ext = CppExtension(
        "mnv4_kernels._C",
        cpu_sources,
        include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=link_flags,
    )

setup(
    name="mnv4_kernels",
    version="0.1.0",
    description="Fused MobileNetV4 kernels (UIB, Mobile MQA) as torch ops, and a pure-PyTorch reference",
    packages=["mnv4_kernels", "mnv4_kernels.triton", "mnv4_reference"],
    package_dir={"mnv4_reference": "python/mnv4_reference"},
    package_data={"mnv4_kernels": ["data/*.tsv"]},
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.10",
    extras_require={"ray": ["ray[data]==2.60.0"]},
)
