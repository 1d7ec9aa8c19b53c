"""The ten "implement it yourself" exercises, as data, their self-checks and the grader's registry :data:`EXERCISES`.

An exercise is an :class:`~resnet_arcface.teach.checks.Exercise`: the package's reference (the answer, never to be
reused), the signature the learner implements, the known :class:`~resnet_arcface.teach.checks.Mistake` s (each
reproduced on the reference, so that a matching output is named), likely causes and hints; plus a ``check_*``
function that builds a few :class:`~resnet_arcface.teach.checks.Case` s and hands them to the engine of
:mod:`resnet_arcface.teach.checks`: :func:`~resnet_arcface.teach.checks.run_check` for modules (chapters 1-6: conv3x3, the
residual blocks from one table, SEBlock, the network), :func:`~resnet_arcface.teach.checks.run_function_check` for
functions (chapters 7-10: ArcFace's logits with the easy margin, tar_at_far, the cosine identity loss, folding a
BatchNorm that comes before a convolution). :func:`check_arcface_logits`, :func:`check_identity_loss` and
:func:`check_fold_conv_bn` check what chapters 7, 9 and 10 build in their text, and are not in the registry.

To add one: define its Exercise and ``check_<name>`` here, add ``"<name>": ("<learner's object name>",
check_<name>)`` to :data:`EXERCISES`, call the check in the chapter's self-check cell, and add mutants to
``tests/mutants/`` and a from-scratch correct version to ``tests/test_checks.py`` (``book/instructors.md``).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..nn.blocks import BasicBlock, Bottleneck, IRBlock
from .checks import SEED, Case, Exercise, Mistake, name_of, randomise, run_check, run_function_check, validate
from ..nn.conv import conv3x3
from ..data.augment import warp
from ..data.transforms import preprocess
from ..deploy import folding
from ..deploy.inference import fold_conv_bn
from ..learn.losses import arcface_logits, cosface_logits, identity_loss
from ..nn.model import ResNetArcFace
from ..nn.se import SEBlock
from ..eval.verify import roc, tar_at_far

__all__ = ["EXERCISES", "check_conv3x3", "check_basic_block", "check_bottleneck", "check_se_block", "check_ir_block",
           "check_resnet_arcface", "check_arcface_logits", "check_easy_margin_logits", "easy_margin_logits",
           "check_tar_at_far", "check_identity_loss",
           "check_fold_conv_bn", "check_cosine_identity_loss", "check_fold_bn_conv", "cosine_identity_loss",
           "fold_bn_conv", "check_warp"]


def seeded_input(*shape: int) -> Callable[[], torch.Tensor]:
    """A builder of the same standard-normal input of ``shape`` at every call."""
    return lambda: torch.randn(*shape, generator=torch.Generator().manual_seed(SEED + 4))


def _call_text(label: str, args: Sequence[Any], kwargs: Dict[str, Any], names: Dict[int, str] = {}) -> str:
    """``MyIRBlock(32, 64, 2, downsample, use_se=True)``; ``names`` replaces some positional values by words."""
    parts = [names.get(i, repr(a)) for i, a in enumerate(args)] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{label}({', '.join(parts)})"


# --- Chapters 1-6: conv3x3, the three residual blocks (one table), SEBlock, the network ----------------------------

#: Wording of the residual components' structural problems (see :data:`resnet_arcface.teach.checks.WORDING`).
_MODULE_WORDING = {
    "missing:downsample": ("missing downsample: {p} has no submodule named downsample, but the reference has {n} = "
                           "{d}", ""),
    "missing:downsample.": ("wrong downsample: {p} has no {d} ({n}); the reference's downsample is {D}", "The "
                            "shortcut must match the branch's shape AND its normalisation: a 1x1 convolution with the "
                            "stage's stride and no bias, then BatchNorm2d."),
    "missing:se": ("use_se=True but {p} has no SE gate named se", "Build self.se = SEBlock(planes) when use_se is "
                   "True and gate the branch with it after bn2."),
    "extra:se": ("use_se=False but {p} has an SE gate (se.*)", "Create self.se only when use_se is True: the "
                 "use_se=False checkpoint (GFPGAN's) has no se keys."),
}


def _se_width(ex: Exercise, n: str, rm: nn.Module, gm: nn.Module) -> Optional[Tuple[str, str]]:
    """The SE squeeze's width, named as channel // reduction."""
    if isinstance(rm, nn.Linear) and n.endswith("fc.0") and gm.out_features != rm.out_features:
        c, w = rm.in_features, rm.out_features
        return (f"SE bottleneck width is {gm.out_features}, expected channel // reduction = {c} // {c // w} = {w}",
                "The excitation MLP squeezes channel -> channel // reduction -> channel; use the reduction argument "
                "(default 16) with integer division.")
    return None


def _fc5_inputs(ex: Exercise, n: str, rm: nn.Module, gm: nn.Module) -> Optional[Tuple[str, str]]:
    """fc5's input width, named as channels * 8 * 8."""
    if n == "fc5" and isinstance(gm, nn.Linear) and gm.in_features != rm.in_features:
        return (f"fc5 expects {gm.in_features} inputs, reference {rm.in_features // 64}*8*8 = {rm.in_features}",
                ex.hints.get("fc5", ""))
    return None


_MODULE_RULES = (_se_width, _fc5_inputs)


def check_conv3x3(fn: Callable[..., nn.Module]) -> None:
    """Check ``my_conv3x3(inplanes, outplanes, stride=1)`` (chapter 1) on four configurations. Like every check, it
    raises :class:`~resnet_arcface.teach.checks.CheckFailed` naming what differs (bias, padding, stride...) and prints
    one line on success."""
    ex = Exercise("check_conv3x3", conv3x3, "(inplanes, outplanes, stride=1) -> nn.Conv2d", causes=(
        "return nn.Conv2d(inplanes, outplanes, kernel_size=3, stride=stride, padding=1, bias=False)",),
        root="the convolution")
    run_check(ex, fn, [Case(_call_text(name_of(fn), a, {}), seeded_input(2, a[0], 9, 9), lambda a=a: conv3x3(*a),
                            lambda a=a: fn(*a)) for a in [(3, 8), (16, 16, 1), (8, 16, 2), (16, 32, 2)]], False)


def _block_forward(m: nn.Module, x: torch.Tensor, steps: Sequence[str], after: Sequence[str]) -> torch.Tensor:
    """A block's forward as data: the branch's ``steps`` (attribute names), then ``after`` ("add" adds the
    identity). Mistakes are edits of these two lists."""
    out = x
    for s in steps:
        out = out if s == "se" and not m.use_se else getattr(m, s)(out)
    for s in after:
        out = out + (m.downsample(x) if m.downsample is not None else x) if s == "add" else getattr(m, s)(out)
    return out


