"""Self-checks for the book's "implement it yourself" exercises.

Each chapter ends with an exercise in which the reader writes one component
(``my_conv3x3``, ``MyBasicBlock``, ...) and then calls its check::

    from resnet_arcface.checks import check_ir_block
    check_ir_block(MyIRBlock)

A check builds the learner's component and the package's reference under
several configurations and compares, in this order:

1. **Structure**: submodule names (they are state_dict keys the pretrained
   checkpoint needs), parameter shapes, module types where they matter (PReLU
   vs ReLU, BatchNorm2d vs BatchNorm1d) and attributes (convolution bias,
   stride, padding; dropout probability; BatchNorm eps and momentum).
2. **Initialisation** (whole network only): the statistics of a fresh model.
3. **Behaviour on the same weights**: the reference's weights, with BatchNorm
   statistics and PReLU slopes randomised so that their mistakes show, are
   copied into the learner's module; then outputs in eval mode and in train
   mode (same seed, so dropout draws the same mask), the gradients of every
   parameter after a backward pass, and the BatchNorm running statistics.

When something differs it raises :class:`CheckFailed` whose message names the
component, the configuration, the specific difference and a hint. When
outputs differ it tries known mistakes on the reference (SE after the
addition, a missing activation, ...) and says which one reproduces the
learner's output. On success it prints one line and returns None.

All checks share one engine (:func:`resnet_arcface.check_engine._run_check`, with the
structure rules in :mod:`resnet_arcface.check_structure`); the six public functions
here only describe their configurations and the mistakes typical of their component.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

# Absolute imports: the coursework grader loads this file afresh as a module of its own (possibly under
# another name), and the references must still be the installed package's. It loads the engine afresh
# too, and registers it under its name while this file executes, so that these imports get the fresh one.
from resnet_arcface.blocks import BasicBlock, Bottleneck, IRBlock
from resnet_arcface.check_engine import ATOL, GRAD_RTOL, RTOL, SEED  # noqa: F401 (still importable from here)
from resnet_arcface.check_engine import CheckFailed  # noqa: F401 (public here; the engine raises it)
from resnet_arcface.check_engine import _Case, _Ctx, _Spec, _Variant, _call_text, _input, _label, _run_check, _validate
from resnet_arcface.conv import conv3x3
from resnet_arcface.model import ResNetArcFace
from resnet_arcface.se import SEBlock

__all__ = [
    "CheckFailed", "check_conv3x3", "check_basic_block", "check_bottleneck", "check_se_block", "check_ir_block",
    "check_resnet_arcface", "EXERCISES",
]


# ---------------------------------------------------------------------------------------------
# Chapter 1: conv3x3
# ---------------------------------------------------------------------------------------------

_CONV_SPEC = _Spec(
    check="check_conv3x3", kind="conv3x3", signature="(inplanes, outplanes, stride=1) -> nn.Conv2d",
    root_label="the convolution",
    causes=("return nn.Conv2d(inplanes, outplanes, kernel_size=3, stride=stride, padding=1, bias=False)",),
    shape_hint=lambda g, r: "Check the padding (1) and the stride: H_out = (H + 2 - 3) // stride + 1.",
)


def check_conv3x3(fn: Callable[..., nn.Module]) -> None:
    """Check a learner's ``conv3x3(inplanes, outplanes, stride=1)`` against the package's.

    Args:
        fn: The learner's function (``my_conv3x3`` in chapter 1).

    Raises:
        CheckFailed: naming the configuration and what differs (bias, padding, stride, ...).
    """
    configs = [((3, 8), 1), ((16, 16, 1), 1), ((8, 16, 2), 2), ((16, 32, 2), 2)]
    label = _label(fn)
    cases = [
        _Case(_call_text(label, args, {}, {}),
              build_ref=(lambda a=args: conv3x3(*a)), build_got=(lambda a=args: fn(*a)),
              make_input=_input(2, args[0], 9, 9))
        for args, _stride in configs
    ]
    _run_check(_CONV_SPEC, fn, cases, want_class=False)


# ---------------------------------------------------------------------------------------------
# Chapters 2-5: the blocks and SE
# ---------------------------------------------------------------------------------------------

def _basic_forward(m: nn.Module, x: torch.Tensor, relu_mid: bool = True, residual: bool = True,
                   act_after_add: bool = True, relu_before_add: bool = False) -> torch.Tensor:
    """BasicBlock's forward with switches for the usual mistakes."""
    out = m.bn1(m.conv1(x))
    out = F.relu(out) if relu_mid else out
    out = m.bn2(m.conv2(out))
    out = F.relu(out) if relu_before_add else out
    identity = m.downsample(x) if m.downsample is not None else x
    out = out + identity if residual else out
    return F.relu(out) if act_after_add else out


