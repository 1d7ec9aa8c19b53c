"""Chapters 7-10 mutants: ArcFace's logits with the easy margin (exercise 7.2), ``tar_at_far``, ``identity_loss``,
``fold_conv_bn``, the cosine identity loss (exercise 9.5) and folding a BatchNorm before a convolution (exercise
10.4), with one mistake each, written from scratch (a mutant that called the package's function would be rejected
as reuse)."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from . import mutant

LUMA = torch.tensor([0.2989, 0.5870, 0.1140]).view(1, 3, 1, 1)


def arcface(cosine, labels, s=64.0, m=0.5, every=False, on_cos=False, scale=1, clamp=True, easy=True,
            reversed_switch=False):
    """ArcFace's logits, by default with the easy margin (``easy=False``: the chapter's threshold convention)."""
    sin = (1 - cosine ** 2).clamp_min(1e-7).sqrt() if clamp else (1 - cosine ** 2).sqrt()
    margined = cosine * math.cos(m) - sin * math.sin(m)
    if easy:
        keep = cosine <= 0 if reversed_switch else cosine > 0
        phi = torch.where(keep, margined, cosine)
    else:
        phi = torch.where(cosine > math.cos(math.pi - m), margined, cosine - math.sin(math.pi - m) * m)
    phi = cosine - m if on_cos else phi  # CosFace's margin, as a learner who misreads the formula writes it
    target = torch.ones_like(cosine, dtype=torch.bool) if every else F.one_hot(labels, cosine.shape[1]).bool()
    return s ** scale * torch.where(target, phi, cosine)


@mutant("easy_margin_logits", "margin added to every class")
def arcface_margin_everywhere(cosine, labels, s=64.0, m=0.5):
    return arcface(cosine, labels, s, m, every=True)


@mutant("easy_margin_logits", "margin added to cos(theta) instead of theta", "CosFace")
def arcface_margin_on_cosine(cosine, labels, s=64.0, m=0.5):
    return arcface(cosine, labels, s, m, on_cos=True)


@mutant("easy_margin_logits", "s applied twice")
def arcface_scaled_twice(cosine, labels, s=64.0, m=0.5):
    return arcface(cosine, labels, s, m, scale=2)


@mutant("easy_margin_logits", "s not applied")
def arcface_not_scaled(cosine, labels, s=64.0, m=0.5):
    return arcface(cosine, labels, s, m, scale=0)


@mutant("easy_margin_logits", "NaN gradient at cos = 1")
def arcface_unclamped(cosine, labels, s=64.0, m=0.5):
    return arcface(cosine, labels, s, m, clamp=False)


@mutant("easy_margin_logits", "labels ignored", "largest cosine")
def arcface_ignores_labels(cosine, labels, s=64.0, m=0.5):
    return arcface(cosine, cosine.argmax(1), s, m)


@mutant("easy_margin_logits", "threshold convention instead of the easy margin")
def arcface_threshold_not_easy(cosine, labels, s=64.0, m=0.5):
    return arcface(cosine, labels, s, m, easy=False)


@mutant("easy_margin_logits", "switch reversed")
def arcface_easy_switch_reversed(cosine, labels, s=64.0, m=0.5):
    return arcface(cosine, labels, s, m, reversed_switch=True)


def tar(scores, same, far, impostors=None, direction=1, extra=0):
    imp = (scores[~same] if impostors is None else impostors) * direction
    imp = imp.sort(descending=True).values
    k = int(far * len(imp)) + extra  # impostor scores above the threshold: at most far * count
    threshold = imp[min(k, len(imp) - 1)]
    return ((scores[same] * direction) > threshold).double().mean().item()


@mutant("tar_at_far", "FAR computed on the same (genuine) pairs")
def tar_far_on_genuine(scores, same, far):
    return tar(scores, same, far, impostors=scores[same])


@mutant("tar_at_far", "threshold direction reversed")
def tar_reversed(scores, same, far):
    return tar(scores, same, far, direction=-1)


@mutant("tar_at_far", "off by one (>= vs >)", "one more impostor")
def tar_off_by_one(scores, same, far):
    imp = scores[~same].sort(descending=True).values
    return (scores[same] >= imp[int(far * len(imp))]).double().mean().item()  # >= lets the (k+1)-th in


def identity(model, output, target, weight=10.0, detach=True, loss=F.l1_loss, gray=True, resize=True, train=False):
    def embed(x):
        x = (x * LUMA).sum(1, keepdim=True) if gray else x
        x = F.interpolate(x, size=(model.input_size,) * 2, mode="bilinear", align_corners=False) if resize else x
        return model(x)
    model.train(train)
    e_target = embed(target)
    return weight * loss(embed(output), e_target.detach() if detach else e_target)


@mutant("identity_loss", "target not detached")
def identity_target_attached(model, output, target, weight=10.0):
    return identity(model, output, target, weight, detach=False)


@mutant("identity_loss", "model in train mode")
def identity_train_mode(model, output, target, weight=10.0):
    try:
        return identity(model, output, target, weight, train=True)
    finally:
        model.eval()


@mutant("identity_loss", "MSE instead of L1")
def identity_mse(model, output, target, weight=10.0):
    return identity(model, output, target, weight, loss=F.mse_loss)


@mutant("identity_loss", "weight missing")
def identity_unweighted(model, output, target, weight=10.0):
    return identity(model, output, target, 1.0)


@mutant("identity_loss", "RGB not converted to gray")
def identity_rgb(model, output, target, weight=10.0):
    return identity(model, output, target, weight, gray=False)


@mutant("identity_loss", "not resized")
def identity_not_resized(model, output, target, weight=10.0):
    return identity(model, output, target, weight, resize=False)


def fold(conv, bn, mean=True, beta=True, root=True, eps=True, axis=0):
    with torch.no_grad():
        var = bn.running_var + (bn.eps if eps else 0.0)
        scale = bn.weight / (var.sqrt() if root else var)
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
        folded.weight.copy_(conv.weight * scale.view([-1 if d == axis else 1 for d in range(4)]))
        folded.bias.copy_((bias - (bn.running_mean if mean else 0.0)) * scale + (bn.bias if beta else 0.0))
    return folded


def _variant(exercise, name, phrase, reference, **mistake):
    """Register ``reference`` with ``mistake`` (its keyword switches) as the mutant ``name``."""
    def wrong(*args, **kwargs):
        return reference(*args, **kwargs, **mistake)
    wrong.__name__ = wrong.__qualname__ = name
    mutant(exercise, phrase)(wrong)


_variant("fold_conv_bn", "fold_without_beta", "forgot the BN bias (beta)", fold, beta=False)
_variant("fold_conv_bn", "fold_without_mean", "forgot the running mean", fold, mean=False)
_variant("fold_conv_bn", "fold_var_not_std", "used var instead of sqrt(var + eps)", fold, root=False)
_variant("fold_conv_bn", "fold_without_eps", "eps missing", fold, eps=False)
_variant("fold_conv_bn", "fold_input_axis", "scaled the input-channel axis instead of the output axis", fold, axis=1)


# Chapter 9's exercise: the cosine identity loss, weight * mean(1 - cos).
def cosine_identity(model, output, target, weight=1.0, detach=True, one=True, dim=1, reduce=torch.mean, train=False,
                    l1=False):
    def one_minus_cosine(e_out, e_target):
        cosine = F.cosine_similarity(e_out, e_target, dim=dim)
        return reduce(1 - cosine if one else cosine)
    return identity(model, output, target, weight, detach=detach, train=train,
                    loss=(lambda e, t: (e - t).abs().mean()) if l1 else one_minus_cosine)


@mutant("cosine_identity_loss", "GFPGAN's L1 instead of the cosine")
def cosine_identity_l1(model, output, target, weight=1.0):
    return cosine_identity(model, output, target, weight, l1=True)


@mutant("cosine_identity_loss", "cosine instead of 1 - cosine")
def cosine_identity_not_one_minus(model, output, target, weight=1.0):
    return cosine_identity(model, output, target, weight, one=False)


@mutant("cosine_identity_loss", "cosine along the batch axis")
def cosine_identity_batch_axis(model, output, target, weight=1.0):
    return cosine_identity(model, output, target, weight, dim=0)


@mutant("cosine_identity_loss", "summed over the batch instead of averaged")
def cosine_identity_summed(model, output, target, weight=1.0):
    return cosine_identity(model, output, target, weight, reduce=torch.sum)


@mutant("cosine_identity_loss", "target not detached")
def cosine_identity_target_attached(model, output, target, weight=1.0):
    return cosine_identity(model, output, target, weight, detach=False)


@mutant("cosine_identity_loss", "model in train mode")
def cosine_identity_train_mode(model, output, target, weight=1.0):
    try:
        return cosine_identity(model, output, target, weight, train=True)
    finally:
        model.eval()


# Chapter 10's exercise: a BatchNorm BEFORE a zero-padded convolution, folded into (filters, bias map).
def fold_before(bn, conv, size, per_channel=False, axis=1, mean=True, eps=True, conv_bias=True):
    with torch.no_grad():
        scale = bn.weight / (bn.running_var + (bn.eps if eps else 0.0)).sqrt()
        shift = bn.bias - (scale * bn.running_mean if mean else 0.0)
        folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)
        folded.weight.copy_(conv.weight * scale.view([-1 if d == axis else 1 for d in range(4)]))
        bias = conv.bias if conv.bias is not None and conv_bias else None
        constant = shift.view(1, -1, 1, 1).expand(1, -1, *size)
        bias_map = F.conv2d(constant, conv.weight, bias, conv.stride, conv.padding)[0]
        if per_channel:  # the tempting fold: the centre value everywhere, as if the padding held the shift too
            inner = (conv.weight * shift.view(1, -1, 1, 1)).sum((1, 2, 3)) + (bias if bias is not None else 0.0)
            bias_map = inner.view(-1, 1, 1).expand_as(bias_map).clone()
    return folded, bias_map


@mutant("fold_bn_conv", "a per-channel bias")
def fold_before_per_channel(bn, conv, size):
    return fold_before(bn, conv, size, per_channel=True)


@mutant("fold_bn_conv", "scaled the output-channel axis")
def fold_before_output_axis(bn, conv, size):
    return fold_before(bn, conv, size, axis=0)


@mutant("fold_bn_conv", "forgot the running mean")
def fold_before_without_mean(bn, conv, size):
    return fold_before(bn, conv, size, mean=False)


@mutant("fold_bn_conv", "eps missing")
def fold_before_without_eps(bn, conv, size):
    return fold_before(bn, conv, size, eps=False)


@mutant("fold_bn_conv", "forgot the convolution's own bias")
def fold_before_without_conv_bias(bn, conv, size):
    return fold_before(bn, conv, size, conv_bias=False)


def scratch_warp(images, angle, scale, shift, turn=1.0, zoom=1.0, move=2.0):
    """Rotate, zoom and shift about the centre, written from scratch; the switches make chapter 11's mistakes."""
    a = torch.deg2rad(angle * turn)
    s = scale ** zoom
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    theta = torch.stack([torch.stack([cos, -sin, -move * shift[:, 0]], 1),
                         torch.stack([sin, cos, -move * shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False).clamp(0, 1)


_variant("warp", "warp_rotation_reversed", "rotation the wrong way round", scratch_warp, turn=-1.0)
_variant("warp", "warp_zoom_inverted", "zoom inverted", scratch_warp, zoom=-1.0)
_variant("warp", "warp_shift_reversed", "shift the wrong way", scratch_warp, move=-2.0)
_variant("warp", "warp_shift_halved", "shift half as large", scratch_warp, move=1.0)