def _block_mistakes(steps: Tuple[str, ...], act: str) -> Tuple[Mistake, ...]:
    """The usual mistakes of a residual block, generated from its steps and final activation."""
    name, ok = {"relu": "ReLU", "prelu": "PReLU"}, ("add", act)
    out = [Mistake(f"no activation after the addition: your output equals the reference's without its final "
                   f"{name[act]} (apply self.{act} after out += identity)",
                   lambda m, x: _block_forward(m, x, steps, ("add",))),
           Mistake("no residual: your output equals the reference's without the identity (x, or downsample(x)) added",
                   lambda m, x: _block_forward(m, x, steps, (act,))),
           Mistake("the activation comes before the addition, not after it: your output equals act(branch) + "
                   "identity, while the reference computes act(branch + identity)",
                   lambda m, x: _block_forward(m, x, steps, (act, "add")))]
    if "se" in steps:
        out.insert(0, Mistake("SE applied after the residual addition: your output equals the reference's with the SE "
                              "gate applied to (branch + identity) instead of to the branch alone; call self.se(out) "
                              "right after bn2, before out += identity",
                              lambda m, x: _block_forward(m, x, steps[:-1], ("add", "se", act)), lambda m: m.use_se))
    for i, s in enumerate(steps):
        if not s.startswith("conv") and s != "se":
            text = f"no {name.get(s, s)} after {steps[i - 1]}" if i else f"{s} not applied"
            out.append(Mistake(f"{text}: your output equals the reference's without it",
                               lambda m, x, i=i: _block_forward(m, x, steps[:i] + steps[i + 1:], ok)))
        if i and {s[:2], steps[i - 1][:2]} in ({"bn", "pr"}, {"bn", "re"}, {"bn", "se"}):
            swapped = steps[:i - 1] + (s, steps[i - 1]) + steps[i + 1:]
            bn, other = (steps[i - 1], s) if steps[i - 1].startswith("bn") else (s, steps[i - 1])
            out.append(Mistake(f"batch norm in the wrong place: your output equals the reference's with {bn} applied "
                               f"after {other} (the reference's order is {' -> '.join(steps)})",
                               lambda m, x, sw=swapped: _block_forward(m, x, sw, ok),
                               (lambda m: m.use_se) if "se" in (s, steps[i - 1]) else (lambda m: True)))
    return tuple(out)


#: exercise id -> (reference, the branch's steps, final activation, configurations
#: (inplanes, planes, stride, with a downsample[, use_se]), hints by submodule or topic)
_BLOCKS: Dict[str, Tuple[type, Tuple[str, ...], str, List[Tuple], Dict[str, str]]] = {
    "basic_block": (BasicBlock, ("conv1", "bn1", "relu", "conv2", "bn2"), "relu",
                    [(16, 16, 1, False), (16, 32, 2, True), (8, 16, 1, True), (16, 16, 2, True)],
                    {"stride": "BasicBlock puts the stride on conv1 (conv3x3(inplanes, planes, stride)); conv2 keeps "
                     "stride 1."}),
    "bottleneck": (Bottleneck, ("conv1", "bn1", "relu", "conv2", "bn2", "relu", "conv3", "bn3"), "relu",
                   [(64, 16, 1, False), (32, 16, 2, True), (16, 8, 1, True), (64, 16, 2, True)],
                   {"stride": "Bottleneck (torchvision's 'v1.5' layout) puts the stride on the 3x3 conv2; the 1x1 "
                    "conv1 and conv3 keep stride 1.", "maps:conv3": "conv3 expands to planes * expansion channels."}),
    "ir_block": (IRBlock, ("bn0", "conv1", "bn1", "prelu", "conv2", "bn2", "se"), "prelu",
                 [(32, 32, 1, False, None), (32, 32, 1, False, False), (32, 64, 2, True, True),
                  (32, 64, 2, True, False), (16, 32, 1, True, True), (64, 64, 2, True, True)],
                 {"bn0": "it normalises the block's input before conv1, pre-activation style", "stride": "IRBlock "
                  "keeps the resolution in conv1 (inplanes -> inplanes, stride 1) and changes width and resolution in "
                  "conv2 (inplanes -> planes, stride).", "maps:conv1": "IRBlock's conv1 keeps inplanes channels; "
                  "conv2 maps inplanes -> planes."}),
}
_BLOCK_HINTS = {"downsample": "The check passes a downsample module (a 1x1 convolution with the block's stride, then "
                "BatchNorm2d); store it as self.downsample and apply it to x: identity = self.downsample(x) if "
                "self.downsample is not None else x.", "shape": "The output has planes * expansion channels and (H - 1)"
                " // stride + 1 rows: check the stride."}


def _check_block(exercise: str, cls: type) -> None:
    """The one check behind :func:`check_basic_block`, :func:`check_bottleneck` and :func:`check_ir_block`."""
    ref_cls, steps, act, configs, hints = _BLOCKS[exercise]
    ex = Exercise(f"check_{exercise}", ref_cls, "(inplanes, planes, stride=1, downsample=None" +
                  (", use_se=True)" if "se" in steps else ")"), _block_mistakes(steps, act),
                  ("the order inside the branch is " + " -> ".join(steps), "downsample must be applied to the block's "
                   "input x"), {**_BLOCK_HINTS, **hints}, wording=_MODULE_WORDING, rules=_MODULE_RULES)
    label, want, have = name_of(cls), ref_cls.expansion, getattr(cls, "expansion", None)
    validate(ex, cls, want_class=True)
    if have != want:
        ex.fail(label, f"{label} has no class attribute expansion; the reference {ex.kind} sets expansion = {want}"
                if have is None else f"expansion is {have} but the reference {ex.kind} has expansion = {want}",
                "ResNetArcFace's _make_layer reads block.expansion: the block's output has planes * expansion "
                "channels.")
    cases = []
    for inplanes, planes, stride, with_ds, *use_se in configs:
        out = planes * want
        args = [inplanes, planes] + ([stride] if stride != 1 or with_ds else []) + (["downsample"] if with_ds else [])
        kwargs = {"use_se": use_se[0]} if use_se and use_se[0] is not None else {}

        def build(klass: type, a: Tuple = tuple(args), k: Dict = kwargs, i: int = inplanes, o: int = out,
                  s: int = stride) -> nn.Module:
            torch.manual_seed(SEED + 2)
            ds = nn.Sequential(nn.Conv2d(i, o, kernel_size=1, stride=s, bias=False), nn.BatchNorm2d(o))
            return klass(*[ds if v == "downsample" else v for v in a], **k)
        text = _call_text(label, args, kwargs, {3: f"downsample=Sequential(Conv2d({inplanes}, {out}, 1x1, stride="
                                                   f"{stride}, bias=False), BatchNorm2d({out}))"})
        cases.append(Case(text, seeded_input(4, inplanes, 8, 8), lambda b=build: b(ref_cls), lambda b=build: b(cls)))
    run_check(ex, cls, cases)


def check_basic_block(cls: type) -> None:
    """Check ``MyBasicBlock(inplanes, planes, stride=1, downsample=None)`` (chapter 2) on four configurations."""
    _check_block("basic_block", cls)


def check_bottleneck(cls: type) -> None:
    """Check ``MyBottleneck(inplanes, planes, stride=1, downsample=None)`` (chapter 3) on four configurations."""
    _check_block("bottleneck", cls)


def check_ir_block(cls: type) -> None:
    """Check ``MyIRBlock(inplanes, planes, stride=1, downsample=None, use_se=True)`` (chapter 5) on six
    configurations: with and without SE (once ``use_se`` at its default), strides 1 and 2, with and without a
    downsample."""
    _check_block("ir_block", cls)


_SE = Exercise(
    "check_se_block", SEBlock, "(channel, reduction=16)",
    (Mistake("SE gate has no Sigmoid: your output equals x * (fc without the sigmoid)",
             lambda m, x: x * m.fc[2](m.fc[1](m.fc[0](m.avg_pool(x).flatten(1))))[:, :, None, None]),
     Mistake("the squeeze uses max pooling: your output equals the reference's with adaptive max pooling in place of "
             "the average", lambda m, x: x * m.fc(F.adaptive_max_pool2d(x, 1).flatten(1))[:, :, None, None]),
     Mistake("the gate is added, not multiplied: your output equals x + gate; the reference computes x * gate",
             lambda m, x: x + m.gate(x)),
     Mistake("SE returns the gate instead of x * gate: the output must have the input's shape (N, C, H, W)",
             lambda m, x: m.gate(x))),
    ("squeeze = global average pool to (N, C)", "excite = Linear -> PReLU -> Linear -> Sigmoid",
     "output = x * gate, broadcast over H and W"), {"fc": "the excitation MLP"}, rules=_MODULE_RULES)


