"""One set of argument checks everywhere: the bad-input batteries go to the compiled op, to its fake kernel
under FakeTensorMode (what torch.compile / torch.export see) and, for uib and mqa, to the Triton op; each must
reject the call with a RuntimeError naming the same argument, with the same message (mnv4_kernels.validate
mirrors csrc/params.h and the conv / pointwise / sequence checks). The calls run in a subprocess, which must
not die of a signal (a bad argument must never crash the compiled op)."""

import json
import os
import re
import sys

import pytest
import torch

from mnv4_reference.testing import random_mqa_args, random_uib_args, run_script

HERE = os.path.dirname(os.path.abspath(__file__))


def _set(i, v):
    return lambda a: a.__setitem__(i, v)


def uib_battery():
    """[(id, argument the message must name, args)] for mnv4::uib."""
    base = dict(n=1, cin=8, h=6, w=6, mid=16, cout=8, k_start=3, k_mid=3, stride=1, residual=True)
    cases = []

    def case(name, mutate, **kw):
        a = list(random_uib_args(**{**base, **kw}))
        mutate(a)
        cases.append((f"uib-{len(cases)}-{name}", name, a))

    case("x", lambda a: a.__setitem__(0, a[0][0]))  # 3-D
    case("x", lambda a: a.__setitem__(0, a[0].to(torch.int32)))
    case("x", lambda a: a.__setitem__(0, a[0].double()))
    case("x", lambda a: a.__setitem__(0, a[0][:, :, :0]))  # no rows
    case("start_dw_b", _set(2, None))
    case("start_dw_w", lambda a: a.__setitem__(1, a[1][:4]))  # wrong channels
    case("start_dw_w", _set(1, torch.randn(8, 1, 2, 2)))  # even kernel
    case("start_dw_w", _set(1, torch.randn(8, 1, 3, 5)))  # not square
    case("start_dw_w", _set(1, torch.randn(8, 3, 3)))  # 3-D
    case("start_dw_w", lambda a: a.__setitem__(1, a[1].half()))  # mixed dtype
    case("start_dw_b", _set(2, torch.randn(8, 1)))
    case("expand_w", lambda a: a.__setitem__(3, a[3][:, :4]))
    case("expand_w", _set(3, torch.randn(16, 8, 3, 3)))  # not 1x1
    case("expand_w", _set(3, torch.randn(16, 8, 1)))  # 3-D
    case("expand_b", lambda a: a.__setitem__(4, a[4][:3]))
    case("expand_b", lambda a: a.__setitem__(4, a[4].bfloat16()))
    case("mid_dw_w", lambda a: a.__setitem__(5, a[5][:3]))
    case("mid_dw_w", _set(5, torch.randn(16, 2, 3, 3)))  # not depthwise
    case("mid_dw_b", _set(6, torch.randn(15)))
    case("mid_dw_b", _set(6, None))
    case("proj_w", _set(7, torch.randn(8, 15, 1, 1)))
    case("proj_w", _set(7, torch.randn(8, 16, 1, 1).half()))
    case("proj_b", _set(8, torch.randn(9)))
    case("stride", _set(9, 3), residual=False)
    case("stride", _set(9, 2), k_start=0, k_mid=0, residual=False)  # the FFN form cannot stride
    case("residual", _set(9, 2))  # residual with stride 2
    case("residual", lambda a: None, cout=5)  # residual with Cin != Cout
    case("activation", _set(11, "swish"))
    good = list(random_uib_args(**base))
    return cases, good


def mqa_battery():
    base = dict(n=1, c=8, h=5, w=5, num_heads=2, key_dim=8, kv_stride=2)
    cases = []

    def case(name, mutate, **kw):
        a = list(random_mqa_args(**{**base, **kw}))
        mutate(a)
        cases.append((f"mqa-{len(cases)}-{name}", name, a))

    case("x", lambda a: a.__setitem__(0, a[0].reshape(1, 8, 25)))
    case("x", lambda a: a.__setitem__(0, a[0].double()))
    case("x", lambda a: a.__setitem__(0, a[0][:, :0]))  # no channels
    case("norm_scale", lambda a: a.__setitem__(1, a[1][:7]))
    case("norm_shift", lambda a: a.__setitem__(2, a[2].half()))
    case("num_heads", _set(11, 0))
    case("num_heads", _set(11, 3))  # does not divide 16
    case("q_w", _set(3, torch.randn(16, 7, 1, 1)))
    case("q_w", _set(3, torch.randn(16, 8, 3, 3)))
    case("k_w", _set(6, torch.randn(4, 8, 1, 1)))  # dk 8 expected
    case("v_w", _set(9, torch.randn(8, 9, 1, 1)))
    case("o_w", _set(10, torch.randn(8, 15, 1, 1)))
    case("kv_stride", _set(12, 3))
    case("kv_stride", lambda a: None, kv_dw=False)  # stride 2 without the dw weights
    case("k_dw_b", _set(5, None))
    case("k_dw_w", _set(4, torch.randn(8, 1, 4, 4)))  # even kernel
    case("v_dw_w", lambda a: (a.__setitem__(7, None), a.__setitem__(8, None)))  # k dw without v dw
    case("v_dw_w", _set(7, torch.randn(8, 1, 5, 5)))  # kernel sizes differ
    case("v_dw_b", _set(8, torch.randn(7)))
    case("residual", lambda a: None, cout=6)
    good = list(random_mqa_args(**base))
    return cases, good


