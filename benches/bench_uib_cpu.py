"""pytest-benchmark pairs for the CPU uib op: fused (torch.ops.mnv4.uib) vs composite
(mnv4_reference.functional.uib) on every UIB layer of MobileNetV4-Conv-M at 224x224, batch 1 and 8,
channels_last fp32, 2 threads, the same folded weights for both (layers from mnv4_kernels.layers, the
table the tests, `bench` and benches/uib_layers_cpu.py use, so they cannot drift apart).

    .venv/bin/python -m pytest benches/bench_uib_cpu.py --benchmark-group-by=param:layer,param:batch

Each group holds the two candidates of one layer and batch; their ratio is the speedup. (For the
interleaved A/B medians and the JSON record, run benches/uib_layers_cpu.py.)
"""


import pytest
import torch

import mnv4_kernels  # noqa: F401
from mnv4_reference import functional as F
from mnv4_kernels.layers import layer_table
from mnv4_reference.testing import rel_err

LAYERS = [l for l in layer_table("mobilenetv4_conv_medium", 224) if l.kind == "uib"]
NAMES = [l.name for l in LAYERS]


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
    l = LAYERS[NAMES.index(layer)]
    x = torch.randn(batch, *l.in_shape).contiguous(memory_format=torch.channels_last)
    a = (x,) + l.args()  # the composite: contiguous weights; the op: as the fused CPU model stores them
    a_op = (x,) + l.args(cpu_layout=True)
    fn = (lambda: torch.ops.mnv4.uib(*a_op)) if candidate == "fused" else (lambda: F.uib(*a))
    benchmark.extra_info.update(form=l.form, in_shape=list(l.in_shape))
    with torch.inference_mode():
        out = benchmark(fn)
        assert rel_err(out, F.uib(*a)) <= 1e-5
