"""The exercise self-checks accept correct implementations and reject every known mistake.

Two kinds of evidence:

* every mutant in ``tests/mutants/`` (the reference with one mistake) is rejected with a
  :class:`CheckFailed` whose message names that specific mistake;
* the package's own components and an independent from-scratch implementation (below,
  written without the package and in a slightly different style) pass and print one line.
"""
import math
import re
import sys
from pathlib import Path
from typing import Optional

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import resnet_arcface as ra
from resnet_arcface.data.augment import warp
from resnet_arcface.deploy.folding import fold_bn_conv as _deploy_fold_bn_conv
from resnet_arcface.deploy.inference import fold_conv_bn
from resnet_arcface.learn.losses import arcface_logits, identity_loss
from resnet_arcface.eval.verify import tar_at_far
from resnet_arcface.teach.checks import CheckFailed
from resnet_arcface.teach.exercises import (EXERCISES, check_arcface_logits, check_basic_block, check_bottleneck,
                                            check_conv3x3, check_easy_margin_logits, check_fold_conv_bn,
                                            check_identity_loss, check_ir_block, check_resnet_arcface,
                                            check_se_block, check_tar_at_far, easy_margin_logits,
                                            check_cosine_identity_loss, check_fold_bn_conv,
                                            cosine_identity_loss, fold_bn_conv, check_warp)

sys.path.insert(0, str(Path(__file__).parent))
from mutants import MUTANTS  # noqa: E402


# ---------------------------------------------------------------------------------------------
# An independent, correct implementation of every component (no code from the package)
# ---------------------------------------------------------------------------------------------

def scratch_conv3x3(inplanes: int, outplanes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inplanes, outplanes, kernel_size=(3, 3), stride=(stride, stride), padding=(1, 1), bias=False)


