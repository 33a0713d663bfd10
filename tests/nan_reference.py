"""NaN test helpers for the CPU op tests (test_*_cpu.py, test_nan.py): the convolution whose NaN semantics the
kernels implement, and the mask comparison.

A tap outside the image contributes nothing to a zero-padded convolution (the sum runs over the taps inside),
so a NaN weight on such a tap leaves that output finite. The kernels do that (csrc/cpu/kernels/interface/
ukernels.h, "NaN semantics"). torch's own convolutions differ there by implementation: its fp32 oneDNN kernels
skip such taps, while its im2col paths (float64, and fp32 dense convs at batch 1 or on 1- and 2-row images)
multiply them by the zero padding and give NaN. So a NaN on a corner tap is compared against
`conv2d_inside_taps`; a NaN anywhere else (x, a centre tap, a 1x1 weight, a bias) against plain torch.
"""

import torch
import torch.nn.functional as TF

from mnv4_reference.testing import rel_err


def conv2d_inside_taps(x, weight, bias=None, stride=1, padding=None, groups=1):
    """conv2d(x, weight, bias, stride, padding=k // 2, groups=1 or C) as the sum over the taps inside the image
    only, tap by tap (a direct definition, not an optimised kernel)."""
    n, c, h, w = x.shape
    o, k = weight.shape[0], weight.shape[-1]
    p = k // 2 if padding is None else padding
    assert groups in (1, c) and weight.shape[-2] == k
    ho, wo = (h + 2 * p - k) // stride + 1, (w + 2 * p - k) // stride + 1
    xp = TF.pad(x, (p, p, p, p))
    ys = torch.arange(ho) * stride - p
    xs = torch.arange(wo) * stride - p
    out = torch.zeros(n, o, ho, wo, dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i:i + (ho - 1) * stride + 1:stride, j:j + (wo - 1) * stride + 1:stride]
            if groups == 1:
                term = torch.einsum("nchw,oc->nohw", patch, weight[:, :, i, j])
            else:
                term = patch * weight[:, 0, i, j].view(1, c, 1, 1)
            inside = (((ys + i) >= 0) & ((ys + i) < h))[:, None] & (((xs + j) >= 0) & ((xs + j) < w))[None, :]
            out = out + torch.where(inside, term, torch.zeros((), dtype=x.dtype))
    return out if bias is None else out + bias.view(1, o, 1, 1)


def assert_nan_like(out, ref, tol):
    """out is NaN exactly where ref is, and within tol (rel_err) of ref elsewhere."""
    differ = out.isnan() != ref.isnan()
    assert not differ.any(), (f"{int(out.isnan().sum())} NaN where the reference has {int(ref.isnan().sum())} "
                              f"({int(differ.sum())} of {out.numel()} differ)")
    keep = ~ref.isnan()
    assert rel_err(out[keep], ref[keep]) <= tol