def _bottleneck_forward(m: nn.Module, x: torch.Tensor, relu1: bool = True, relu2: bool = True,
                        residual: bool = True, act_after_add: bool = True, relu_before_add: bool = False
                        ) -> torch.Tensor:
    """Bottleneck's forward with switches for the usual mistakes."""
    out = m.bn1(m.conv1(x))
    out = F.relu(out) if relu1 else out
    out = m.bn2(m.conv2(out))
    out = F.relu(out) if relu2 else out
    out = m.bn3(m.conv3(out))
    out = F.relu(out) if relu_before_add else out
    identity = m.downsample(x) if m.downsample is not None else x
    out = out + identity if residual else out
    return F.relu(out) if act_after_add else out


def _ir_forward(m: nn.Module, x: torch.Tensor, bn0: bool = True, prelu_in: bool = True,
                bn1_after_prelu: bool = False, bn2_after_se: bool = False, se_after_add: bool = False,
                residual: bool = True, act_after_add: bool = True) -> torch.Tensor:
    """IRBlock's forward with switches for the usual mistakes."""
    out = m.conv1(m.bn0(x) if bn0 else x)
    if bn1_after_prelu:
        out = m.bn1(m.prelu(out))
    else:
        out = m.bn1(out)
        out = m.prelu(out) if prelu_in else out
    out = m.conv2(out)
    out = out if bn2_after_se else m.bn2(out)
    if m.use_se and not se_after_add:
        out = m.se(out)
    out = m.bn2(out) if bn2_after_se else out
    identity = m.downsample(x) if m.downsample is not None else x
    out = out + identity if residual else out
    if m.use_se and se_after_add:
        out = m.se(out)
    return m.prelu(out) if act_after_add else out


_NO_ACT = "no activation after the addition: your output equals the reference's without its final {act}"
_NO_RES = "no residual: your output equals the reference's without the identity (x, or downsample(x)) added"
_ACT_BEFORE = ("the activation comes before the addition, not after it: your output equals "
               "relu(branch) + identity, while the reference computes relu(branch + identity)")
_DOWNSAMPLE_HINT = ("The check passes a downsample module (a 1x1 convolution with the block's stride, then "
                    "BatchNorm2d); store it as self.downsample and apply it to x to form the identity before the "
                    "addition: identity = self.downsample(x) if self.downsample is not None else x.")

_BASIC_SPEC = _Spec(
    check="check_basic_block", kind="BasicBlock", signature="(inplanes, planes, stride=1, downsample=None)",
    variants=(
        _Variant(_NO_ACT.format(act="ReLU") + " (apply self.relu after out += identity)",
                 lambda m, x: _basic_forward(m, x, act_after_add=False)),
        _Variant(_NO_RES, lambda m, x: _basic_forward(m, x, residual=False)),
        _Variant(_ACT_BEFORE, lambda m, x: _basic_forward(m, x, relu_before_add=True, act_after_add=False)),
        _Variant("no ReLU between bn1 and conv2: your output equals the reference's without it",
                 lambda m, x: _basic_forward(m, x, relu_mid=False)),
    ),
    causes=("the final ReLU after the addition is missing", "the residual (x, or downsample(x)) is not added",
            "the order inside the branch is conv1 -> bn1 -> relu -> conv2 -> bn2",
            "downsample must be applied to the block's input x"),
    hints={"downsample": _DOWNSAMPLE_HINT,
           "stride": "BasicBlock puts the stride on conv1 (conv3x3(inplanes, planes, stride)); conv2 keeps stride 1."},
    shape_hint=lambda g, r: "The output has planes channels and (H - 1) // stride + 1 rows: check conv1's stride.",
)