class ScratchBasicBlock(nn.Module):
    """Uses F.relu instead of a ReLU module: the check must accept what computes the same thing."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = scratch_conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = scratch_conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(identity + self.bn2(self.conv2(out)))


class ScratchBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        width, out = planes, planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ScratchSEBlock(nn.Module):
    """Squeezes with x.mean instead of an AdaptiveAvgPool2d module."""

    def __init__(self, channel: int, reduction: int = 16):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channel, channel // reduction), nn.PReLU(),
                                nn.Linear(channel // reduction, channel), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc(x.mean(dim=(2, 3)))
        return x * gate[:, :, None, None]


class ScratchIRBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 use_se: bool = True):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(inplanes)
        self.conv1 = scratch_conv3x3(inplanes, inplanes)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.prelu = nn.PReLU()
        self.conv2 = scratch_conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.use_se = use_se
        if use_se:
            self.se = ScratchSEBlock(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(self.bn0(x))))))
        if self.use_se:
            out = self.se(out)
        identity = x if self.downsample is None else self.downsample(x)
        return self.prelu(out + identity)


class ScratchResNetArcFace(nn.Module):
    def __init__(self, block="IRBlock", layers=(2, 2, 2, 2), use_se: bool = True):
        super().__init__()
        block = {"IRBlock": ScratchIRBlock}.get(block, block)
        self.use_se = use_se
        self.conv1 = nn.Conv2d(1, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(2, 2)
        widths, strides, inplanes = (64, 128, 256, 512), (1, 2, 2, 2), 64
        for i, (n, width, stride) in enumerate(zip(layers, widths, strides), start=1):
            downsample = None
            if stride != 1 or inplanes != width:
                downsample = nn.Sequential(nn.Conv2d(inplanes, width, 1, stride=stride, bias=False),
                                           nn.BatchNorm2d(width))
            blocks = [block(inplanes, width, stride, downsample, use_se=use_se)]
            blocks += [block(width, width, use_se=use_se) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            inplanes = width
        self.bn4 = nn.BatchNorm2d(512)
        self.dropout = nn.Dropout(p=0.5)
        self.fc5 = nn.Linear(512 * 8 * 8, 512)
        self.bn5 = nn.BatchNorm1d(512)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.dropout(self.bn4(x)), 1)
        return self.bn5(self.fc5(x))


def scratch_arcface_logits(cosine, labels, s=64.0, m=0.5):
    sin = torch.sqrt((1 - cosine ** 2).clamp(min=1e-9))
    phi = torch.where(cosine > math.cos(math.pi - m), cosine * math.cos(m) - sin * math.sin(m),
                      cosine - math.sin(math.pi - m) * m)
    one_hot = F.one_hot(labels, cosine.shape[1]).to(cosine.dtype)
    return s * (one_hot * phi + (1 - one_hot) * cosine)


def scratch_easy_margin_logits(cosine, labels, s=64.0, m=0.5):
    sin = torch.sqrt((1 - cosine ** 2).clamp(min=1e-9))
    phi = torch.where(cosine > 0, cosine * math.cos(m) - sin * math.sin(m), cosine)
    one_hot = F.one_hot(labels, cosine.shape[1]).to(cosine.dtype)
    return s * (one_hot * phi + (1 - one_hot) * cosine)


def scratch_tar_at_far(scores, same, far):
    """Accept score > the (k+1)-th highest impostor score, k = floor(far * impostors)."""
    impostors = scores[~same].sort(descending=True).values
    return (scores[same] > impostors[int(far * len(impostors))]).double().mean().item()


def scratch_embed(model, x):
    """GFPGAN's gray_resize_for_identity, then the network."""
    gray = (x * torch.tensor([0.2989, 0.5870, 0.1140]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return model(F.interpolate(gray, size=(model.input_size,) * 2, mode="bilinear", align_corners=False))


def scratch_identity_loss(model, output, target, weight=10.0):
    with torch.no_grad():
        e_target = scratch_embed(model, target)
    return weight * (scratch_embed(model, output) - e_target).abs().mean()


def scratch_cosine_identity_loss(model, output, target, weight=1.0):
    with torch.no_grad():
        e_target = scratch_embed(model, target)
    e_out = scratch_embed(model, output)
    cosine = (e_out * e_target).sum(1) / (e_out.norm(dim=1) * e_target.norm(dim=1))
    return weight * (1 - cosine).mean()


def scratch_fold_bn_conv(bn, conv, size):
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - scale * bn.running_mean
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)
    with torch.no_grad():
        folded.weight.copy_(conv.weight * scale[None, :, None, None])
        bias_map = conv(shift[None, :, None, None] * torch.ones(1, conv.in_channels, *size))[0]
    return folded, bias_map


def scratch_fold_conv_bn(conv, bn):
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
    with torch.no_grad():
        folded.weight.copy_(conv.weight * scale[:, None, None, None])
        folded.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return folded


def scratch_warp(images, angle, scale, shift):
    a = angle * math.pi / 180
    rows = [torch.stack([torch.cos(a), -torch.sin(a), -2 * shift[:, 0] * scale], 1),
            torch.stack([torch.sin(a), torch.cos(a), -2 * shift[:, 1] * scale], 1)]
    theta = torch.stack(rows, 1) / scale[:, None, None]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="border", align_corners=False).clamp(0, 1)


CORRECT = [
    ("conv3x3", scratch_conv3x3), ("basic_block", ScratchBasicBlock), ("bottleneck", ScratchBottleneck),
    ("se_block", ScratchSEBlock), ("ir_block", ScratchIRBlock), ("resnet_arcface", ScratchResNetArcFace),
    ("easy_margin_logits", scratch_easy_margin_logits), ("tar_at_far", scratch_tar_at_far),
    ("cosine_identity_loss", scratch_cosine_identity_loss), ("fold_bn_conv", scratch_fold_bn_conv),
    ("warp", scratch_warp),
]
#: The package's own answers: they pass every comparison and are then rejected, because reuse is checked last.
REFERENCES = [("conv3x3", ra.conv3x3), ("basic_block", ra.BasicBlock), ("bottleneck", ra.Bottleneck),
              ("se_block", ra.SEBlock), ("ir_block", ra.IRBlock), ("resnet_arcface", ra.ResNetArcFace),
              ("easy_margin_logits", easy_margin_logits), ("tar_at_far", tar_at_far),
              ("cosine_identity_loss", cosine_identity_loss),
              ("fold_bn_conv", fold_bn_conv), ("warp", warp)]