def conv_battery():
    """mnv4_cpu::conv(x, weight, bias, stride, activation, proj_weight, proj_bias, residual, channels_last,
    proj_activation)."""
    x = torch.randn(2, 8, 5, 4)
    good = [x, torch.randn(16, 8, 3, 3), torch.randn(16), 2, "relu", torch.randn(4, 16, 1, 1), torch.randn(4),
            False, False, "none"]
    cases = []

    def case(name, **kw):
        idx = dict(x=0, weight=1, bias=2, stride=3, act=4, pw=5, pb=6, res=7, pact=9)
        a = list(good)
        for k, v in kw.items():
            a[idx[k]] = v
        cases.append((f"conv-{len(cases)}-{name}", name, a))

    case("x", x=x[0])
    case("x", x=x.int())
    case("x", x=x[:, :, :0])
    case("weight", weight=torch.randn(16, 7, 3, 3))
    case("weight", weight=torch.randn(16, 8, 3))
    case("weight", weight=torch.randn(16, 8, 4, 4))
    case("weight", weight=torch.randn(16, 8, 3, 5))
    case("weight", weight=torch.randn(0, 8, 3, 3), bias=None, pw=None, pb=None)
    case("weight", weight=torch.randn(16, 8, 3, 3).half())
    case("bias", bias=torch.randn(15))
    case("stride", stride=3)
    case("activation", act="swish")
    case("proj_weight", pw=torch.randn(4, 15, 1, 1))
    case("proj_weight", pw=torch.randn(4, 16, 3, 3))
    case("proj_bias", pb=torch.randn(5))
    case("proj_bias", pb=torch.randn(4).bfloat16())
    case("proj_bias", pw=None)
    case("proj_activation", pw=None, pb=None, pact="relu")
    case("proj_activation", pact="silu")
    case("residual", res=True)
    case("residual", res=True, stride=1)
    return cases, good


def pointwise_battery():
    x = torch.randn(2, 8, 5, 4)
    good = [x, torch.randn(16, 8, 1, 1), torch.randn(16), "relu"]
    cases = []

    def case(name, **kw):
        idx = dict(x=0, weight=1, bias=2, act=3)
        a = list(good)
        for k, v in kw.items():
            a[idx[k]] = v
        cases.append((f"pointwise-{len(cases)}-{name}", name, a))

    case("x", x=x[0])
    case("x", x=x.int())
    case("x", x=x[:, :, 0, 0].long(), weight=torch.randn(16, 8))
    case("weight", weight=torch.randn(16, 7, 1, 1))
    case("weight", x=x[:, :, 0, 0], weight=torch.randn(16, 9))
    case("weight", weight=torch.randn(16, 8, 3, 3))
    case("weight", weight=torch.randn(16, 8, 1))
    case("weight", weight=torch.randn(16, 8, 1, 1).half())
    case("bias", bias=torch.randn(15))
    case("bias", bias=torch.randn(16, 1))
    case("bias", bias=torch.randn(16).bfloat16())
    case("activation", act="swish")
    return cases, good


def sequence_battery():
    """mnv4_cpu::sequence(x, tensors, program): a conv step (3 -> 8, stride 2), a uib step, mean, a
    pointwise step; each case breaks the program, the tensor list or one step's tensors."""
    x = torch.randn(2, 3, 9, 8)
    u = random_uib_args(1, 8, 1, 1, 24, 8, k_start=0, k_mid=3, seed=1)
    tensors = [torch.randn(8, 3, 3, 3), torch.randn(8), None, None, *u[1:9], torch.randn(5, 8), torch.randn(5)]
    program = [0, 2, 1, 0, 2, 1, 1, 1, 4, 0, 0, 0, 1, 0, 0, 0]
    cases = []

    def case(want, t=tensors, p=program):
        cases.append((f"sequence-{len(cases)}-{want}", want, [x, list(t), list(p)]))

    case("program", p=program[:-1])
    case("program", t=[], p=[])
    case("op code", p=[9, 0, 0, 0] + program[4:])
    case("tensors", t=tensors[:-1])
    case("tensors[0]", t=[None] + tensors[1:])
    case("tensors[6]", t=tensors[:6] + [None] + tensors[7:])
    case("activation code", p=program[:2] + [7] + program[3:])
    case("activation code", p=program[:3] + [4 * 5] + program[4:])
    case("mean needs a 4-D input", t=tensors[:-2], p=program[:12] + [4, 0, 0, 0])
    case("expand_w", t=tensors[:6] + [torch.randn(24, 5, 1, 1)] + tensors[7:])  # a step's own checks
    case("weight", t=tensors[:12] + [torch.randn(5, 7)] + tensors[13:])
    case("residual", p=program[:4] + [2, 2, 1, 1] + program[8:])
    good = [x, tensors, program]
    return cases, good