_BOTTLENECK_SPEC = _Spec(
    check="check_bottleneck", kind="Bottleneck", signature="(inplanes, planes, stride=1, downsample=None)",
    variants=(
        _Variant(_NO_ACT.format(act="ReLU") + " (apply self.relu after out += identity)",
                 lambda m, x: _bottleneck_forward(m, x, act_after_add=False)),
        _Variant(_NO_RES, lambda m, x: _bottleneck_forward(m, x, residual=False)),
        _Variant(_ACT_BEFORE, lambda m, x: _bottleneck_forward(m, x, relu_before_add=True, act_after_add=False)),
        _Variant("no ReLU after bn1: your output equals the reference's without it",
                 lambda m, x: _bottleneck_forward(m, x, relu1=False)),
        _Variant("no ReLU after bn2: your output equals the reference's without it",
                 lambda m, x: _bottleneck_forward(m, x, relu2=False)),
    ),
    causes=("the final ReLU after the addition is missing", "the residual (x, or downsample(x)) is not added",
            "a ReLU is missing after bn1 or bn2", "downsample must be applied to the block's input x"),
    hints={"downsample": _DOWNSAMPLE_HINT,
           "stride": "Bottleneck (the torchvision 'v1.5' layout) puts the stride on the 3x3 conv2; the 1x1 conv1 and "
                     "conv3 keep stride 1."},
    shape_hint=lambda g, r: (f"The output has planes * expansion = {r[1]} channels; yours has {g[1]}."
                             if g[1] != r[1] else "Check the stride of conv2."),
)

_SE_SPEC = _Spec(
    check="check_se_block", kind="SEBlock", signature="(channel, reduction=16)",
    variants=(
        _Variant("SE gate has no Sigmoid: your output equals x * (fc without the sigmoid)",
                 lambda m, x: x * m.fc[2](m.fc[1](m.fc[0](m.avg_pool(x).flatten(1))))[:, :, None, None]),
        _Variant("the squeeze uses max pooling: your output equals the reference's with adaptive max pooling in "
                 "place of the average",
                 lambda m, x: x * m.fc(F.adaptive_max_pool2d(x, 1).flatten(1))[:, :, None, None]),
        _Variant("the gate is added, not multiplied: your output equals x + gate; the reference computes x * gate",
                 lambda m, x: x + m.gate(x)),
    ),
    causes=("squeeze = global average pool to (N, C)", "excite = Linear -> PReLU -> Linear -> Sigmoid",
            "output = x * gate, broadcast over H and W"),
    hints={"fc": "the excitation MLP"},
    shape_hint=lambda g, r: ("SE returns the gate instead of x * gate: the output must have the input's shape "
                             "(N, C, H, W), each channel rescaled by its gate"
                             if g[-2:] == (1, 1) or len(g) == 2 else "The output must have the input's shape."),
)

_IR_SPEC = _Spec(
    check="check_ir_block", kind="IRBlock",
    signature="(inplanes, planes, stride=1, downsample=None, use_se=True)",
    variants=(
        _Variant("SE applied after the residual addition: your output equals the reference's with the SE gate "
                 "applied to (branch + identity) instead of to the branch alone; call self.se(out) right after "
                 "bn2, before out += identity", lambda m, x: _ir_forward(m, x, se_after_add=True),
                 applies=lambda m: m.use_se),
        _Variant(_NO_ACT.format(act="PReLU") + "; the reference applies the same self.prelu again after "
                 "out += identity", lambda m, x: _ir_forward(m, x, act_after_add=False)),
        _Variant(_NO_RES, lambda m, x: _ir_forward(m, x, residual=False)),
        _Variant("batch norm in the wrong place: your output equals the reference's with bn1 applied after the "
                 "PReLU (the reference's order is conv1 -> bn1 -> prelu)",
                 lambda m, x: _ir_forward(m, x, bn1_after_prelu=True)),
        _Variant("batch norm in the wrong place: your output equals the reference's with bn2 applied after the SE "
                 "gate (the reference's order is conv2 -> bn2 -> se)",
                 lambda m, x: _ir_forward(m, x, bn2_after_se=True), applies=lambda m: m.use_se),
        _Variant("bn0 not applied: your output equals the reference's without bn0 on the block's input",
                 lambda m, x: _ir_forward(m, x, bn0=False)),
        _Variant("no PReLU inside the branch: your output equals the reference's without prelu between bn1 and conv2",
                 lambda m, x: _ir_forward(m, x, prelu_in=False)),
    ),
    causes=("SE applied after the addition instead of to the branch",
            "no PReLU after the addition (the same self.prelu is used twice)",
            "batch norm in the wrong place (order: bn0 -> conv1 -> bn1 -> prelu -> conv2 -> bn2 -> se)",
            "the residual (x, or downsample(x)) not added", "downsample applied to something other than x"),
    hints={"downsample": _DOWNSAMPLE_HINT,
           "bn0": "it normalises the block's input before conv1, pre-activation style",
           "stride": "IRBlock keeps the resolution in conv1 (inplanes -> inplanes, stride 1) and changes width and "
                     "resolution in conv2 (inplanes -> planes, stride).",
           "IRBlock.conv1": "IRBlock's conv1 keeps inplanes channels; conv2 maps inplanes -> planes",
           "IRBlock.conv2": "conv2 maps inplanes -> planes and carries the stride"},
    shape_hint=lambda g, r: "The output has planes channels and (H - 1) // stride + 1 rows: check conv2's stride.",
)


