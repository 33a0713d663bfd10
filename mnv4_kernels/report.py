"""Machine facts, JSON results and plots shared by `run`, `bench` and the scripts in benches/."""

import importlib.metadata
import json
import os
import platform
import re
import shlex
import sys
import time

import torch


def _cpuinfo():
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return _cpuinfo_fields(f.read())
    except OSError:
        return {}


def cpu_model():
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def _cpuinfo_fields(text):
    """The first processor's `key: value` lines of /proc/cpuinfo text, as a dict."""
    fields = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def amd_core_generation(fields):
    """'zen3' / 'zen4' / 'zen5' for an AMD CPU's /proc/cpuinfo fields, else None.

    A VM's model name can be the bare "AMD EPYC" on both Zen 4 and Zen 5 hosts, whose fp32 peaks differ 2.5x
    (Zen 5 has full-width AVX-512 units), so results files need the core generation in their name. Family
    19h holds Zen 3 and Zen 4 (Zen 4: models 10h-1Fh, 60h-7Fh, A0h-AFh), family 1Ah is Zen 5.
    """
    if fields.get("vendor_id") != "AuthenticAMD":
        return None
    try:
        family, model = int(fields["cpu family"]), int(fields["model"])
    except (KeyError, ValueError):
        return None
    if family == 0x1A:
        return "zen5"
    if family == 0x19:
        return "zen4" if 0x10 <= model <= 0x1F or 0x60 <= model <= 0x7F or 0xA0 <= model <= 0xAF else "zen3"
    return None


# /proc/cpuinfo flags that name an instruction set a kernel may use (x86 `flags`, aarch64 `Features`)
_ISA_FLAG = re.compile(r"^(sse4_[12]|ssse3|avx.*|fma|f16c|amx.*|asimd.*|sve.*|bf16|i8mm|fphp|sme(?!p$).*)$")


def isa_flags(fields):
    """The instruction-set flags of a processor's /proc/cpuinfo fields, sorted (e.g. avx512_bf16, amx_bf16,
    avx512_fp16 on x86; asimdhp, bf16, i8mm, sve on aarch64)."""
    words = (fields.get("flags") or fields.get("Features") or "").split()
    return sorted(w for w in set(words) if _ISA_FLAG.match(w))


def cpu_flags():
    """This machine's instruction-set flags (isa_flags of the first processor in /proc/cpuinfo; [] without it)."""
    return isa_flags(_cpuinfo())


def cpu_generation():
    return amd_core_generation(_cpuinfo())


def machine_tag(device="cpu"):
    """A short file-name-safe tag for results/: cpu-<arch>-<cpu model>[-<AMD core generation>], or the GPU's name."""
    if torch.device(device).type == "cuda":
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        gen = cpu_generation()
        name = f"cpu-{platform.machine()}-{cpu_model()}" + (f"-{gen}" if gen else "")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-").lower()


def env_info(device="cpu"):
    info = {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable)] + sys.argv),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_generation": cpu_generation(),
        "cpu_flags": cpu_flags(),
        "mnv4_cpu_isa": _mnv4_isa("isa"),
        "mnv4_cpu_lp_isa": _mnv4_isa("lp_isa"),
        "mnv4_cpu_f16_isa": _mnv4_isa("f16_isa"),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "device": str(device),
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    for dist in ("numpy", "triton", "onnxruntime", "openvino", "executorch"):
        try:
            info[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info[dist] = None
    return info


def _mnv4_isa(op):
    """What torch.ops.mnv4_cpu.<op> says our CPU ops picked on this machine: the fp32 table (isa), the bf16 one
    (lp_isa), what computes fp16 (f16_isa); None where the extension is not loaded."""
    try:
        import mnv4_kernels  # noqa: F401  (registers torch.ops.mnv4_cpu)

        return getattr(torch.ops.mnv4_cpu, op)()
    except Exception:
        return None


def write_json(path, payload):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, sort_keys=False)
        f.write("\n")
    return path


def format_table(rows, columns):
    """rows: list of dicts; columns: list of (key, header, format). Returns a plain-text table."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append([("" if r.get(k) is None else fmt.format(r[k])) for k, _, fmt in columns])
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_plot(path, labels, values, title, ylabel, reference_line=None):
    """A horizontal bar chart (one bar per label); `reference_line` draws e.g. speedup = 1."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(labels) + 1.5))
    ax.barh(range(len(labels)), values, color="#3b75af")
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(ylabel)
    ax.set_title(title, fontsize=10)
    if reference_line is not None:
        ax.axvline(reference_line, color="k", lw=0.8, ls="--")
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def roofline_plot(path, points, peak_gflops, peak_gbps, title):
    """points: list of (label, arithmetic intensity FLOP/B, achieved GFLOP/s). Points sharing a label's
    last word (e.g. b1 / b8) share a colour; names are written only when there are few points."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5))
    lo = min([p[1] for p in points] + [0.1]) / 2
    hi = max([p[1] for p in points] + [peak_gflops / peak_gbps]) * 4
    xs = [lo * (hi / lo) ** (i / 100) for i in range(101)]
    ax.loglog(xs, [min(peak_gflops, x * peak_gbps) for x in xs], "k-", lw=1,
              label=f"ceilings: {peak_gbps:.1f} GB/s copy, {peak_gflops:.1f} GFLOP/s GEMM")
    groups = {}
    for label, ai, gf in points:
        groups.setdefault(label.split()[-1], []).append((label, ai, gf))
    for group, pts in sorted(groups.items()):
        ax.loglog([p[1] for p in pts], [p[2] for p in pts], "o", ms=4, alpha=0.7, label=group)
        if len(points) <= 20:
            for label, ai, gf in pts:
                ax.annotate(label, (ai, gf), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel("arithmetic intensity (FLOP / byte of compulsory traffic)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
