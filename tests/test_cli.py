"""The command line: run (main job), infer (real images, a timm-format checkpoint), bench (quick mode)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "mnv4_kernels", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_run_checks_and_times(tmp_path):
    out = tmp_path / "run"
    r = _cli("run", "--res", "64", "--batch", "2", "--repeats", "2", "--out", str(out),
             "--candidates", "eager-fp32,onnxruntime-fp32,openvino-f32")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "correctness: fused vs reference relative error" in r.stdout and "-> OK" in r.stdout
    data = json.loads((out / "run.json").read_text())
    assert data["correctness"]["ok"] and data["correctness"]["rel_err_vs_reference_fp32"] <= 1e-5
    rows = {row["impl"]: row for row in data["results"]}
    assert list(rows)[0] == "ours-fp32" and {"eager-fp32", "onnxruntime-fp32", "openvino-f32"} <= set(rows)
    assert all(row["median_ms"] > 0 and row["rel_err_vs_reference_fp32"] <= 1e-4 for row in rows.values())
    if data["env"]["machine"] == "x86_64":  # every x86 host this runs on has AVX2; the flags come from /proc/cpuinfo
        assert "avx2" in data["env"]["cpu_flags"] and data["env"]["openvino"]
    assert (out / "run.png").stat().st_size > 1000


def test_run_is_the_default_command(tmp_path):
    r = _cli("--help")
    assert r.returncode == 0 and "run" in r.stdout and "infer" in r.stdout and "bench" in r.stdout


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Two real photos/graphics shipped with matplotlib, a grayscale JPEG, a palette PNG, and a broken file."""
    from matplotlib import cbook

    d = tmp_path_factory.mktemp("images")
    shutil.copy(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), d / "grace_hopper.jpg")
    shutil.copy(cbook.get_sample_data("logo2.png", asfileobj=False), d / "logo2.png")
    g = torch.Generator().manual_seed(3)
    arr = (torch.rand(90, 130, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(arr, mode="L").save(d / "sub_gray.jpg")
    Image.fromarray(arr, mode="L").convert("P").save(d / "palette.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (d / "notes.txt").write_text("not an image, skipped by extension")
    return d


def test_infer_folder_matches_reference(image_folder, shared_dir):
    ckpt = os.path.join(shared_dir, "golden", "mobilenetv4_conv_small_224", "model.safetensors")
    r = _cli("infer", "--model", "mobilenetv4_conv_small", "--checkpoint", ckpt, "--batch", "2", "--json",
             str(image_folder))
    assert r.returncode == 1, r.stderr  # one bad image: reported, the others still classified
    data = json.loads(r.stdout)
    got = {os.path.basename(x["path"]): x["top"] for x in data["results"]}
    assert set(got) == {"grace_hopper.jpg", "logo2.png", "sub_gray.jpg", "palette.png"}
    assert [os.path.basename(e["path"]) for e in data["errors"]] == ["broken.jpg"]

    # independent check: the reference model on the reference preprocessing gives the same top-5
    from mnv4_reference import load_checkpoint, load_image, preprocess, pretrained_cfg
    from mnv4_kernels.labels import imagenet1k_names

    ref = load_checkpoint("mobilenetv4_conv_small", ckpt)
    cfg = pretrained_cfg("mobilenetv4_conv_small")
    for name, top in got.items():
        x = preprocess(load_image(image_folder / name), cfg)
        with torch.no_grad():
            p = ref(x).softmax(-1)[0]
        want = p.topk(5)
        assert [t["index"] for t in top] == want.indices.tolist(), name
        assert [t["prob"] for t in top] == pytest.approx(want.values.tolist(), rel=1e-4, abs=1e-6)
        assert [t["label"] for t in top] == [imagenet1k_names()[i] for i in want.indices.tolist()]


def test_infer_text_output_and_errors(image_folder, shared_dir):
    ckpt = os.path.join(shared_dir, "golden", "mobilenetv4_conv_small_224", "model.safetensors")
    r = _cli("infer", "--model", "mobilenetv4_conv_small", "--checkpoint", ckpt, str(image_folder / "logo2.png"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("%") == 5 and "logo2.png" in r.stdout
    # a checkpoint of another model: a clear error listing the key problems, no traceback
    hyb = os.path.join(shared_dir, "golden", "mobilenetv4_hybrid_medium_256", "model.safetensors")
    r = _cli("infer", "--model", "mobilenetv4_conv_small", "--checkpoint", hyb, str(image_folder / "logo2.png"))
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr
    r = _cli("infer", "--model", "mobilenetv4_conv_small", str(image_folder / "missing.jpg"))
    assert r.returncode == 2 and "missing.jpg" in r.stderr


def test_bench_quick_writes_json_and_plots(tmp_path):
    out = tmp_path / "bench.json"
    r = _cli("bench", "--quick", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(out.read_text())
    assert data["ceilings"]["copy_gbps"] > 0 and data["ceilings"]["gemm_gflops"] > 0
    layers = [x for x in data["records"] if x["kind"] == "layer"]
    assert {x["impl"] for x in layers} >= {"torch-ops", "ours-cpu"}
    assert len({x["layer"] for x in layers}) >= 8  # every distinct UIB shape of conv_small
    assert all(x["rel_err_vs_fp32_torch_ops"] <= 1e-5 for x in layers)
    (e2e,) = [x for x in data["records"] if x["kind"] == "e2e"]
    assert list(e2e["candidates"]) == ["ours-fp32", "eager-fp32"]
    assert all(c["rel_err_vs_reference_fp32"] <= 1e-5 and c["median_ms"] > 0 for c in e2e["candidates"].values())
    assert (tmp_path / "bench-layers-b1.png").exists() and (tmp_path / "bench-roofline.png").exists()