def check_se_block(cls: type) -> None:
    """Check ``MySEBlock(channel, reduction=16)`` (chapter 4) on four configurations."""
    run_check(_SE, cls, [Case(_call_text(name_of(cls), a, {}), seeded_input(4, a[0], 6, 6), lambda a=a: SEBlock(*a),
                              lambda a=a: cls(*a)) for a in [(64,), (32, 8), (48, 16), (128, 4)]])


def _model_forward(m: nn.Module, x: torch.Tensor, stem: bool = True, head: Sequence[str] = ("bn4", "dropout")
                   ) -> torch.Tensor:
    """ResNetArcFace's forward with switches for the usual mistakes."""
    x = m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.prelu(m.bn1(m.conv1(x))) if stem else m.bn1(m.conv1(x)))))))
    for s in head:
        x = getattr(m, s)(x)
    return m.bn5(m.fc5(x.flatten(1)))


def _xavier_init(ex: Exercise, cfg: str, model: nn.Module) -> None:
    """Xavier-normal convs and linears (std ``sqrt(2 / (fan_in + fan_out))``, not the default kaiming-uniform's
    ``1 / sqrt(3 fan_in)``), zero Linear biases, BatchNorm 1 and 0, PReLU 0.25."""
    problems: List[str] = []
    kaiming = uniform = 0
    for n, m in model.named_modules():
        if isinstance(m, _BatchNorm) and m.affine and not (torch.all(m.weight == 1) and torch.all(m.bias == 0)):
            problems.append(f"{n}: BatchNorm weight should be 1 and bias 0")
        elif isinstance(m, nn.PReLU) and not torch.allclose(m.weight, torch.full_like(m.weight, 0.25)):
            problems.append(f"{n}.weight is {m.weight.flatten()[0].item():.3g}, PReLU keeps its default 0.25")
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach()
            xavier = math.sqrt(2.0 / (w[0].numel() + w.shape[0] * w[0][0].numel()))
            std, tol = w.std().item(), 0.1 + 4.0 / math.sqrt(2.0 * w.numel())
            z = (w.flatten()[:65536].double() - w.mean()) / std
            if abs(std / xavier - 1) > tol:
                problems.append(f"{n}.weight std {std:.3g}, xavier_normal_ gives {xavier:.3g}")
                kaiming += abs(std * math.sqrt(3.0 * w[0].numel()) - 1) <= tol
            elif w.numel() >= 4096 and z.pow(4).mean().item() - 3.0 < -0.6:  # excess kurtosis: uniform's is -1.2
                uniform += 1
                problems.append(f"{n}.weight has the right std but looks uniform, not normal")
            if isinstance(m, nn.Linear) and m.bias is not None and not torch.all(m.bias == 0):
                problems.append(f"{n}.bias is not 0")
    notes = [f"{kaiming} conv/linear weights have the std of PyTorch's default init (kaiming_uniform_ with "
             "a=sqrt(5)): does your init loop run at the end of __init__?"] if kaiming else []
    notes += ["weights look uniformly distributed: xavier_uniform_ instead of xavier_normal_?"] if uniform else []
    if problems:
        ex.fail(cfg, f"initialisation differs: {len(problems)} problem(s), e.g. {problems[0]}", "At the end of "
                "__init__: for m in self.modules(): Conv2d and Linear -> nn.init.xavier_normal_(m.weight); Linear bias"
                " -> 0; BatchNorm weight 1 and bias 0; PReLU keeps its default 0.25.", notes + problems[1:4])


_MODEL = Exercise(
    "check_resnet_arcface", ResNetArcFace, "(block, layers, use_se=True)",
    (Mistake("dropout missing: your train-mode output equals the reference's without dropout (nn.Dropout(), p=0.5, "
             "after bn4); in eval mode dropout does nothing, so only train mode shows it",
             lambda m, x: _model_forward(m, x, head=("bn4",)), train_only=True),
     Mistake("dropout in the wrong place: your train-mode output equals the reference's with dropout before bn4 (the "
             "head is bn4 -> dropout -> flatten -> fc5 -> bn5)",
             lambda m, x: _model_forward(m, x, head=("dropout", "bn4")), train_only=True),
     Mistake("no PReLU in the stem: your output equals the reference's without prelu after bn1 (the stem is conv1 -> "
             "bn1 -> prelu -> maxpool)", lambda m, x: _model_forward(m, x, stem=False))),
    ("a block differs from IRBlock (check yours with check_ir_block first)", "the stem is conv1 -> bn1 -> prelu -> "
     "maxpool", "the head is bn4 -> dropout -> flatten -> fc5 -> bn5", "use_se is not passed on to the blocks"),
    {"downsample": "_make_layer must build one for a stage's first block whenever stride != 1 or inplanes != planes * "
                   "block.expansion: nn.Sequential(nn.Conv2d(inplanes, planes * expansion, kernel_size=1, "
                   "stride=stride, bias=False), nn.BatchNorm2d(planes * expansion)).",
     "bn0": "it normalises each IRBlock's input before conv1", "bn4": "after layer4, before dropout",
     "dropout": "nn.Dropout() (p=0.5) after bn4 and before flattening; only train mode shows it",
     "bn5": "the last layer, after fc5: it normalises the 512-d embedding",
     "fc5": "A 128x128 input leaves an 8x8 map after the stem's max-pool (64x64) and the three stride-2 stages "
            "(32, 16, 8); 7x7 is the 112x112 convention of InsightFace.",
     "maxpool": "MaxPool2d(2, 2) at the end of the stem halves 128x128 to 64x64",
     "stride": "Each of layer2..layer4 halves the resolution in its first block.",
     "shape": "The network returns a (N, 512) embedding: bn5(fc5(flatten(dropout(bn4(x)))))."},
    what="structure, initialisation, eval/train outputs and gradients", wording=_MODULE_WORDING, rules=_MODULE_RULES,
    extra_check=_xavier_init)


def check_resnet_arcface(cls: type) -> None:
    """Check ``MyResNetArcFace(block, layers, use_se=True)`` (chapter 6) with ``'IRBlock'`` and layers (1, 1, 1, 1),
    then (2, 2, 2, 2) with ``use_se`` False and True: structure, initialisation, eval outputs; train outputs for the
    first two, gradients for the first. The slowest check (39 s on a loaded 2-core CPU). It may use our IRBlock."""
    configs = [(("IRBlock", (1, 1, 1, 1)), {}, "train, grads"), (("IRBlock", (2, 2, 2, 2)), {"use_se": False}, "train"),
               (("IRBlock", (2, 2, 2, 2)), {"use_se": True}, "")]
    run_check(_MODEL, cls, [Case(_call_text(name_of(cls), a, k), seeded_input(2, 1, 128, 128),
                                 lambda a=a, k=k: ResNetArcFace(*a, **k), lambda a=a, k=k: cls(*a, **k),
                                 "train" in modes, "grads" in modes, eval_batch=1)  # train mode needs 2 samples (bn5)
                            for a, k, modes in configs])