def _expansion_check(spec: _Spec, cls: type, expected: int) -> None:
    """Blocks need a class attribute ``expansion``, read by ResNetArcFace's ``_make_layer``."""
    ctx = _Ctx(spec, _Case(_label(cls), lambda: nn.Identity(), lambda: None, lambda: torch.zeros(0)), _label(cls))
    value = getattr(cls, "expansion", None)
    if value is None:
        ctx.fail(f"{_label(cls)} has no class attribute expansion; the reference {spec.kind} sets expansion = "
                 f"{expected}", "ResNetArcFace's _make_layer reads block.expansion to size each stage's output.")
    if value != expected:
        ctx.fail(f"expansion is {value} but the reference {spec.kind} has expansion = {expected}"
                 + (" (its output has planes * 4 channels: conv3 expands the 1x1-reduced width back)"
                    if expected == 4 else ""))


def _downsample(inplanes: int, outplanes: int, stride: int) -> nn.Sequential:
    """The downsample a check passes to a block: ``Sequential(1x1 conv with stride, BatchNorm2d)``."""
    torch.manual_seed(SEED + 2)
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, kernel_size=1, stride=stride, bias=False),
                         nn.BatchNorm2d(outplanes))


def _block_cases(cls: type, ref_cls: type, configs: Sequence[Tuple], size: int = 8) -> List[_Case]:
    """Cases for a residual block: ``configs`` holds (inplanes, planes, stride, with_downsample[, use_se])."""
    label = _label(cls)
    cases = []
    for cfg in configs:
        inplanes, planes, stride, with_ds = cfg[:4]
        kwargs = {} if len(cfg) < 5 or cfg[4] is None else {"use_se": cfg[4]}
        out = planes * ref_cls.expansion
        args: List[Any] = [inplanes, planes]
        if stride != 1 or with_ds:
            args.append(stride)
        if with_ds:
            args.append("downsample")
        names = {3: f"downsample=Sequential(Conv2d({inplanes}, {out}, 1x1, stride={stride}, bias=False), "
                    f"BatchNorm2d({out}))"}

        def build(klass: type, a: Tuple = tuple(args), k: Dict = dict(kwargs), i: int = inplanes, o: int = out,
                  s: int = stride) -> nn.Module:
            real = [(_downsample(i, o, s) if v == "downsample" else v) for v in a]
            return klass(*real, **k)

        cases.append(_Case(
            _call_text(label, args, kwargs, names),
            build_ref=lambda b=build: b(ref_cls), build_got=lambda b=build: b(cls),
            make_input=_input(4, inplanes, size, size),
            context={"use_se": kwargs.get("use_se", True)}))
    return cases


def check_basic_block(cls: type) -> None:
    """Check a learner's ``BasicBlock(inplanes, planes, stride=1, downsample=None)`` against the package's.

    Args:
        cls: The learner's class (``MyBasicBlock`` in chapter 2).

    Raises:
        CheckFailed: naming the configuration and what differs.
    """
    _validate(_BASIC_SPEC, cls, want_class=True)
    _expansion_check(_BASIC_SPEC, cls, BasicBlock.expansion)
    configs = [(16, 16, 1, False), (16, 32, 2, True), (8, 16, 1, True), (16, 16, 2, True)]
    _run_check(_BASIC_SPEC, cls, _block_cases(cls, BasicBlock, configs))


