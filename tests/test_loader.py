"""load_checkpoint: every file format and wrapping it accepts, and every way it must refuse."""

import os
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from mnv4_reference import CheckpointError, create_model, load_checkpoint
from mnv4_reference.testing import rel_err

SMALL = "mobilenetv4_conv_small_035"  # the cheapest model


@pytest.fixture(scope="module")
def golden(shared_dir):
    d = os.path.join(shared_dir, "golden", "mobilenetv4_conv_small_224")
    return os.path.join(d, "model.safetensors"), load_file(os.path.join(d, "io.safetensors"))


@pytest.fixture(scope="module")
def fresh_sd():
    torch.manual_seed(0)
    return create_model(SMALL, num_classes=10).state_dict()


def _same(model, sd):
    got = model.state_dict()
    for k, v in sd.items():
        assert torch.equal(got[k], v.to(got[k].dtype)), k


def test_golden_safetensors(golden):
    path, io = golden
    model = load_checkpoint("mobilenetv4_conv_small", path)
    assert not model.training and model.num_classes == 1000
    with torch.no_grad():
        assert rel_err(model(io["input"]), io["logits"]) <= 1e-5


def test_hybrid_fp16_file_upcast(shared_dir):
    path = os.path.join(shared_dir, "golden", "mobilenetv4_hybrid_medium_256", "model.safetensors")
    model = load_checkpoint("mobilenetv4_hybrid_medium", path)
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("wrap", [None, "state_dict", "model", "state_dict_ema", "nested"])
@pytest.mark.parametrize("ext", [".pth", ".pt", ".bin"])
def test_torch_files_and_wrapping(tmp_path, fresh_sd, wrap, ext):
    obj = dict(fresh_sd)
    if wrap == "nested":
        obj = {"model": {"state_dict": obj}, "epoch": 3}
    elif wrap:
        obj = {wrap: obj, "epoch": 3, "arch": SMALL}
    path = tmp_path / f"ckpt{ext}"
    torch.save(obj, path)
    model = load_checkpoint(SMALL, path)
    assert model.num_classes == 10 and not model.training
    _same(model, fresh_sd)


def test_module_prefix_and_no_num_batches_tracked(tmp_path, fresh_sd):
    sd = {f"module.{k}": v for k, v in fresh_sd.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "ddp.safetensors"
    save_file(sd, str(path))
    model = load_checkpoint(SMALL, path)
    _same(model, {k: v for k, v in fresh_sd.items() if not k.endswith("num_batches_tracked")})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_weights_upcast(tmp_path, fresh_sd, dtype):
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in fresh_sd.items()}
    path = tmp_path / "half.safetensors"
    save_file(sd, str(path))
    model = load_checkpoint(SMALL, path)
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            assert v.dtype == torch.float32
            assert torch.equal(v, sd[k].float()), k


def test_num_classes_inferred_and_checked(tmp_path, fresh_sd):
    path = tmp_path / "ten.pth"
    torch.save(fresh_sd, path)
    assert load_checkpoint(SMALL, path).num_classes == 10
    # a model instance of the right size works
    load_checkpoint(create_model(SMALL, num_classes=10), path)
    # another num_classes: one clear error
    with pytest.raises(CheckpointError, match="10 classes"):
        load_checkpoint(create_model(SMALL, num_classes=1000), path)
    with pytest.raises(CheckpointError, match="classifier"):
        load_checkpoint(SMALL, path, num_classes=1000)


def test_11821_class_head(tmp_path):
    sd = create_model(SMALL, num_classes=11821).state_dict()
    path = tmp_path / "in12k.safetensors"
    save_file(sd, str(path))
    assert load_checkpoint(SMALL, path).num_classes == 11821


def test_all_key_problems_in_one_error(tmp_path, fresh_sd):
    sd = dict(fresh_sd)
    del sd["blocks.2.0.pw_exp.conv.weight"]
    del sd["bn1.weight"]
    sd["blocks.9.0.conv.weight"] = torch.zeros(1)
    sd["blocks.2.1.pw_exp.conv.weight"] = torch.zeros(3, 3, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(SMALL, path)
    msg = str(e.value)
    for k in ("blocks.2.0.pw_exp.conv.weight", "bn1.weight", "blocks.9.0.conv.weight", "blocks.2.1.pw_exp.conv.weight"):
        assert k in msg
    assert "missing" in msg and "unexpected" in msg and "wrong shape" in msg
    assert isinstance(e.value, ValueError)
    # non-strict tolerates missing / unexpected, never a wrong shape
    del sd["blocks.2.1.pw_exp.conv.weight"]
    torch.save(sd, path)
    load_checkpoint(SMALL, path, strict=False)


def test_wrong_model(tmp_path, fresh_sd):
    path = tmp_path / "small.pth"
    torch.save(fresh_sd, path)
    with pytest.raises(CheckpointError, match="does not fit mobilenetv4_conv_medium"):
        load_checkpoint("mobilenetv4_conv_medium", path)


def test_truncated_files(tmp_path, fresh_sd):
    st = tmp_path / "t.safetensors"
    save_file(dict(fresh_sd), str(st))
    pt = tmp_path / "t.pth"
    torch.save(fresh_sd, pt)
    for p in (st, pt):
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match=str(p)):
            load_checkpoint(SMALL, p)


def test_foreign_files(tmp_path):
    for name, data in (("notes.pth", b"hello, this is not a checkpoint\n" * 10),
                       ("image.safetensors", b"\x89PNG\r\n\x1a\n" + b"\0" * 100),
                       ("empty.bin", b"")):
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(CheckpointError, match=str(p)):
            load_checkpoint(SMALL, p)
    p = tmp_path / "list.pth"
    torch.save([1, 2, 3], p)
    with pytest.raises(CheckpointError, match="state dict"):
        load_checkpoint(SMALL, p)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(SMALL, tmp_path / "absent.pth")


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def test_malicious_pickle_refused(tmp_path, fresh_sd):
    marker = str(tmp_path / "pwned")
    sd = dict(fresh_sd)
    sd["evil"] = _Evil(marker)
    for i, proto in enumerate((2, pickle.HIGHEST_PROTOCOL)):
        p = tmp_path / f"evil{i}.pth"
        torch.save({"state_dict": sd}, p, pickle_protocol=proto)
        with pytest.raises(CheckpointError, match="arbitrary unpickling") as e:
            load_checkpoint(SMALL, p)
        assert str(p) in str(e.value)
        assert not os.path.exists(marker), "the pickle was executed"