# --- Chapters 7-10: functions: ArcFace's logits, TAR at a FAR, the identity loss, conv-BN folding ---------------------

def _arcface_input(n: int, c: int, kw: Dict[str, float], edge: bool = False) -> Callable[[], Tuple]:
    """Random cosines, labels never on the row's largest, one past the threshold pi - m; ``edge``: cos = +-1."""
    def inputs() -> Tuple:
        cos = torch.rand(n, c, generator=torch.Generator().manual_seed(SEED + n), dtype=torch.float64) * 1.9 - 0.95
        labels = (cos.argmax(1) + 1 + torch.arange(n) % (c - 1)) % c
        cos[0, labels[0]] = -0.97
        if edge:
            cos[torch.arange(n), labels] = torch.tensor([1.0, -1.0]).repeat(n)[:n].to(cos)
        return (cos.requires_grad_(), labels), dict(kw)
    return inputs


def _arcface_mistake(message: str, logits: Callable[..., torch.Tensor]) -> Mistake:
    return Mistake(message, lambda c, l, s=64.0, m=0.5: logits(c, l, s, m))


def _scale_and_label_mistakes(logits: Callable[..., torch.Tensor]) -> List[Tuple[str, Callable[..., torch.Tensor]]]:
    """The mistakes every margin-logits exercise shares, reproduced on its reference ``logits``: ``s`` applied
    twice, not at all or ignored, ``m`` ignored, the labels ignored."""
    return [("s applied twice: your logits equal the reference's times s",
             lambda c, l, s, m: logits(c, l, s, m) * s),
            ("s not applied: your logits equal the reference's divided by s (multiply by s once, after the margin)",
             lambda c, l, s, m: logits(c, l, s, m) / s),
            ("s ignored: your logits equal the reference's with s=64 whatever the call passes",
             lambda c, l, s, m: logits(c, l, 64.0, m)),
            ("m ignored: your logits equal the reference's with m=0.5 whatever the call passes",
             lambda c, l, s, m: logits(c, l, s, 0.5)),
            ("labels ignored: your margin lands on each row's largest cosine, not on the column labels[i]",
             lambda c, l, s, m: logits(c, c.argmax(1), s, m)),
            ("labels ignored: your margin lands on column 0, not on the column labels[i]",
             lambda c, l, s, m: logits(c, torch.zeros_like(l), s, m))]


_ARCFACE = Exercise(
    "check_arcface_logits", arcface_logits, "(cosine, labels, s=64.0, m=0.5) -> logits", tuple(
        _arcface_mistake(*entry) for entry in [
            ("margin added to every class: your logits equal s * cos(theta + m) in every column; ArcFace adds the "
             "margin to the target class's angle only (the column labels[i] of row i)", lambda c, l, s, m: torch.stack(
                 [arcface_logits(c, torch.full_like(l, j), s, m)[:, j] for j in range(c.shape[1])], 1)),
            ("margin added to cos(theta) instead of theta: your logits equal s * (cos(theta) - m) (CosFace's margin) "
             "at the target; ArcFace computes s * cos(theta + m)", cosface_logits),
            ("margin added to cos(theta) instead of theta: your logits equal s * (cos(theta) + m) at the target; "
             "ArcFace computes s * cos(theta + m)", lambda c, l, s, m: cosface_logits(c, l, s, -m)),
            *_scale_and_label_mistakes(arcface_logits),
            ("cos(theta + m) used past theta = pi - m: there it grows again as theta grows; the reference switches to "
             "cos(theta) - m sin(m) when cos(theta) <= cos(pi - m) (see the chapter)", lambda c, l, s, m: s *
             torch.where(F.one_hot(l, c.shape[1]).bool(), torch.cos(torch.acos(c.clamp(-1, 1)) + m), c))]),
    ("the margin belongs to the target's angle: cos(theta + m) = cos(theta) cos(m) - sin(theta) sin(m)",
     "every logit is scaled by s once"),
    {"grad:nan": "NaN gradient at cos = 1: the derivative of acos (and of sqrt(1 - cos^2)) is infinite at cos = +-1; "
                 "clamp 1 - cos^2 away from 0 (or cos into [-1 + eps, 1 - eps]) before the square root or acos"},
    what="logits and their gradients, including cos = +-1")


def check_arcface_logits(fn: Callable[..., torch.Tensor]) -> None:
    """Check a learner's ``arcface_logits(cosine, labels, s=64.0, m=0.5)`` (``my_arcface_logits``, chapter 7)
    against :func:`resnet_arcface.learn.losses.arcface_logits`: logits and gradients on random cosines (some past the
    threshold pi - m), with other ``s`` and ``m``, and finite gradients at cos = +-1 exactly."""
    run_function_check(_ARCFACE, fn, [Case(f"{name_of(fn)}(cosine ({n}, {c}){' with +-1' if e else ''}, labels"
                                           + "".join(f", {k}={v}" for k, v in kw.items()) + ")",
                                           _arcface_input(n, c, kw, e), finite_only=e)
                                      for n, c, kw, e in [(6, 5, {}, False), (8, 7, {"s": 30.0, "m": 0.3}, False),
                                                          (4, 3, {}, True)]])


def easy_margin_logits(cosine: torch.Tensor, labels: torch.Tensor, s: float = 64.0, m: float = 0.5) -> torch.Tensor:
    """ArcFace with the *easy margin* (the reference of exercise 7.2; the package trains with the threshold instead).

    ``s * cos(theta_y + m)`` in each row's own class where ``cos(theta_y) > 0``, ``s * cos(theta_y)`` (no margin)
    where ``cos(theta_y) <= 0``, and ``s * cos(theta)`` in every other class: the ``easy_margin`` branch of
    ronghuaiyang's arcface-pytorch ``ArcMarginProduct``.

    Shape:
        - cosine: ``(N, C)``; labels: ``(N,)`` integers in ``[0, C)``
        - output: ``(N, C)``
    """
    sin = (1 - cosine * cosine).clamp_min(1e-7).sqrt()  # finite gradient at cos = +-1, as in arcface_logits
    phi = torch.where(cosine > 0, cosine * math.cos(m) - sin * math.sin(m), cosine)
    return s * torch.where(F.one_hot(labels, cosine.shape[1]).bool(), phi, cosine)


def _easy_variant(c: torch.Tensor, l: torch.Tensor, s: float, m: float, every: bool = False,
                  switch: str = "cos") -> torch.Tensor:
    """The easy margin with switches for the usual mistakes: the margin on ``every`` class, or a ``switch`` on
    ``"reversed"`` (margin only where cos <= 0) or ``"phi"`` (the test on cos(theta + m) instead of cos(theta))."""
    phi = c * math.cos(m) - (1 - c * c).clamp_min(1e-7).sqrt() * math.sin(m)
    keep = {"cos": c > 0, "reversed": c <= 0, "phi": phi > 0}[switch]
    target = torch.ones_like(c, dtype=torch.bool) if every else F.one_hot(l, c.shape[1]).bool()
    return s * torch.where(target, torch.where(keep, phi, c), c)