#: Checks of what chapters 9 and 10 build in their text (not exercises, not in the registry), kept for instructors.
RETIRED = {"identity_loss": check_identity_loss, "fold_conv_bn": check_fold_conv_bn}


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("exercise, obj", CORRECT, ids=[f"{e}-{o.__name__}" for e, o in CORRECT])
def test_correct_implementation_passes_with_one_line(exercise, obj, capsys):
    check = EXERCISES[exercise][1]
    assert check(obj) is None
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{check.__name__}: all ") and "configurations match the reference" in lines[0]


@pytest.mark.parametrize("exercise, obj", REFERENCES, ids=[e for e, _ in REFERENCES])
def test_the_reference_matches_everything_but_is_rejected_as_reuse(exercise, obj, capsys):
    with pytest.raises(CheckFailed) as info:
        EXERCISES[exercise][1](obj)
    assert info.value.problem == f"{obj.__name__} is the package's own {obj.__name__}, not your implementation"
    assert capsys.readouterr().out == ""


def test_check_arcface_logits_passes_the_threshold_convention_only(capsys):
    """Not in the registry since exercise 7.2 asks for the easy margin, but kept for instructors' own checks."""
    check_arcface_logits(scratch_arcface_logits)
    assert capsys.readouterr().out.startswith("check_arcface_logits: all ")
    with pytest.raises(CheckFailed, match="is the package's own arcface_logits"):
        check_arcface_logits(arcface_logits)
    with pytest.raises(CheckFailed, match="the output differs"):
        check_arcface_logits(scratch_easy_margin_logits)


class _Subclass(ra.IRBlock):
    pass


class _Wrapper(ScratchIRBlock):
    """Its own __init__, but forward delegates to the package's."""

    def forward(self, x):
        return ra.IRBlock.forward(self, x)


def _wrapped_conv3x3(inplanes, outplanes, stride=1):
    return ra.conv3x3(inplanes, outplanes, stride)


def _through_the_deploy_fold(bn, conv, size):
    """Exercise 10.4 answered by the package's deploy fold, which returns a ConvBiasMap instead of a pair."""
    folded = _deploy_fold_bn_conv(bn, conv, size)
    return folded.conv, folded.bias_map[0]


class _WrappedModel(ra.ResNetArcFace.__mro__[1]):  # nn.Module, holding the package's network
    def __init__(self, *args, **kwargs):
        super().__init__()
        self.net = ra.ResNetArcFace(*args, **kwargs)

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("exercise, obj, phrase", [
    ("conv3x3", lambda i, o, stride=1: ra.conv3x3(i, o, stride), "calls the package's own conv3x3"),
    ("conv3x3", _wrapped_conv3x3, "calls the package's own conv3x3"),
    ("ir_block", _Subclass, "is a subclass of the package's IRBlock"),
    ("ir_block", _Wrapper, "calls the package's own IRBlock (IRBlock.forward)"),
    ("fold_bn_conv", _through_the_deploy_fold,
     "calls the package's own fold_bn_conv (resnet_arcface.deploy.folding.fold_bn_conv)"),
], ids=["lambda", "function", "subclass", "wrapper-class", "another-package-function"])
def test_reusing_the_package_is_rejected(exercise, obj, phrase):
    with pytest.raises(CheckFailed, match=re.escape(phrase)):
        EXERCISES[exercise][1](obj)


def test_a_wrapped_network_is_rejected_by_structure_first():
    """Wrapping the whole network renames every key (net.conv1 ...), which the structure comparison names."""
    with pytest.raises(CheckFailed, match="conv1 missing"):
        check_resnet_arcface(_WrappedModel)


@pytest.mark.parametrize("check, obj", [(check_identity_loss, scratch_identity_loss),
                                        (check_fold_conv_bn, scratch_fold_conv_bn)], ids=["identity", "fold_conv_bn"])
