"""The torch-free CPU microkernels (csrc/cpu/kernels) against their scalar fallback, from C++.

Drives CMakeLists.txt: configure + build + ctest in build-native/ (AVX2+FMA on this x86-64 CPU),
build-aarch64/ (NEON, cross-compiled with aarch64-linux-gnu-g++ and run under qemu-aarch64; marker `neon`)
and build-asan/ (ASan + UBSan). The C++ test (csrc/cpu/kernels/tests/test_ukernels.cc) poisons every
output buffer and checks every SIMD kernel over the edge-case battery, NaN and infinities included (each
table and the scalar oracle against a direct double loop); it fails if no SIMD table exists.
"""

import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _need(tool):
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed (.ci/run installs it; see README)")


def _cmake_ctest(build_dir, *configure_args):
    _need("cmake")
    build = os.path.join(ROOT, build_dir)
    run = lambda *cmd: subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)  # noqa: E731
    r = run("cmake", "-S", ".", "-B", build, *configure_args)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("cmake", "--build", build, "-j", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    # test_bf16 runs in test_bf16_* below, which also check which of its tables ran
    r = run("ctest", "--test-dir", build, "--output-on-failure", "-E", "ukernels_bf16")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "100% tests passed" in r.stdout, r.stdout
    return r.stdout


def _run_all(build_dir, emulator=()):
    exe = os.path.join(ROOT, build_dir, "test_ukernels")
    r = subprocess.run([*emulator, exe, "all"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_native_simd_vs_scalar():
    _cmake_ctest("build-native")
    out = _run_all("build-native")
    import platform
    if platform.machine() in ("x86_64", "AMD64"):
        assert "avx2_fma gemm" in out, out  # this CPU has AVX2+FMA: the AVX2 kernels were the ones tested
        assert "avx2_fma nan" in out, out  # NaN / infinity propagation as in torch (ukernels.h)


@pytest.mark.neon
def test_aarch64_neon_under_qemu():
    _need("aarch64-linux-gnu-g++")
    _need("qemu-aarch64")
    _cmake_ctest("build-aarch64", "-DCMAKE_TOOLCHAIN_FILE=cmake/aarch64.cmake")
    out = _run_all("build-aarch64", ("qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"))
    assert "neon gemm" in out and "neon dwconv" in out and "neon nan" in out and "0 failures" in out, out


def test_sanitizers():
    _cmake_ctest("build-asan", "-DMNV4_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo")


# ---- reduced precision (csrc/cpu/kernels/tests/test_bf16.cc): bf16 everywhere, fp16 on aarch64 ----

def _bf16_run(build_dir, configure_args=(), emulator=()):
    _need("cmake")
    build = os.path.join(ROOT, build_dir)
    run = lambda *cmd, **kw: subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, **kw)  # noqa: E731
    r = run("cmake", "-S", ".", "-B", build, *configure_args)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run("cmake", "--build", build, "-j", "2", "--target", "test_bf16")
    assert r.returncode == 0, r.stdout + r.stderr
    env = dict(os.environ, QEMU_CPU="max")  # qemu-aarch64: a CPU with BF16 and FP16
    r = run(*emulator, os.path.join(build, "test_bf16"), "all", env=env)
    print(r.stdout.splitlines()[-5:])  # which tables ran natively / emulated / were skipped, and why
    assert r.returncode == 0, r.stdout[-20000:] + r.stderr
    assert " 0 failures" in r.stdout, r.stdout[-5000:]
    return r.stdout


def _cpu_vendor():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def test_bf16_native():
    out = _bf16_run("build-native")
    import platform
    # the AMX kernel's logic through the portable tile emulation, on every CPU
    assert "bf16:amx_emu_portable" in out.split("emulated")[1].splitlines()[0], out[-3000:]
    # neon_fp16's arithmetic, portably, and avx512fp16's kernel over portable fp16 vectors (the f16 ops'
    # schedules run both in tests/test_fp16_cpu.py), each bit for bit with the chunked fp16 arithmetic
    emulated = out.split("emulated")[1].splitlines()[0]
    assert "f16:neon_fp16_emu" in emulated and "f16:avx512fp16_emu" in emulated, out[-3000:]
    for table in ("neon_fp16_emu", "avx512fp16_emu"):
        assert re.search(rf"\n{table}: [1-9]\d* cases bit for bit with the chunked fp16 arithmetic", out), out[-3000:]
    if platform.machine() in ("x86_64", "AMD64"):
        from mnv4_kernels import report
        flags = report.cpu_flags()
        native = out.split("native:")[1].splitlines()[0]
        if "avx2" in flags and "fma" in flags:  # the AVX2 convert-on-load table (x86 CPUs without AVX-512)
            assert "bf16:avx2 " in native + " ", out[-3000:]
        if "avx512bw" in flags and "avx512vl" in flags:
            assert "bf16:avx512 " in native + " " and "bf16:amx_emu" in out, out[-3000:]
        if "avx512_bf16" in flags:
            assert "bf16:avx512bf16" in native, out[-3000:]
        if "amx_bf16" in flags:  # the native AMX kernel runs where the CPU has it (else it says why not)
            assert "bf16:amx " in native + " ", out[-3000:]
        if "avx512_fp16" in flags and "avx512bw" in flags and "avx512vl" in flags:  # vfmadd231ph, and the pick
            assert "f16:avx512fp16 " in native + " ", out[-3000:]
            assert re.search(r"\navx512fp16: [1-9]\d* cases bit for bit", out), out[-3000:]
            assert out.split("default tables: bf16 ")[1].split(", f16 ")[1].split()[0] == "avx512fp16", out[-3000:]
        # the automatic bf16 pick: amx where usable, else avx512bf16 only where its dot product outruns the FMAs
        # (on Intel cores it runs at half their rate, and the convert-on-load avx512 table is faster)
        default = out.split("default tables: bf16 ")[1].split(",")[0]
        if "bf16:avx512bf16" in native:
            rate = float(out.split("avx512bf16 dot rate (vdpbf16ps / fma multiply-adds): ")[1].split()[0])
            if "bf16:amx " not in native + " ":
                assert default == ("avx512bf16" if rate > 1 else "avx512"), (default, rate)
            if _cpu_vendor() == "AuthenticAMD":  # Zen 4 / 5: twice the FMAs' rate (bf16-kernels-*-zen4.json)
                assert rate > 1.2, rate


@pytest.mark.neon
def test_bf16_aarch64_under_qemu():
    _need("aarch64-linux-gnu-g++")
    _need("qemu-aarch64")
    out = _bf16_run("build-aarch64", ("-DCMAKE_TOOLCHAIN_FILE=cmake/aarch64.cmake",),
                    ("qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"))
    native = out.split("native:")[1].splitlines()[0]
    assert "bf16:neon_bf16" in native and "f16:neon_fp16" in native and "bf16:neon " in native + " ", out[-3000:]
    # FMLA .8h computes the chunked fp16 arithmetic bit for bit, as the emulation that tests the f16 ops on every
    # CPU does
    assert re.search(r"\nneon_fp16: [1-9]\d* cases bit for bit with the chunked fp16 arithmetic", out), out[-3000:]


def test_bf16_sanitizers():
    _bf16_run("build-asan", ("-DMNV4_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo"))