_EASY = Exercise(
    "check_easy_margin_logits", easy_margin_logits, "(cosine, labels, s=64.0, m=0.5) -> logits", tuple(
        _arcface_mistake(*entry) for entry in [
            ("threshold convention instead of the easy margin: your logits equal the chapter's ArcFace "
             "(arcface_logits), which keeps the margin up to pi - m and then subtracts m sin(m); the easy margin "
             "drops the margin wherever cos(theta_y) <= 0", arcface_logits),
            ("cos(theta + m) kept everywhere: your logits have no switch at all; the easy margin uses the plain "
             "cos(theta_y) wherever cos(theta_y) <= 0", lambda c, l, s, m: s * torch.where(
                 F.one_hot(l, c.shape[1]).bool(), torch.cos(torch.acos(c.clamp(-1, 1)) + m), c)),
            ("switch reversed: your margin applies where cos(theta_y) <= 0 and is dropped where cos(theta_y) > 0",
             lambda c, l, s, m: _easy_variant(c, l, s, m, switch="reversed")),
            ("switch tested on cos(theta + m) instead of cos(theta): the easy margin keeps the margin where the "
             "angle itself is below 90 degrees, cos(theta_y) > 0", lambda c, l, s, m: _easy_variant(
                 c, l, s, m, switch="phi")),
            ("margin added to every class: your logits carry the margin in every column; it belongs to the target "
             "class only (the column labels[i] of row i)", lambda c, l, s, m: _easy_variant(c, l, s, m, every=True)),
            ("margin added to cos(theta) instead of theta: your logits equal s * (cos(theta) - m) (CosFace's margin) "
             "at the target; ArcFace computes s * cos(theta + m)", lambda c, l, s, m: s * torch.where(
                 F.one_hot(l, c.shape[1]).bool() & (c > 0), c - m, c)),
            ("margin added to cos(theta) instead of theta: your logits equal s * (cos(theta) - m) (CosFace's margin) "
             "at the target; ArcFace computes s * cos(theta + m)", cosface_logits),
            *_scale_and_label_mistakes(easy_margin_logits)]),
    ("the margin belongs to the target's angle, and only where cos(theta_y) > 0",
     "cos(theta + m) = cos(theta) cos(m) - sin(theta) sin(m)", "every logit is scaled by s once"),
    {"grad:nan": _ARCFACE.hints["grad:nan"]},
    what="logits and their gradients, including cos = +-1")


def check_easy_margin_logits(fn: Callable[..., torch.Tensor]) -> None:
    """Check a learner's ``easy_margin_logits(cosine, labels, s=64.0, m=0.5)`` (``my_easy_margin_logits``, chapter 7,
    exercise 7.2) against :func:`easy_margin_logits`: logits and gradients on random cosines (targets on both sides
    of 90 degrees and one past pi - m, where the threshold convention differs too), with other ``s`` and ``m``, and
    finite gradients at cos = +-1 exactly."""
    run_function_check(_EASY, fn, [Case(f"{name_of(fn)}(cosine ({n}, {c}){' with +-1' if e else ''}, labels"
                                         + "".join(f", {k}={v}" for k, v in kw.items()) + ")",
                                         _arcface_input(n, c, kw, e), finite_only=e)
                                    for n, c, kw, e in [(6, 5, {}, False), (8, 7, {"s": 30.0, "m": 0.3}, False),
                                                        (4, 3, {}, True)]])


def _roc_step(scores: torch.Tensor, same: torch.Tensor, far: float, step: int, on_same: bool = False) -> float:
    """TAR at the ROC point ``step`` points past the reference's (or with FAR measured on the genuine pairs)."""
    fars, tars, _ = roc(scores, same)
    k = int(torch.nonzero((tars if on_same else fars) <= far).max())
    return float(tars[max(0, min(k + step, len(tars) - 1))])


_TAR = Exercise(
    "check_tar_at_far", tar_at_far, "(scores, same, far) -> float",
    (Mistake("FAR computed on the same (genuine) pairs: the false accept rate counts accepted impostor pairs "
             "(same == False) among all impostor pairs", lambda sc, sa, far: _roc_step(sc, sa, far, 0, True)),
     Mistake("threshold direction reversed: you accept pairs whose score is BELOW the threshold; a higher score "
             "means more alike, so accept score >= threshold", lambda sc, sa, far: tar_at_far(-sc, sa, far)),
     Mistake("off by one (>= vs >): your threshold accepts one more impostor score than the FAR allows; the reference "
             "takes the lowest threshold whose measured FAR is at most far",
             lambda sc, sa, far: _roc_step(sc, sa, far, 1)),
     Mistake("off by one (>= vs >): your threshold is one score stricter than needed; the reference accepts every pair "
             "with score >= the lowest threshold whose measured FAR is at most far",
             lambda sc, sa, far: _roc_step(sc, sa, far, -1))),
    ("FAR = accepted impostor pairs / impostor pairs", "accept when score >= threshold", "tied scores move together"),
    what="TAR at several FARs, with tied scores")


def check_tar_at_far(fn: Callable[..., float]) -> None:
    """Check a learner's ``tar_at_far(scores, same, far)`` (``my_tar_at_far``, chapter 8) against
    :func:`resnet_arcface.eval.verify.tar_at_far` on overlapping genuine and impostor scores, with and without ties."""
    def make(far: float, ties: bool) -> Callable[[], Tuple]:
        g = torch.Generator().manual_seed(SEED + 5)
        scores = torch.cat([torch.randn(30, generator=g) + 1.5, torch.randn(60, generator=g)])
        return lambda: (((scores * 4).round() / 4 if ties else scores.clone(), torch.arange(90) < 30, far), {})
    run_function_check(_TAR, fn, [Case(f"{name_of(fn)}(scores, same, far={far})" + (" with tied scores" * ties),
                                       make(far, ties), grads=False)
                                  for far, ties in [(0.1, False), (0.05, False), (0.25, True), (0.02, True)]],
                       lambda out, args: torch.as_tensor(out, dtype=torch.float64) if isinstance(
                           out, (float, int, torch.Tensor)) and not isinstance(out, bool) else out)


def _identity_variant(model: nn.Module, output: torch.Tensor, target: torch.Tensor, weight: float = 10.0,
                      gray: str = "luma", loss: Callable = F.l1_loss, norm: bool = False, detach: bool = True
                      ) -> torch.Tensor:
    """GFPGAN's identity loss with switches for the usual mistakes (``loss``: any ``(e_out, e_target)`` loss)."""
    def embed(x: torch.Tensor) -> torch.Tensor:
        e = model(preprocess(x.mean(1, keepdim=True) if gray == "mean" else x, (-1.0, 1.0), model.input_size))
        return F.normalize(e, dim=1) if norm else e
    e_target = embed(target)
    return weight * loss(embed(output), e_target.detach() if detach else e_target)


def _one_minus_cosine(e_out: torch.Tensor, e_target: torch.Tensor, dim: int = 1, one: bool = True,
                      reduce: Callable = torch.mean) -> torch.Tensor:
    """``mean(1 - cos)`` over the batch, with switches for the usual mistakes."""
    cosine = F.cosine_similarity(e_out, e_target, dim=dim)
    return reduce(1 - cosine if one else cosine)


def cosine_identity_loss(model: nn.Module, output: torch.Tensor, target: torch.Tensor, weight: float = 1.0
                         ) -> torch.Tensor:
    """The reference of chapter 9's exercise: ``weight * mean_n(1 - cos(e(output_n), e(target_n)))``.

    The cosine form of an identity loss (pixel2style2pixel's, for one): GFPGAN's preprocessing and frozen
    eval-mode network, the target's embedding without a graph, and one minus the cosine similarity of each
    pair of embeddings, averaged over the batch. Blind to the embeddings' lengths, unlike GFPGAN's L1.

    Shape:
        - output, target: ``(N, C, H, W)``, C = 1 or 3, values in [-1, 1].
        - Returns: a scalar.
    """
    return _identity_variant(model, output, target, weight, loss=_one_minus_cosine)


