"""Randomise a reference model so that every block matters (for tests and benchmarks).

A freshly initialised MobileNetV4 is a poor test subject: BatchNorm is the identity, layer scale is 1e-5
(hybrid residual blocks are ~identity) and nothing checks the folding of BN statistics. `randomize_` does
what shared/golden/README.md describes for the golden files: every BatchNorm's weight, bias, running mean
and running variance drawn at random (the last BN of each residual branch kept small, 0.1..0.4), and the
layer-scale gammas drawn from 0.1..0.5. With `calibrate=True` (default) the running statistics are first
measured on a random input and then perturbed, so activations stay O(1) through all the blocks at any
depth (pure random statistics let them drift by orders of magnitude over 40 blocks).
"""

import torch
import torch.nn as nn

__all__ = ["randomize_", "randomized_model"]


def _attention_bns(model):
    """MQA pre-norms and K down-sampling norms: kept at 0.2..0.6 so that the attention logits (quadratic in
    these scales) stay O(1); sharper softmaxes make float32 itself the dominant error (a chaotic network)."""
    out = set()
    for m in model.modules():
        if getattr(m, "kind", None) == "mqa":
            out.add(m.norm)
            if m.attn.key.norm is not None:
                out.add(m.attn.key.norm)
    return out


def _residual_last_bns(model):
    """BNs that end a residual branch: pw_proj.bn of skip UIBs, bn2 of skip FusedIBs."""
    out = set()
    for m in model.modules():
        if not getattr(m, "has_skip", False):
            continue
        kind = getattr(m, "kind", None)
        if kind == "uir":
            out.add(m.pw_proj.bn)
        elif kind == "er":
            out.add(m.bn2)
    return out


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0, calibrate: bool = True, input_size=(64, 64), batch: int = 16,
               gamma_range=(0.1, 0.5), last_bn_range=(0.1, 0.4), calibration_input=None):
    """Randomise BN affine params and statistics and layer-scale gammas in place; return the model in eval.

    calibrate: take each BN's statistics from the input it actually receives in one eval-mode pass (on
    `calibration_input`, else a seeded randn of [batch, 3, *input_size]), then perturb them (mean +- 0.1 std,
    var x 0.7..1.4). For hybrids, put the images you will evaluate inside a calibration batch of >= 16
    (e.g. calibration_input = x16, evaluate x16[:2]): attention logits grow quadratically with any drift of
    the residual stream's scale, which on unseen inputs (or from statistics of too few samples) can reach
    10x over 40 blocks and make float32 itself the dominant error (~1e-4 instead of ~4e-6).
    Deterministic for a given seed (its own torch.Generator; the global RNG is untouched)."""
    g = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device

    def u(shape, lo, hi):
        return (lo + (hi - lo) * torch.rand(shape, generator=g)).to(dev)

    def n(shape, scale):
        return (scale * torch.randn(shape, generator=g)).to(dev)

    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    last = _residual_last_bns(model)
    attn = _attention_bns(model)
    head_bn = getattr(model, "norm_head", None)

    # layer scale and BN affine params first, so that the calibration sees the final network
    for name, p in model.named_parameters():
        if name.endswith("layer_scale.gamma"):
            p.copy_(u(p.shape, *gamma_range))
    for bn in bns:
        c = bn.num_features
        lo, hi = last_bn_range if bn in last else (0.2, 0.6) if bn in attn else (0.5, 1.5)
        sign = torch.where(torch.rand(c, generator=g) < 0.1, -1.0, 1.0).to(dev)  # a few negative scales
        bn.weight.copy_(u(c, lo, hi) * sign)
        bn.bias.copy_(n(c, 0.2))

    def perturb(bn, mean, var):
        c = bn.num_features
        if bn is head_bn:
            # the head BN sees globally pooled vectors, nearly equal for every image: their spread is no
            # scale to normalise by (it would amplify float noise). Use the channels' mean second moment.
            m2 = (mean.square() + var).mean()
            bn.running_mean.copy_(mean + n(c, 0.1) * m2.sqrt())
            bn.running_var.copy_(m2 * u(c, 0.5, 2.0))
        else:
            bn.running_mean.copy_(mean + n(c, 0.1) * var.clamp_min(1e-6).sqrt())
            bn.running_var.copy_(var.clamp_min(1e-6) * u(c, 0.7, 1.4))
        bn.num_batches_tracked.fill_(1000)

    if calibrate:
        # one eval-mode pass in which every BN, just before it runs, takes the statistics of the input it
        # actually receives (upstream BNs already final), then perturbs them: eval activations stay O(1).
        def hook(bn, inp):
            x = inp[0].detach().double()
            perturb(bn, x.mean((0, 2, 3)).to(bn.running_mean.dtype),
                    x.var((0, 2, 3), unbiased=False).to(bn.running_var.dtype))

        handles = [bn.register_forward_pre_hook(hook) for bn in bns]
        try:
            model.eval()
            x = calibration_input
            if x is None:
                x = torch.randn((batch, 3) + tuple(input_size), generator=g)
            model(x.to(dev, next(model.parameters()).dtype))
        finally:
            for h in handles:
                h.remove()
    else:
        for bn in bns:
            c = bn.num_features
            bn.running_mean.copy_(n(c, 0.2))
            bn.running_var.copy_(u(c, 0.5, 2.0))
            bn.num_batches_tracked.fill_(1000)
    return model.eval()


def randomized_model(name: str, seed: int = 0, num_classes: int = 1000, calibrate: bool = True,
                     input_size=(64, 64), calibration_input=None):
    """create_model(name) with a seeded init, then randomize_(...): a ready test subject in eval mode."""
    from .model import create_model
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = create_model(name, num_classes=num_classes)
    finally:
        torch.random.set_rng_state(state)
    return randomize_(model, seed=seed, calibrate=calibrate, input_size=input_size,
                      calibration_input=calibration_input)