def check_bottleneck(cls: type) -> None:
    """Check a learner's ``Bottleneck(inplanes, planes, stride=1, downsample=None)`` against the package's.

    Args:
        cls: The learner's class (``MyBottleneck`` in chapter 3).

    Raises:
        CheckFailed: naming the configuration and what differs.
    """
    _validate(_BOTTLENECK_SPEC, cls, want_class=True)
    _expansion_check(_BOTTLENECK_SPEC, cls, Bottleneck.expansion)
    configs = [(64, 16, 1, False), (32, 16, 2, True), (16, 8, 1, True), (64, 16, 2, True)]
    _run_check(_BOTTLENECK_SPEC, cls, _block_cases(cls, Bottleneck, configs))


def check_se_block(cls: type) -> None:
    """Check a learner's ``SEBlock(channel, reduction=16)`` against the package's.

    Args:
        cls: The learner's class (``MySEBlock`` in chapter 4).

    Raises:
        CheckFailed: naming the configuration and what differs.
    """
    label = _label(cls)
    configs = [(64, None), (32, 8), (48, 16), (128, 4)]
    cases = []
    for channel, reduction in configs:
        args = (channel,) if reduction is None else (channel, reduction)
        cases.append(_Case(
            _call_text(label, args, {}, {}),
            build_ref=lambda a=args: SEBlock(*a), build_got=lambda a=args: cls(*a),
            make_input=_input(4, channel, 6, 6), context={"reduction": reduction or 16}))
    _run_check(_SE_SPEC, cls, cases)


def check_ir_block(cls: type) -> None:
    """Check a learner's ``IRBlock(inplanes, planes, stride=1, downsample=None, use_se=True)``.

    Six configurations: with and without SE, strides 1 and 2, with and without a
    change of width (and hence a downsample), and once with ``use_se`` left at its default.

    Args:
        cls: The learner's class (``MyIRBlock`` in chapter 5).

    Raises:
        CheckFailed: naming the configuration and what differs.
    """
    _validate(_IR_SPEC, cls, want_class=True)
    _expansion_check(_IR_SPEC, cls, IRBlock.expansion)
    configs = [(32, 32, 1, False, None), (32, 32, 1, False, False), (32, 64, 2, True, True),
               (32, 64, 2, True, False), (16, 32, 1, True, True), (64, 64, 2, True, True)]
    _run_check(_IR_SPEC, cls, _block_cases(cls, IRBlock, configs))


# ---------------------------------------------------------------------------------------------
# Chapter 6: the whole network
# ---------------------------------------------------------------------------------------------

def _model_forward(m: nn.Module, x: torch.Tensor, stem_prelu: bool = True, dropout: bool = True,
                   dropout_before_bn4: bool = False) -> torch.Tensor:
    """ResNetArcFace's forward with switches for the usual mistakes."""
    x = m.bn1(m.conv1(x))
    x = m.maxpool(m.prelu(x) if stem_prelu else x)
    x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
    if dropout_before_bn4:
        x = m.bn4(m.dropout(x))
    else:
        x = m.bn4(x)
        x = m.dropout(x) if dropout else x
    return m.bn5(m.fc5(x.flatten(1)))