_IDENTITY = Exercise(
    "check_identity_loss", identity_loss, "(model, output, target, weight=10.0) -> scalar loss",
    (Mistake("MSE instead of L1: your loss equals weight * mean((e_out - e_target)^2); GFPGAN uses the L1 distance "
             "(mean absolute difference)", lambda *a, **k: _identity_variant(*a, **k, loss=F.mse_loss)),
     Mistake("weight missing: your loss equals the reference's divided by weight", lambda *a, **k: _identity_variant(
         *a, **{**k, "weight": 1.0})),
     Mistake("RGB not converted to gray with GFPGAN's weights: your loss equals the reference's with the channel mean "
             "as gray; use 0.2989 R + 0.5870 G + 0.1140 B (preprocess does)",
             lambda *a, **k: _identity_variant(*a, **k, gray="mean")),
     Mistake("embeddings normalised: GFPGAN takes the L1 distance of the raw (BatchNorm-ed) embeddings",
             lambda *a, **k: _identity_variant(*a, **k, norm=True))),
    ("gray with 0.2989 R + 0.5870 G + 0.1140 B", "bilinear resize to model.input_size", "L1 of the raw embeddings",
     "times weight"),
    {"error:channels": "RGB not converted to gray: the network takes one channel; convert with 0.2989 R + 0.5870 G + "
                       "0.1140 B (resnet_arcface.preprocess does it, and the resize)",
     "error:spatial size": "not resized: the network takes model.input_size x model.input_size images; resize "
                           "bilinearly (align_corners=False), as resnet_arcface.preprocess does",
     "grad:target": "target not detached: a gradient flows into target; GFPGAN computes the target's embedding "
                    "without a graph (torch.no_grad() or .detach()): only the restored image is pushed"},
    after=lambda args, ref_args: (
        "model in train mode: your function runs the network in train mode (BatchNorm on batch statistics, dropout "
        "on); GFPGAN's identity network is frozen in eval mode" if any(args[0].modes) else "your function left the "
        "network in train mode; leave it in eval mode" if args[0].training else ""),
    what="loss and the gradients of output and target")


def _identity_cases(fn: Callable[..., torch.Tensor]) -> List[Case]:
    """The cases of both identity-loss checks: a small eval-mode ResNetArcFace (its mode recorded at each call),
    RGB images in [-1, 1] of another size than the network's, default and explicit weight."""
    def make(kw: Dict[str, float]) -> Callable[[], Tuple]:
        def inputs() -> Tuple:
            torch.manual_seed(SEED)
            model = ResNetArcFace("IRBlock", (1, 1, 1, 1), False, (8, 8, 16, 16), input_size=32, embedding_dim=16)
            randomise(model)
            model.modes = []  # the network's mode at each call: the learner's function must not train it
            model.register_forward_pre_hook(lambda m, i: m.modes.append(m.training))
            out, target = (torch.rand(2, 4, 3, 48, 48, generator=torch.Generator().manual_seed(SEED + 6)) * 2 - 1)
            return (model.eval(), out.requires_grad_(), target.requires_grad_()), dict(kw)
        return inputs
    return [Case(f"{name_of(fn)}(model, output (4, 3, 48, 48), target{extra})", make(kw))
            for kw, extra in [({}, ""), ({"weight": 2.5}, ", weight=2.5")]]


def check_identity_loss(fn: Callable[..., torch.Tensor]) -> None:
    """Check a learner's ``identity_loss(model, output, target, weight=10.0)`` (``my_identity_loss``, chapter 9)
    against :func:`resnet_arcface.learn.losses.identity_loss`, with a small eval-mode ResNetArcFace, RGB images in
    [-1, 1] of another size than the network's, and the gradients of both image batches."""
    run_function_check(_IDENTITY, fn, _identity_cases(fn))


def _cosine_variant(model: nn.Module, output: torch.Tensor, target: torch.Tensor, weight: float = 1.0,
                    gray: str = "luma", **switches: Any) -> torch.Tensor:
    """The cosine identity loss with switches for the usual mistakes (``switches`` go to :func:`_one_minus_cosine`;
    ``l1=True``: GFPGAN's L1 instead)."""
    loss = F.l1_loss if switches.pop("l1", False) else lambda e, t: _one_minus_cosine(e, t, **switches)
    return _identity_variant(model, output, target, weight, gray=gray, loss=loss)


_COSINE = Exercise(
    "check_cosine_identity_loss", cosine_identity_loss, "(model, output, target, weight=1.0) -> scalar loss",
    (Mistake("GFPGAN's L1 instead of the cosine: your loss equals weight * mean|e_out - e_target|; this exercise "
             "asks for weight * mean(1 - cos)", lambda *a, **k: _cosine_variant(*a, **k, l1=True)),
     Mistake("cosine instead of 1 - cosine: your loss equals weight * mean(cos), which is largest when the two "
             "faces agree; a loss must be smallest there", lambda *a, **k: _cosine_variant(*a, **k, one=False)),
     Mistake("cosine along the batch axis: your loss takes the cosine over dim=0 (the images), not dim=1 (the "
             "embedding's numbers)", lambda *a, **k: _cosine_variant(*a, **k, dim=0)),
     Mistake("summed over the batch instead of averaged: your loss grows with N; take the mean over the pairs",
             lambda *a, **k: _cosine_variant(*a, **k, reduce=torch.sum)),
     Mistake("weight missing: your loss equals the reference's divided by weight",
             lambda *a, **k: _cosine_variant(*a, **{**k, "weight": 1.0})),
     Mistake("RGB not converted to gray with GFPGAN's weights: your loss equals the reference's with the channel mean "
             "as gray; use 0.2989 R + 0.5870 G + 0.1140 B (preprocess does)",
             lambda *a, **k: _cosine_variant(*a, **k, gray="mean"))),
    ("preprocess(x, value_range=(-1, 1), size=model.input_size)", "the target's embedding detached",
     "1 - F.cosine_similarity(e_out, e_target, dim=1), averaged over the batch", "times weight"),
    {**_IDENTITY.hints, "grad:target": "target not detached: a gradient flows into target; compute the target's "
                                       "embedding without a graph (torch.no_grad() or .detach()), as GFPGAN does"},
    after=_IDENTITY.after, what="loss and the gradients of output and target")


def check_cosine_identity_loss(fn: Callable[..., torch.Tensor]) -> None:
    """Check a learner's ``cosine_identity_loss(model, output, target, weight=1.0)`` (``my_cosine_identity_loss``,
    chapter 9) against :func:`cosine_identity_loss`: the same small eval-mode network and images as
    :func:`check_identity_loss`, the loss and the gradients of both image batches."""
    run_function_check(_COSINE, fn, _identity_cases(fn))


def _fold_variant(conv: nn.Conv2d, bn: nn.BatchNorm2d, mean: bool = True, beta: bool = True, root: bool = True,
                  eps: bool = True, axis: int = 0) -> nn.Conv2d:
    """Folding with switches for the usual mistakes: ``w * scale``, ``(b - mean) * scale + beta``."""
    scale = bn.weight / (bn.running_var + (bn.eps if eps else 0.0)) ** (0.5 if root else 1.0)
    folded = copy.deepcopy(conv)
    folded.weight = nn.Parameter(conv.weight * scale.view([-1 if d == axis else 1 for d in range(4)]))
    folded.bias = nn.Parameter(((conv.bias if conv.bias is not None else 0.0) - (bn.running_mean if mean else 0.0))
                               * scale + (bn.bias if beta else 0.0))
    return folded


