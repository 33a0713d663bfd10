"""pytest-benchmark pairs for the CPU uib op: fused (torch.ops.mnv4.uib) vs composite
(mnv4_reference.functional.uib) on every UIB layer of MobileNetV4-Conv-M at 224x224, batch 1 and 8,
channels_last fp32, 2 threads, the same random folded weights for both (layer list and arguments from
benches/uib_layers_cpu.py, so the two benchmarks cannot drift apart).

    .venv/bin/python -m pytest benches/bench_uib_cpu.py --benchmark-group-by=param:layer,param:batch

Each group holds the two candidates of one layer and batch; their ratio is the speedup. (For the
interleaved A/B medians and the JSON record, run benches/uib_layers_cpu.py.)
"""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mnv4_kernels  # noqa: E402,F401
from mnv4_reference import functional as F  # noqa: E402
from mnv4_reference.testing import random_uib_args, rel_err  # noqa: E402
from uib_layers_cpu import uib_layers  # noqa: E402

LAYERS = uib_layers()
NAMES = [n for n, _ in LAYERS]


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("candidate", ["fused", "composite"])
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("layer", NAMES)
def test_uib_layer(benchmark, layer, batch, candidate):
    i = NAMES.index(layer)
    c = LAYERS[i][1]
    a = random_uib_args(batch, c["cin"], c["h"], c["w"], c["mid"], c["cout"], k_start=c["k_start"], k_mid=c["k_mid"],
                        stride=c["stride"], residual=c["residual"], activation=c["activation"], channels_last=True,
                        seed=i)
    fn = (lambda: torch.ops.mnv4.uib(*a)) if candidate == "fused" else (lambda: F.uib(*a))
    benchmark.extra_info.update(c)
    with torch.inference_mode():
        out = benchmark(fn)
        assert rel_err(out, F.uib(*a)) <= 1e-5