def test_the_checks_of_the_chapters_text_pass_a_correct_version_and_reject_the_package(check, obj, capsys):
    """check_identity_loss and check_fold_conv_bn are not in the registry (chapters 9 and 10 build them in the text)."""
    check(obj)
    assert capsys.readouterr().out.startswith(f"{check.__name__}: all ")
    reference = identity_loss if check is check_identity_loss else fold_conv_bn
    with pytest.raises(CheckFailed, match=f"is the package's own {reference.__name__}"):
        check(reference)


@pytest.mark.parametrize("m", MUTANTS, ids=[m.id for m in MUTANTS])
def test_mutant_is_rejected_with_a_specific_message(m, capsys):
    check = {**{k: v[1] for k, v in EXERCISES.items()}, **RETIRED}[m.exercise]
    with pytest.raises(CheckFailed) as info:
        check(m.obj)
    message = str(info.value)
    for phrase in m.expect:
        assert phrase in message, f"expected {phrase!r} in:\n{message}"
    # Self-contained: names the check and the learner's object, says what and (usually) how to fix it;
    # no chained traceback from inside torch, nothing printed.
    assert message.startswith(f"{check.__name__} failed for {m.id}")
    assert "Problem: " in message
    assert info.value.__suppress_context__ and info.value.problem
    assert capsys.readouterr().out == ""


def test_there_is_a_mutant_for_every_listed_mistake():
    wanted = {  # mistake -> (exercise, phrase its mutant's message contains)
        "bias left on": ("conv3x3", "bias=False because BatchNorm follows"),
        "padding 0": ("conv3x3", "padding is 0 but should be 1"),
        "stride on the wrong convolution": ("ir_block", "the stride is on conv1 but the reference puts it on conv2"),
        "missing downsample": ("ir_block", "missing downsample"),
        "downsample without BN": ("resnet_arcface", "no BatchNorm2d"),
        "downsample with the wrong stride": ("resnet_arcface", "stride is 1 but should be 2"),
        "ReLU for PReLU": ("ir_block", "ReLU where the reference uses PReLU"),
        "two PReLUs": ("ir_block", "two PReLU modules (prelu, prelu2)"),
        "SE reduction": ("se_block", "SE bottleneck width is"),
        "SE without sigmoid": ("se_block", "SE gate has no Sigmoid"),
        "SE after the addition": ("ir_block", "SE applied after the residual addition"),
        "batch norm in the wrong place": ("ir_block", "batch norm in the wrong place"),
        "missing bn0": ("ir_block", "bn0 missing"),
        "no activation after the addition": ("ir_block", "no activation after the addition"),
        "wrong fc5": ("resnet_arcface", "fc5 expects"),
        "missing dropout": ("resnet_arcface", "dropout missing"),
        "missing bn5": ("resnet_arcface", "bn5 missing"),
        "default init": ("resnet_arcface", "initialisation differs"),
        "margin on every class": ("easy_margin_logits", "margin added to every class"),
        "margin on cos": ("easy_margin_logits", "margin added to cos(theta) instead of theta"),
        "s twice": ("easy_margin_logits", "s applied twice"), "s missing": ("easy_margin_logits", "s not applied"),
        "NaN gradient at cos = 1": ("easy_margin_logits", "NaN gradient at cos = 1"),
        "labels ignored": ("easy_margin_logits", "labels ignored"),
        "threshold for easy margin": ("easy_margin_logits", "threshold convention instead of the easy margin"),
        "easy switch reversed": ("easy_margin_logits", "switch reversed"),
        "FAR on same pairs": ("tar_at_far", "FAR computed on the same (genuine) pairs"),
        "threshold reversed": ("tar_at_far", "threshold direction reversed"),
        ">= vs >": ("tar_at_far", "off by one (>= vs >)"),
        "target not detached": ("identity_loss", "target not detached"),
        "train mode": ("identity_loss", "model in train mode"), "MSE": ("identity_loss", "MSE instead of L1"),
        "weight missing": ("identity_loss", "weight missing"), "RGB": ("identity_loss", "RGB not converted to gray"),
        "not resized": ("identity_loss", "not resized"), "BN bias": ("fold_conv_bn", "forgot the BN bias"),
        "running mean": ("fold_conv_bn", "forgot the running mean"),
        "var for std": ("fold_conv_bn", "used var instead of sqrt(var + eps)"), "eps": ("fold_conv_bn", "eps missing"),
        "input axis": ("fold_conv_bn", "scaled the input-channel axis instead of the output axis"),
        "cosine: L1": ("cosine_identity_loss", "GFPGAN's L1 instead of the cosine"),
        "cosine: not 1 - cos": ("cosine_identity_loss", "cosine instead of 1 - cosine"),
        "cosine: batch axis": ("cosine_identity_loss", "cosine along the batch axis"),
        "cosine: summed": ("cosine_identity_loss", "summed over the batch instead of averaged"),
        "cosine: target attached": ("cosine_identity_loss", "target not detached"),
        "cosine: train mode": ("cosine_identity_loss", "model in train mode"),
        "bn before: per-channel bias": ("fold_bn_conv", "a per-channel bias"),
        "bn before: output axis": ("fold_bn_conv", "scaled the output-channel axis"),
        "bn before: running mean": ("fold_bn_conv", "forgot the running mean"),
        "bn before: eps": ("fold_bn_conv", "eps missing"),
        "bn before: conv bias": ("fold_bn_conv", "forgot the convolution's own bias"),
        "BasicBlock final ReLU": ("basic_block", "no activation after the addition"),
        "Bottleneck expansion": ("bottleneck", "expansion is 1"),
        "no residual": ("bottleneck", "no residual"),
        "student stub": ("ir_block", "not implemented yet"),
    }
    have = {(m.exercise, phrase) for m in MUTANTS for phrase in m.expect}
    missing = [k for k, (ex, phrase) in wanted.items() if not any(e == ex and phrase in p for e, p in have)]
    assert not missing