def _left_alone(args: Sequence[Any], ref_args: Sequence[Any]) -> str:
    """A fold must build new modules: a message if the learner's function changed the two it was given."""
    same = all(torch.equal(x, y) for i in (0, 1) for x, y in zip(args[i].state_dict().values(),
                                                                 ref_args[i].state_dict().values()))
    return "" if same else ("your function changed the convolution or the BatchNorm it was given; build a new "
                            "nn.Conv2d")


_FOLD = Exercise(
    "check_fold_conv_bn", fold_conv_bn, "(conv, bn) -> nn.Conv2d",
    (Mistake("forgot the BN bias (beta): your folded bias lacks + bn.bias",
             lambda c, b: _fold_variant(c, b, beta=False)),
     Mistake("forgot the running mean: your folded bias is conv.bias * scale + beta; it must be (conv.bias - "
             "running_mean) * scale + beta", lambda c, b: _fold_variant(c, b, mean=False)),
     Mistake("forgot the BN bias and the running mean: your folded bias is only conv.bias * scale",
             lambda c, b: _fold_variant(c, b, mean=False, beta=False)),
     Mistake("used var instead of sqrt(var + eps): scale = gamma / sqrt(running_var + eps)",
             lambda c, b: _fold_variant(c, b, root=False)),
     Mistake("eps missing: scale = gamma / sqrt(running_var + eps), with the BatchNorm's eps",
             lambda c, b: _fold_variant(c, b, eps=False)),
     Mistake("scaled the input-channel axis instead of the output axis: BatchNorm scales each OUTPUT channel, so "
             "multiply weight by scale.view(-1, 1, 1, 1) (dimension 0)", lambda c, b: _fold_variant(c, b, axis=1),
             lambda args: args[0].in_channels == args[0].out_channels)),
    ("scale = gamma / sqrt(running_var + eps) per output channel", "weight * scale.view(-1, 1, 1, 1)",
     "bias = (conv.bias or 0 - running_mean) * scale + beta"),
    {"error:size of tensor": "scaled the wrong axis: BatchNorm scales each OUTPUT channel, so multiply weight by "
                             "scale.view(-1, 1, 1, 1) (dimension 0)"},
    after=_left_alone, what="the folded convolution's output")


def check_fold_conv_bn(fn: Callable[[nn.Conv2d, nn.BatchNorm2d], nn.Conv2d]) -> None:
    """Check a learner's ``fold_conv_bn(conv, bn)`` (``my_fold_conv_bn``, chapter 10) against
    :func:`resnet_arcface.deploy.inference.fold_conv_bn`: the folded convolution's output on an input, for convolutions
    with and without bias and BatchNorms with random statistics (some variances far below 1)."""
    def make(cin: int, cout: int, stride: int, bias: bool) -> Callable[[], Tuple]:
        def inputs() -> Tuple:
            torch.manual_seed(SEED)
            conv, bn = nn.Conv2d(cin, cout, 3, stride, 1, bias=bias), nn.BatchNorm2d(cout)
            randomise(bn)
            bn.running_var[::2] = 1e-4  # where eps matters
            return (conv.requires_grad_(False), bn.eval().requires_grad_(False)), {}
        return inputs
    x = seeded_input(2, 8, 7, 7)()
    run_function_check(_FOLD, fn, [Case(f"{name_of(fn)}(Conv2d({i}, {o}, 3x3, stride={s}, bias={b}), BatchNorm2d({o}))",
                                        make(i, o, s, b), grads=False)
                                   for i, o, s, b in [(8, 8, 1, False), (4, 8, 2, True), (8, 6, 1, True)]],
                       lambda out, args: out(x[:, :out.in_channels]).detach() if isinstance(out, nn.Conv2d) else out)


def _bn_conv_variant(bn: nn.BatchNorm2d, conv: nn.Conv2d, size: Tuple[int, int], axis: int = 1, mean: bool = True,
                     eps: bool = True, conv_bias: bool = True, bias_map: bool = True
                     ) -> Tuple[nn.Conv2d, torch.Tensor]:
    """Folding a BatchNorm BEFORE a convolution, with switches for the usual mistakes (float64, rounded once)."""
    scale = (bn.weight.double() / (bn.running_var.double() + (bn.eps if eps else 0.0)).sqrt())
    shift = bn.bias.double() - (scale * bn.running_mean.double() if mean else 0.0)
    weight = conv.weight.double()
    bias = conv.bias.double() if conv.bias is not None and conv_bias else None
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                       conv.dilation, bias=False, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        folded.weight.copy_(weight * scale.view([-1 if d == axis else 1 for d in range(4)]))
        constant = shift.view(1, -1, 1, 1).expand(1, conv.in_channels, *size)  # what bn adds: the map b
        if bias_map:  # the convolution of the constant map, zero padding included: exact at the border too
            shifted = F.conv2d(constant, weight, bias, conv.stride, conv.padding, conv.dilation)[0]
        else:  # the tempting per-channel bias: as if the padding held b as well
            shifted = (weight * shift.view(1, -1, 1, 1)).sum((1, 2, 3)) + (bias if bias is not None else 0.0)
            out = F.conv2d(constant, weight, None, conv.stride, conv.padding, conv.dilation)[0]
            shifted = shifted.view(-1, 1, 1).expand_as(out)
    return folded.requires_grad_(False), shifted.to(conv.weight.dtype)


def fold_bn_conv(bn: nn.BatchNorm2d, conv: nn.Conv2d, size: Tuple[int, int]) -> Tuple[nn.Conv2d, torch.Tensor]:
    """The reference of chapter 10's exercise: fold an eval-mode BatchNorm that comes BEFORE a convolution.

    ``conv(bn(x)) == folded(x) + bias_map`` for every ``x`` of spatial size ``size``: bn's scale multiplies
    each INPUT channel of the filters (scaling commutes with zero padding), and its shift, a constant map,
    goes through the convolution once, padding included, into a bias *map* (per output position, not per
    channel: near the border the window also reads the padding's zeros). ``conv.bias`` is added to the map.
    Arithmetic in float64, rounded once. Neither argument is modified. ``groups=1`` only.

    Returns:
        ``(folded, bias_map)``: a new ``nn.Conv2d`` without bias, and a tensor ``(C_out, H', W')``.

    Shape:
        - Input of ``folded``: ``(N, bn.num_features, *size)``.
        - ``bias_map``: ``(conv.out_channels, H', W')``, broadcast over the batch.
    """
    if not isinstance(bn, nn.BatchNorm2d) or not isinstance(conv, nn.Conv2d):
        raise ValueError(f"fold_bn_conv expects (nn.BatchNorm2d, nn.Conv2d, size), got ({type(bn).__name__}, "
                         f"{type(conv).__name__}, ...).")
    if conv.groups != 1 or conv.padding_mode != "zeros" or bn.num_features != conv.in_channels:
        raise ValueError(f"fold_bn_conv: needs a zero-padded convolution with groups=1 whose {conv.in_channels} "
                         f"input channels are the BatchNorm's {bn.num_features} (got groups={conv.groups}, "
                         f"padding_mode={conv.padding_mode!r}).")
    return _bn_conv_variant(bn, conv, tuple(size))


