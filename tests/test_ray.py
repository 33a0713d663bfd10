"""The Ray Data path on a local Ray instance (2 CPUs, loopback only): the same results as the local pipeline."""

import glob
import json

import pytest

import ray  # installed by `make test` (requirements.txt); elsewhere pip install '.[ray]'

import mnv4_kernels
from mnv4_kernels import distributed
from mnv4_kernels.pipeline import BatchPredictor, EvalTransform, image_files, predict
from mnv4_kernels.sample_images import photo

MODEL = "mobilenetv4_conv_small"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from safetensors.torch import save_file

    from mnv4_reference import randomized_model

    path = str(tmp_path_factory.mktemp("ckpt") / "model.safetensors")
    save_file({k: v.contiguous() for k, v in randomized_model(MODEL, seed=11).state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray_images")
    for i in range(5):
        photo(500, 375, seed=20 + i).save(d / f"img{i}.jpg", quality=90)
    photo(1200, 1100, seed=30).save(d / "large.jpg", quality=90)  # draft-decoded at 1/2
    photo(300, 280, seed=31).convert("RGBA").save(d / "alpha.png")
    (d / "sub").mkdir()
    photo(400, 300, seed=32).convert("L").save(d / "sub" / "gray.jpg")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return d


def _local(paths, checkpoint, batch):
    model = mnv4_kernels.load(MODEL, checkpoint=checkpoint)
    out = predict(paths, EvalTransform(model.pretrained_cfg), BatchPredictor(model, topk=5), batch_size=batch)
    return {p.key: (p.top, p.error) for p in out}


def test_folder_to_jsonl_equals_local(local_ray, folder, checkpoint, tmp_path):
    files = list(image_files([folder]))
    want = _local(files, checkpoint, batch=4)
    ds = distributed.classify([str(folder)], MODEL, checkpoint, batch_size=3, actors=1)
    distributed.write(ds, str(tmp_path / "out"), "jsonl")
    rows = [json.loads(line) for f in sorted(glob.glob(str(tmp_path / "out" / "*.json*")))
            for line in open(f) if line.strip()]
    assert sorted(r["path"] for r in rows) == sorted(files)
    for r in rows:
        top, err = want[r["path"]]
        if err is not None:
            assert r["error"] and "broken.jpg" in r["error"] and r["top_index"] == []
        else:
            assert not r["error"]
            assert r["top_index"] == [c for c, _ in top], r["path"]
            # JSON holds decimals: 15 places (Parquet and predictions() carry the exact values)
            assert r["top_prob"] == pytest.approx([q for _, q in top], abs=1e-15, rel=0), r["path"]
            assert len(r["top_label"]) == 5 and all(isinstance(x, str) for x in r["top_label"])
    assert sum(1 for r in rows if r["error"]) == 1


def test_parquet_of_bytes_equals_local(local_ray, folder, checkpoint, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = ["img0.jpg", "img3.jpg", "large.jpg", "alpha.png", "broken.jpg"]
    blobs = [(folder / n).read_bytes() for n in names]
    pq.write_table(pa.table({"name": names, "image": blobs}), tmp_path / "images.parquet")
    want = _local([str(folder / n) for n in names], checkpoint, batch=2)

    ds = ray.data.read_parquet(str(tmp_path / "images.parquet"))
    got = list(distributed.predictions(distributed.classify(ds, MODEL, checkpoint, key_column="name",
                                                            bytes_column="image", batch_size=2, actors=1)))
    assert [p.key for p in got] == names  # input order kept
    for p in got:
        top, err = want[str(folder / p.key)]
        assert (p.error is not None) == (err is not None), p.key
        assert p.top == top, p.key
    assert "broken.jpg" == [p.key for p in got if p.error][0]
    with pytest.raises(ValueError, match="no column 'bytes'"):
        distributed.classify(ds, MODEL, checkpoint, key_column="name")


def test_bad_arguments(local_ray, tmp_path, checkpoint):
    with pytest.raises(ValueError, match="unknown model"):
        distributed.classify([str(tmp_path)], "resnet50")
    with pytest.raises(FileNotFoundError, match="no image files"):
        distributed.classify([str(tmp_path)], MODEL)
    (tmp_path / "a.jpg").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        distributed.classify([str(tmp_path)], MODEL, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="batch_size"):
        distributed.classify([str(tmp_path)], MODEL, checkpoint, batch_size=0)