def test_messages_of_one_exercise_are_distinct():
    """Each mutant's registered phrases single it out among the mutants of its exercise."""
    for m in MUTANTS:
        others = [o for o in MUTANTS if o.exercise == m.exercise and o is not m]
        assert all(set(o.expect) != set(m.expect) for o in others), m.id


def test_registry_matches_the_chapters():
    assert {k: v[0] for k, v in EXERCISES.items()} == {
        "conv3x3": "my_conv3x3", "basic_block": "MyBasicBlock", "bottleneck": "MyBottleneck",
        "se_block": "MySEBlock", "ir_block": "MyIRBlock", "resnet_arcface": "MyResNetArcFace",
        "easy_margin_logits": "my_easy_margin_logits", "tar_at_far": "my_tar_at_far",
        "cosine_identity_loss": "my_cosine_identity_loss", "fold_bn_conv": "my_fold_bn_conv", "warp": "my_warp"}
    assert [v[1] for v in EXERCISES.values()] == [check_conv3x3, check_basic_block, check_bottleneck,
                                                   check_se_block, check_ir_block, check_resnet_arcface,
                                                   check_easy_margin_logits, check_tar_at_far,
                                                   check_cosine_identity_loss, check_fold_bn_conv, check_warp]


class _NoArguments(nn.Module):
    expansion = 1


@pytest.mark.parametrize("bad, phrase", [
    (None, "got None"),
    (ra.IRBlock(32, 32), "pass the class itself"),
    (_NoArguments, r"(?s)raised TypeError: .* It must accept \(inplanes, planes, stride=1, downsample=None, "
                   r"use_se=True\)"),
    (42, "expected a subclass of nn.Module"),
])
def test_wrong_kind_of_object_gives_a_friendly_message(bad, phrase):
    with pytest.raises(CheckFailed, match=phrase):
        check_ir_block(bad)


def test_learners_random_state_is_left_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    check_ir_block(ScratchIRBlock)
    with pytest.raises(CheckFailed):
        check_conv3x3(lambda i, o, stride=1: nn.Conv2d(i, o, 3, stride, 1))
    assert torch.equal(before, torch.get_rng_state())


def test_forward_error_is_summarised_not_raised():
    class Broken(ra.IRBlock):
        def forward(self, x):
            return self.conv2(x.flatten(1))  # a shape error deep inside torch

    with pytest.raises(CheckFailed) as info:
        check_ir_block(Broken)
    assert "your forward raised RuntimeError" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