_BN_CONV = Exercise(
    "check_fold_bn_conv", fold_bn_conv, "(bn, conv, size) -> (nn.Conv2d, bias_map of shape (C_out, H', W'))",
    (Mistake("a per-channel bias: your bias is the same at every position, as if the padding held bn's shift too; "
             "near the border the window reads zeros, so the bias must be a map: the convolution of the constant "
             "map b (padding included)", lambda b, c, s: _bn_conv_variant(b, c, s, bias_map=False)),
     Mistake("scaled the output-channel axis: a BatchNorm BEFORE the convolution scales its INPUT channels, so "
             "multiply weight by scale.view(1, -1, 1, 1) (dimension 1)",
             lambda b, c, s: _bn_conv_variant(b, c, s, axis=0),
             lambda args: args[0].num_features == args[1].out_channels),
     Mistake("forgot the running mean: bn's shift is beta - scale * running_mean, not beta",
             lambda b, c, s: _bn_conv_variant(b, c, s, mean=False)),
     Mistake("eps missing: scale = gamma / sqrt(running_var + eps), with the BatchNorm's eps",
             lambda b, c, s: _bn_conv_variant(b, c, s, eps=False)),
     Mistake("forgot the convolution's own bias: add conv.bias to the bias map",
             lambda b, c, s: _bn_conv_variant(b, c, s, conv_bias=False), lambda args: args[1].bias is not None)),
    ("scale = gamma / sqrt(running_var + eps) per INPUT channel", "weight * scale.view(1, -1, 1, 1)",
     "bias map = conv applied to the constant map shift = beta - scale * running_mean (with zero padding), "
     "plus conv.bias"),
    {"error:size of tensor": "scaled the wrong axis: a BatchNorm before the convolution scales its INPUT channels, "
                             "so multiply weight by scale.view(1, -1, 1, 1) (dimension 1)"},
    after=_left_alone, what="folded(x) + bias_map",
    also=(folding.fold_bn_conv,))  # the package's own fold, which returns a ConvBiasMap


def check_fold_bn_conv(fn: Callable[..., Tuple[nn.Conv2d, torch.Tensor]]) -> None:
    """Check a learner's ``fold_bn_conv(bn, conv, size)`` (``my_fold_bn_conv``, chapter 10) against
    :func:`fold_bn_conv`: ``folded(x) + bias_map`` on an input of that size, for zero-padded convolutions with
    and without bias, stride 1 and 2, square and oblong maps, and BatchNorms with random statistics."""
    def make(cin: int, cout: int, k: int, stride: int, bias: bool, size: Tuple[int, int]) -> Callable[[], Tuple]:
        def inputs() -> Tuple:
            torch.manual_seed(SEED)
            bn, conv = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, k, stride, k // 2, bias=bias)
            randomise(bn)
            bn.running_var[::2] = 1e-4  # where eps matters
            return (bn.eval().requires_grad_(False), conv.requires_grad_(False), size), {}
        return inputs

    def apply(out: Any, args: Tuple) -> Any:
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], nn.Module)):
            return out  # the engine names what came back
        x = torch.randn(2, args[0].num_features, *args[2], generator=torch.Generator().manual_seed(SEED + 2))
        return (out[0](x) + torch.as_tensor(out[1])).detach()
    run_function_check(_BN_CONV, fn, [
        Case(f"{name_of(fn)}(BatchNorm2d({i}), Conv2d({i}, {o}, {k}x{k}, stride={s}, padding={k // 2}, bias={b}), "
             f"size={hw})", make(i, o, k, s, b, hw), grads=False)
        for i, o, k, s, b, hw in [(8, 8, 3, 1, False, (7, 7)), (4, 8, 3, 2, True, (9, 6)), (6, 5, 5, 1, True, (8, 8))]],
        apply)


#: The grader's registry: exercise id -> (the learner's object's name in the chapter notebook, its check).
EXERCISES: Dict[str, Tuple[str, Callable[[Any], None]]] = {
    "conv3x3": ("my_conv3x3", check_conv3x3), "basic_block": ("MyBasicBlock", check_basic_block),
    "bottleneck": ("MyBottleneck", check_bottleneck), "se_block": ("MySEBlock", check_se_block),
    "ir_block": ("MyIRBlock", check_ir_block), "resnet_arcface": ("MyResNetArcFace", check_resnet_arcface),
    "easy_margin_logits": ("my_easy_margin_logits", check_easy_margin_logits),
    "tar_at_far": ("my_tar_at_far", check_tar_at_far),
    "cosine_identity_loss": ("my_cosine_identity_loss", check_cosine_identity_loss),
    "fold_bn_conv": ("my_fold_bn_conv", check_fold_bn_conv),
}


# --- Chapter 11: the geometric augmentation (warp) -----------------------------------------------------------------

_WARP = Exercise(
    "check_warp", warp, "(images, angle, scale, shift) -> images",
    (Mistake("rotation the wrong way round: your output equals the reference's rotated by -angle; affine_grid maps "
             "each OUTPUT pixel to where it is read in the input, so the matrix is the inverse motion (and the image's "
             "y axis points down)", lambda x, a, s, t: warp(x, -a, s, t)),
     Mistake("zoom inverted: your output equals the reference's with 1 / scale; scale > 1 must zoom IN (sample a "
             "smaller region of the input), so the sampling matrix divides by scale", lambda x, a, s, t: warp(x, a, 1 / s, t)),
     Mistake("shift the wrong way: your output equals the reference's with -shift; the content must move by +shift "
             "(right and down), so the sampling grid moves by -shift", lambda x, a, s, t: warp(x, a, s, -t)),
     Mistake("shift half as large: your output equals the reference's with shift / 2; affine_grid's coordinates run "
             "from -1 to 1, so a fraction of the side is 2 * shift in them", lambda x, a, s, t: warp(x, a, s, t / 2))),
    ("theta = [[cos/scale, -sin/scale, -2 dx], [sin/scale, cos/scale, -2 dy]] with angle in radians",
     "F.affine_grid(theta, images.shape, align_corners=False)",
     "F.grid_sample(..., mode='bilinear', padding_mode='border', align_corners=False), clamped to [0, 1]"),
    {"error:Expected a batch of 2D affine matrices": "theta has the wrong shape: affine_grid wants one 2 x 3 matrix "
                                                    "per image, (N, 2, 3)"},
    what="the warped images")


def check_warp(fn: Callable[..., torch.Tensor]) -> None:
    """Check a learner's ``warp(images, angle, scale, shift)`` (``my_warp``, chapter 11) against
    :func:`resnet_arcface.data.augment.warp`: a rotation alone, a zoom alone, a shift alone, and all three at once,
    on random images whose borders differ from their centre (so the padding mode shows)."""
    def make(angle: Sequence[float], scale: Sequence[float], shift: Sequence[Tuple[float, float]]) -> Callable[[], Tuple]:
        def inputs() -> Tuple:
            images = torch.rand(len(angle), 1, 12, 16, generator=torch.Generator().manual_seed(SEED + 7))
            return (images, torch.tensor(angle), torch.tensor(scale), torch.tensor(shift)), {}
        return inputs
    configs = [("rotation only", [20.0, -35.0], [1.0, 1.0], [(0.0, 0.0), (0.0, 0.0)]),
               ("zoom only", [0.0, 0.0], [1.3, 0.8], [(0.0, 0.0), (0.0, 0.0)]),
               ("shift only", [0.0, 0.0], [1.0, 1.0], [(0.125, 0.0), (0.0, -0.25)]),
               ("rotation, zoom and shift", [12.0, -8.0], [1.15, 0.9], [(0.06, -0.04), (-0.05, 0.03)])]
    run_function_check(_WARP, fn, [Case(f"{name_of(fn)}(images, angle, scale, shift), {text}", make(a, s, t),
                                        grads=False) for text, a, s, t in configs])


EXERCISES["warp"] = ("my_warp", check_warp)