_MODEL_SPEC = _Spec(
    check="check_resnet_arcface", kind="ResNetArcFace", signature="(block, layers, use_se=True)",
    variants=(
        _Variant("dropout missing: your train-mode output equals the reference's without dropout (nn.Dropout(), "
                 "p=0.5, after bn4); in eval mode dropout does nothing, so only train mode shows it",
                 lambda m, x: _model_forward(m, x, dropout=False), train_only=True),
        _Variant("dropout in the wrong place: your train-mode output equals the reference's with dropout before "
                 "bn4 (the reference's head is bn4 -> dropout -> flatten -> fc5 -> bn5)",
                 lambda m, x: _model_forward(m, x, dropout_before_bn4=True), train_only=True),
        _Variant("no PReLU in the stem: your output equals the reference's without prelu after bn1 "
                 "(the stem is conv1 -> bn1 -> prelu -> maxpool)", lambda m, x: _model_forward(m, x, stem_prelu=False)),
    ),
    causes=("a block differs from IRBlock (check yours with check_ir_block first)",
            "the stem order is conv1 -> bn1 -> prelu -> maxpool",
            "the head order is bn4 -> dropout -> flatten -> fc5 -> bn5",
            "use_se is not passed on to the blocks"),
    hints={"downsample": "_make_layer must build one for a stage's first block whenever stride != 1 or "
                         "inplanes != planes * block.expansion: nn.Sequential(nn.Conv2d(inplanes, planes * "
                         "expansion, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes * expansion)).",
           "bn0": "it normalises each IRBlock's input before conv1",
           "ResNetArcFace.bn1": "BatchNorm2d(64) after the stem's conv1",
           "bn4": "after layer4, before dropout",
           "dropout": "after bn4 and before flattening; it does nothing in eval mode, so only train mode shows it",
           "bn5": "the last layer, after fc5: it normalises the 512-d embedding",
           "fc5": "Linear(512 * 8 * 8, 512) maps the flattened 8x8 map to the 512-d embedding",
           "maxpool": "MaxPool2d(2, 2) at the end of the stem halves 128x128 to 64x64",
           "stride": "Each of layer2..layer4 halves the resolution in its first block."},
    shape_hint=lambda g, r: "The network returns a (N, 512) embedding: bn5(fc5(flatten(dropout(bn4(x))))).",
    check_init=True, what="structure, initialisation, eval/train outputs and gradients",
)


def check_resnet_arcface(cls: type) -> None:
    """Check a learner's ``ResNetArcFace(block, layers, use_se=True)`` against the package's.

    Builds ``block='IRBlock'`` networks with ``layers`` (1, 1, 1, 1) (``use_se`` left at its
    default, True) and (2, 2, 2, 2) with ``use_se`` False (GFPGAN's) and True; checks the
    structure, the fresh network's initialisation (Xavier-normal convolutions and linears,
    zero linear biases, BatchNorm at identity, PReLU at 0.25) and, on the same weights,
    outputs in eval and train mode and all gradients on a batch of two 128x128 faces.

    Args:
        cls: The learner's class (``MyResNetArcFace`` in chapter 6); it may use the package's IRBlock.

    Raises:
        CheckFailed: naming the configuration and what differs.
    """
    label = _label(cls)
    # (args, kwargs, what to compare): a backward pass through the whole network is the costliest step, so
    # to keep the check near 10 s on a laptop CPU, gradients are compared on the smallest network (which
    # has every kind of module, SE included) and the last configuration in eval mode only.
    configs: List[Tuple[Tuple, Dict, str]] = [(("IRBlock", (1, 1, 1, 1)), {}, "eval, train, grads"),
                                              (("IRBlock", (2, 2, 2, 2)), {"use_se": False}, "eval, train"),
                                              (("IRBlock", (2, 2, 2, 2)), {"use_se": True}, "eval")]
    cases = [
        _Case(_call_text(label, args, kwargs, {}),
              build_ref=lambda a=args, k=kwargs: ResNetArcFace(*a, **k),
              build_got=lambda a=args, k=kwargs: cls(*a, **k),
              make_input=_input(2, 1, 128, 128), context={"use_se": kwargs.get("use_se", True)},
              train="train" in modes, grads="grads" in modes,
              eval_batch=1)  # train mode needs a batch of 2 (bn5); eval mode does not
        for args, kwargs, modes in configs
    ]
    _run_check(_MODEL_SPEC, cls, cases)


#: The grader's registry: exercise id -> (the learner's object's name in the chapter notebook, its check).
EXERCISES: Dict[str, Tuple[str, Callable[[Any], None]]] = {
    "conv3x3": ("my_conv3x3", check_conv3x3),
    "basic_block": ("MyBasicBlock", check_basic_block),
    "bottleneck": ("MyBottleneck", check_bottleneck),
    "se_block": ("MySEBlock", check_se_block),
    "ir_block": ("MyIRBlock", check_ir_block),
    "resnet_arcface": ("MyResNetArcFace", check_resnet_arcface),
}