BATTERIES = {"uib": uib_battery, "mqa": mqa_battery, "conv": conv_battery, "pointwise": pointwise_battery,
             "sequence": sequence_battery}
def collect_messages():
    """Run every battery through every implementation; print one JSON record per case: the message each
    implementation raised (None = it did not raise). Run in a subprocess (see the module docstring)."""
    import mnv4_kernels  # noqa: F401
    from torch._subclasses.fake_tensor import FakeTensorMode

    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    triton_device = "cpu" if interpret else ("cuda" if torch.cuda.is_available() else None)
    if triton_device is not None:
        import mnv4_kernels.triton  # noqa: F401

    def to(v, device):
        if isinstance(v, torch.Tensor):
            return v.to(device)
        if isinstance(v, list):
            return [to(e, device) for e in v]
        return v

    def fake(mode, v):
        if isinstance(v, torch.Tensor):
            return mode.from_tensor(v)
        if isinstance(v, list):
            return [fake(mode, e) for e in v]
        return v

    def run(fn):
        try:
            fn()
        except RuntimeError as e:
            return str(e).splitlines()[0]
        return None

    def impls(kind, args):
        op = getattr(torch.ops.mnv4 if kind in ("uib", "mqa") else torch.ops.mnv4_cpu, kind)
        out = {"cpp": lambda: op(*args)}

        def under_fake():
            with FakeTensorMode() as mode:
                op(*fake(mode, args))
        out["fake"] = under_fake
        if kind in ("uib", "mqa") and triton_device is not None:
            top = getattr(torch.ops.mnv4, f"{kind}_triton")
            out["triton"] = lambda: top(*to(args, triton_device))
        return out

    for kind, battery in BATTERIES.items():
        cases, good = battery()
        print(json.dumps(dict(kind=kind, id=f"{kind}-good", want=None,
                              got={k: run(f) for k, f in impls(kind, good).items()})))
        for cid, want, args in cases:
            print(json.dumps(dict(kind=kind, id=cid, want=want, got={k: run(f) for k, f in impls(kind, args).items()})))
        sys.stdout.flush()


SCRIPT = f"""
import sys
sys.path.insert(0, {HERE!r})
import test_validate
test_validate.collect_messages()
"""


@pytest.fixture(scope="module")
def messages():
    out = run_script(SCRIPT, timeout=600).stdout
    return {r["id"]: r for r in map(json.loads, filter(None, out.splitlines()))}


def _ids():
    ids = []
    for kind, battery in BATTERIES.items():
        cases, _ = battery()
        ids += [f"{kind}-good"] + [cid for cid, _, _ in cases]
    return ids


@pytest.mark.parametrize("case_id", _ids())
def test_same_rejection_everywhere(messages, case_id):
    r = messages[case_id]
    got = r["got"]
    want_impls = {"cpp", "fake"} | ({"triton"} if r["kind"] in ("uib", "mqa") else set())
    if r["kind"] in ("uib", "mqa") and "triton" not in got:
        assert torch.version.cuda is not None, "the Triton op must be checked (TRITON_INTERPRET=1 on CPU torch)"
        want_impls.discard("triton")
    assert set(got) == want_impls, got
    if r["want"] is None:  # the good call goes through everywhere
        assert all(m is None for m in got.values()), got
        return
    for impl, msg in got.items():
        assert msg is not None, f"{impl} accepted the bad call"
        assert re.match(r"mnv4(_cpu)?(::\w+)?: ", msg), (impl, msg)  # a step of sequence speaks as its op
        assert re.search(rf"(?<![\w\[]){re.escape(r['want'])}(?!\w)", msg), (impl, r["want"], msg)
    assert len(set(got.values())) == 1, got  # the same message, word for word


def test_triton_validators_are_the_validator():
    """The Triton ops take their rules from mnv4_kernels.validate (one set): the derived sizes agree on a valid
    call (the rejections are compared message by message above)."""
    pytest.importorskip("triton")
    from mnv4_kernels import validate
    from mnv4_kernels.triton import mqa as tmqa, uib as tuib

    x = torch.randn(2, 8, 5, 7)
    u = (None, None, torch.randn(16, 8, 1, 1), torch.randn(16), torch.randn(16, 1, 3, 3), torch.randn(16),
         torch.randn(8, 16, 1, 1), torch.randn(8))
    assert tuib.validate_uib(x, *u, 2, False, "gelu") == validate.uib(x, *u, 2, False, "gelu")
    m = (torch.randn(8), torch.randn(8), torch.randn(8, 8, 1, 1), torch.randn(8, 1, 3, 3), torch.randn(8),
         torch.randn(4, 8, 1, 1), torch.randn(8, 1, 3, 3), torch.randn(8), torch.randn(4, 8, 1, 1),
         torch.randn(8, 8, 1, 1))
    assert tmqa.validate_mqa(x, *m, 2, 2, True) == validate.mqa(x, *m, 2, 2, True)
