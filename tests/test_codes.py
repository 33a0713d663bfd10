"""The integer codes the C++ ops and the Python package share (activation, sequence step kinds, the tensors
each step takes, conv step flags): defined once per language, csrc/codes.h and mnv4_kernels/ops.py. The C++
values come from torch.ops.mnv4_cpu.codes(), which reads codes.h; a code changed on one side only fails here.
"""

import torch

import mnv4_kernels  # noqa: F401  (loads the C++ ops)
from mnv4_kernels import ops


def _cpp_codes():
    names, values = torch.ops.mnv4_cpu.codes()
    assert len(names) == len(values) == len(set(names))
    return dict(zip(names, values))


def test_activation_codes_match():
    c = _cpp_codes()
    assert {k.split(".", 1)[1]: v for k, v in c.items() if k.startswith("activation.")} == ops.SEQ_ACT


def test_step_codes_match():
    c = _cpp_codes()
    py = {"conv": ops.SEQ_CONV, "pointwise": ops.SEQ_POINTWISE, "uib": ops.SEQ_UIB, "mqa": ops.SEQ_MQA,
          "mean": ops.SEQ_MEAN}
    assert {k.split(".", 1)[1]: v for k, v in c.items() if k.startswith("step.")} == py
    tensors = {k.split(".", 1)[1]: v for k, v in c.items() if k.startswith("step_tensors.")}
    assert tensors == {name: ops.SEQ_TENSORS[code] for name, code in py.items()}
    assert c["step_ints"] == 4


def test_conv_flags_match():
    c = _cpp_codes()
    assert ops.seq_conv_flags(residual=True) == c["conv_flag.residual"]
    assert ops.seq_conv_flags(channels_last=True) == c["conv_flag.channels_last"]
    for name, code in ops.SEQ_ACT.items():
        assert ops.seq_conv_flags(proj_activation=name) == code * c["conv_flag.proj_act_scale"]
