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

All checks share one engine (:func:`_run_check`); the six public functions
only describe their configurations and the mistakes typical of their component.
"""
from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, NoReturn, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

# Absolute imports: the coursework grader loads this file afresh as a module of its own (possibly under
# another name), and the references must still be the installed package's.
from resnet_arcface.blocks import BasicBlock, Bottleneck, IRBlock
from resnet_arcface.conv import conv3x3
from resnet_arcface.model import ResNetArcFace
from resnet_arcface.se import SEBlock

__all__ = [
    "CheckFailed", "check_conv3x3", "check_basic_block", "check_bottleneck", "check_se_block", "check_ir_block",
    "check_resnet_arcface", "EXERCISES",
]

SEED = 0
#: Outputs must agree to ``ATOL + RTOL * max|reference|``; gradients to ``GRAD_RTOL`` of their scale.
RTOL, ATOL, GRAD_RTOL = 1e-4, 1e-6, 1e-3
_RELU_LIKE = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.ELU, nn.GELU, nn.SiLU)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


class CheckFailed(AssertionError):
    """A self-check found a difference between the learner's component and the reference.

    The message is self-contained: the check, the configuration that was built,
    the problem, supporting details and a hint. The parts are also attributes.

    Attributes:
        check: The check's name, e.g. ``"check_ir_block"``.
        config: How the learner's object was called, e.g. ``"MyIRBlock(32, 64, 2, downsample)"``.
        problem: What differs, in one sentence.
        details: Further evidence (max abs differences, call counts, ...).
        hint: What to do about it.
    """

    def __init__(self, check: str, config: str, problem: str, hint: str = "",
                 details: Sequence[str] = ()) -> None:
        self.check, self.config, self.problem, self.hint = check, config, problem, hint
        self.details = tuple(details)
        lines = [f"{check} failed for {config}", f"  Problem: {problem}"]
        lines += [f"  - {d}" for d in self.details]
        if hint:
            lines.append(f"  Hint: {hint}")
        super().__init__("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# Descriptions of what a check builds
# ---------------------------------------------------------------------------------------------

@dataclass
class _Variant:
    """A known mistake, reproduced on the reference's own submodules.

    Attributes:
        message: The diagnosis shown when the learner's output equals this variant's.
        forward: ``forward(reference_module, x) -> output`` computing the mistaken output.
        applies: Whether the variant differs from the reference for this module at all.
    """

    message: str
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    applies: Callable[[nn.Module], bool] = lambda m: True
    train_only: bool = False  # the mistake changes nothing in eval mode (e.g. where dropout sits)


@dataclass
class _Spec:
    """What one check compares: the component's name, its typical mistakes and hints."""

    check: str  # e.g. "check_ir_block"
    kind: str  # the reference component, e.g. "IRBlock"
    signature: str  # the constructor or function signature the learner must accept
    root_label: str = ""  # how to call the learner's module in messages ("" -> its class name)
    variants: Tuple[_Variant, ...] = ()
    causes: Tuple[str, ...] = ()
    hints: Dict[str, str] = field(default_factory=dict)  # by leaf name, e.g. "downsample"
    shape_hint: Optional[Callable[[Tuple[int, ...], Tuple[int, ...]], str]] = None
    check_init: bool = False
    what: str = "structure, eval/train outputs and gradients"


@dataclass
class _Case:
    """One configuration: how to build the reference and the learner's version, and an input."""

    config: str  # shown in messages: how the learner's object was called
    build_ref: Callable[[], nn.Module]
    build_got: Callable[[], Any]
    make_input: Callable[[], torch.Tensor]
    context: Dict[str, Any] = field(default_factory=dict)
    train: bool = True  # also compare train mode
    grads: bool = True  # and, in train mode, the gradients
    eval_batch: Optional[int] = None  # compare eval mode on the first samples only (saves time)


@dataclass
class _Ctx:
    """The check and configuration under test, to raise :class:`CheckFailed` with."""

    spec: _Spec
    case: _Case
    label: str  # the learner's object's name, e.g. "MyIRBlock"

    def fail(self, problem: str, hint: str = "", details: Sequence[str] = ()) -> NoReturn:
        """Raise :class:`CheckFailed` for this configuration, without chaining the error being handled."""
        raise CheckFailed(self.spec.check, self.case.config, problem, hint, details) from None


@dataclass
class _Finding:
    """One structural difference: what differs, and what to do."""

    problem: str
    hint: str = ""


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

def _parent(name: str) -> str:
    """``'layer1.0.bn0'`` -> ``'layer1.0'``; the root's children have parent ``''``."""
    return name.rpartition(".")[0]


def _leaf(name: str) -> str:
    """``'layer1.0.bn0'`` -> ``'bn0'``."""
    return name.rpartition(".")[2]


def _fmt(value: Any) -> str:
    """``(2, 2)`` -> ``'2'``; other values as ``str``."""
    if isinstance(value, tuple) and value and all(v == value[0] for v in value):
        return str(value[0])
    return str(value)


def _count_word(n: int) -> str:
    """2 -> ``'two'``, ...; larger numbers as digits."""
    return {2: "two", 3: "three", 4: "four"}.get(n, str(n))


def _has_state(module: nn.Module) -> bool:
    """Whether the module (with its children) puts any key into a state_dict."""
    return len(module.state_dict()) > 0


def _is_torch_leaf(module: nn.Module) -> bool:
    """A built-in torch.nn layer (not a container, not a class of the package or the learner)."""
    return type(module).__module__.startswith("torch.nn") and not isinstance(module, _CONTAINERS)


def _describe(m: nn.Module) -> str:
    """A compact one-line description of a module, e.g. ``Conv2d(16, 32, 1x1, stride=2, bias=False)``."""
    if isinstance(m, nn.Sequential):
        return "Sequential(" + ", ".join(_describe(c) for c in m) + ")"
    if isinstance(m, nn.Conv2d):
        k = "x".join(str(v) for v in m.kernel_size)
        return (f"Conv2d({m.in_channels}, {m.out_channels}, {k}, stride={_fmt(m.stride)}, "
                f"padding={_fmt(m.padding)}, bias={m.bias is not None})")
    if isinstance(m, nn.Linear):
        return f"Linear({m.in_features}, {m.out_features})"
    if isinstance(m, _BatchNorm):
        return f"{type(m).__name__}({m.num_features})"
    if isinstance(m, nn.PReLU):
        return "PReLU()" if m.num_parameters == 1 else f"PReLU(num_parameters={m.num_parameters})"
    if isinstance(m, nn.Dropout):
        return f"Dropout(p={m.p})"
    return type(m).__name__


def _summarise(exc: BaseException, limit: int = 300) -> str:
    """``'RuntimeError: first line of the message'``, shortened."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(text) > limit:
        text = text[:limit] + " ..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest absolute elementwise difference."""
    return torch.sub(a.detach(), b.detach()).abs_().max().item() if a.numel() else 0.0


def _scale(t: torch.Tensor) -> float:
    """The largest absolute value, the scale tolerances are relative to."""
    return t.detach().abs().max().item() if t.numel() else 0.0


def _close(got: torch.Tensor, ref: torch.Tensor, rtol: float = RTOL) -> bool:
    """Same shape, finite, and within ``ATOL + rtol * max|ref|`` everywhere."""
    if got.shape != ref.shape:
        return False
    if not torch.isfinite(got).all():
        return False
    return _max_diff(got, ref) <= ATOL + rtol * _scale(ref)


def _tick() -> str:
    """A check mark where the console can print one, else ``OK``."""
    try:
        "\u2713".encode(sys.stdout.encoding or "ascii")
        return "\u2713"
    except (UnicodeEncodeError, LookupError):
        return "OK"


def _downsample(inplanes: int, outplanes: int, stride: int) -> nn.Sequential:
    """The downsample a check passes to a block: ``Sequential(1x1 conv with stride, BatchNorm2d)``."""
    torch.manual_seed(SEED + 2)
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, kernel_size=1, stride=stride, bias=False),
                         nn.BatchNorm2d(outplanes))


def _randomise(module: nn.Module, seed: int = SEED) -> Dict[str, torch.Tensor]:
    """Give BatchNorm statistics and affine parameters, PReLU slopes and Linear biases random values.

    A fresh BatchNorm is the identity in eval mode and a fresh PReLU has slope
    0.25 everywhere, so without this a missing BatchNorm or a swapped PReLU
    could go unnoticed. Returns a copy of the randomised state_dict.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, _BatchNorm):
                if m.affine:
                    m.weight.uniform_(0.5, 1.5, generator=g)
                    m.bias.normal_(0.0, 0.2, generator=g)
                if m.track_running_stats:
                    m.running_mean.normal_(0.0, 0.2, generator=g)
                    m.running_var.uniform_(0.5, 2.0, generator=g)
            elif isinstance(m, nn.PReLU):
                m.weight.uniform_(0.05, 0.5, generator=g)
            elif isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.normal_(0.0, 0.1, generator=g)
    buffers = {n for n, _ in module.named_buffers()}
    # Parameters do not change during a check (no optimiser step), so only buffers need a copy.
    return {k: (v.detach().clone() if k in buffers else v.detach()) for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# Structure: names, shapes, types and attributes
# ---------------------------------------------------------------------------------------------

@dataclass
class _Pair:
    """The reference and the learner's module, with their named submodules and state_dicts."""

    ref: nn.Module
    got: nn.Module
    spec: _Spec
    case: _Case
    root: str  # how to name the learner's root module in messages
    ref_mods: Dict[str, nn.Module] = field(init=False)
    got_mods: Dict[str, nn.Module] = field(init=False)

    def __post_init__(self) -> None:
        self.ref_mods = dict(self.ref.named_modules(remove_duplicate=False))
        self.got_mods = dict(self.got.named_modules(remove_duplicate=False))

    def where(self, name: str) -> str:
        """The submodule's name for messages; the root is named after the learner's object."""
        return name if name else self.root

    def role(self, name: str) -> str:
        """What the reference's submodule ``name`` is for, from the spec's hints (or '')."""
        parent = self.ref_mods.get(_parent(name)) if name else None
        key = f"{type(parent).__name__}.{_leaf(name)}" if parent is not None else _leaf(name)
        return self.spec.hints.get(key, self.spec.hints.get(_leaf(name), ""))


def _rule_relu_for_prelu(p: _Pair) -> Iterable[_Finding]:
    """A ReLU (or another fixed activation) where the reference has a PReLU."""
    for n, rm in p.ref_mods.items():
        if not isinstance(rm, nn.PReLU) or isinstance(p.got_mods.get(n), nn.PReLU):
            continue
        gm = p.got_mods.get(n)
        siblings = [g for g, m in p.got_mods.items() if g and _parent(g) == _parent(n) and isinstance(m, _RELU_LIKE)]
        if isinstance(gm, _RELU_LIKE):
            names, kind = n, type(gm).__name__
        elif gm is None and siblings:
            names, kind = ", ".join(siblings), type(p.got_mods[siblings[0]]).__name__
        else:
            continue
        yield _Finding(
            f"{kind} where the reference uses PReLU: {p.where(_parent(n)) if n else p.root} has {kind} ({names}) "
            f"but the reference has nn.PReLU() named {n}",
            f"PReLU learns its negative slope (one value, initialised to 0.25) instead of zeroing negatives; "
            f"its weight is the state_dict key {n}.weight that the pretrained checkpoint needs.")


def _rule_extra_prelu(p: _Pair) -> Iterable[_Finding]:
    """More PReLU modules than the reference has in the same place (usually one per use, not one shared)."""
    def by_parent(mods: Dict[str, nn.Module]) -> Dict[str, List[str]]:
        out: Dict[str, List[str]] = {}
        for n, m in mods.items():
            if n and isinstance(m, nn.PReLU):
                out.setdefault(_parent(n), []).append(n)
        return out

    ref_groups = by_parent(p.ref_mods)
    for parent, names in by_parent(p.got_mods).items():
        ref_names = ref_groups.get(parent, [])
        if ref_names and len(names) > len(ref_names):
            shared = _leaf(ref_names[0])
            twice = (" applied both inside the branch and after the addition"
                     if isinstance(p.ref_mods.get(parent), IRBlock) else "")
            yield _Finding(
                f"{p.where(parent)} has {_count_word(len(names))} PReLU modules "
                f"({', '.join(_leaf(n) for n in names)}) but the reference shares ONE {shared},{twice}",
                f"Create one self.{shared} = nn.PReLU() and call it twice: both uses share a single learned slope, "
                f"and the pretrained checkpoint holds a single {ref_names[0]}.weight.")


def _rule_missing(p: _Pair, soft: List[_Finding]) -> Iterable[_Finding]:
    """Submodules the reference has and the learner's module lacks (the top-most of each missing subtree)."""
    extras = [n for n, m in p.got_mods.items()
              if n and n not in p.ref_mods and _parent(n) in p.ref_mods and _has_state(m)]
    for n, rm in p.ref_mods.items():
        if not n or n in p.got_mods or _parent(n) not in p.got_mods:
            continue
        if isinstance(rm, nn.PReLU) and any(isinstance(m, _RELU_LIKE) for g, m in p.got_mods.items()
                                            if g and _parent(g) == _parent(n)):
            continue  # reported as "ReLU where the reference uses PReLU"
        leaf, parent = _leaf(n), _parent(n)
        role = p.role(n)
        renamed = [e for e in extras if _parent(e) == parent and type(p.got_mods[e]) is type(rm)]
        rename_hint = (f" You have {', '.join(renamed)} ({_describe(p.got_mods[renamed[0]])}): if that is it, "
                       f"rename it to {leaf}, since names are the state_dict keys the checkpoint needs."
                       if renamed else "")
        if not _has_state(rm):
            if isinstance(rm, nn.Sigmoid) and isinstance(p.ref_mods.get(_parent(parent)), SEBlock):
                problem = (f"SE gate has no Sigmoid: the reference ends the excitation MLP with nn.Sigmoid() "
                           f"({n}), so every channel's gate lies in (0, 1)")
            elif isinstance(rm, nn.Dropout):
                problem = f"dropout missing: the reference has nn.Dropout() (p={rm.p}) named {n}"
                problem += f", {role}" if role else ""
            else:
                problem = f"{n} missing: the reference has {_describe(rm)} named {n}" + (f" ({role})" if role else "")
            soft.append(_Finding(problem, rename_hint.strip()))  # only decisive if the outputs differ
            continue
        if leaf == "downsample":
            yield _Finding(f"missing downsample: {p.where(parent)} has no submodule named downsample, but the "
                           f"reference has {n} = {_describe(rm)}",
                           (p.spec.hints.get("downsample", "") + rename_hint).strip())
        elif _leaf(parent) == "downsample":
            ds = p.ref_mods[parent]
            kind = "no BatchNorm2d" if isinstance(rm, _BatchNorm) else f"no {_describe(rm)}"
            yield _Finding(f"wrong downsample: {parent} has {kind} ({n}); the reference's downsample is "
                           f"{_describe(ds)}",
                           "The shortcut must match the branch's shape AND its normalisation: a 1x1 convolution "
                           "with the stage's stride and no bias, followed by BatchNorm2d.")
        elif leaf == "se" and isinstance(rm, SEBlock):
            yield _Finding(f"use_se=True but {p.where(parent)} has no SE gate named se",
                           "Build self.se = SEBlock(planes) when use_se is True, and gate the branch with it "
                           "after bn2, before the addition." + rename_hint)
        else:
            yield _Finding(f"{n} missing: the reference has {_describe(rm)} named {n}" + (f" ({role})" if role else ""),
                           rename_hint.strip())


def _rule_extra(p: _Pair) -> Iterable[_Finding]:
    """Submodules with parameters that the reference does not have."""
    for n, gm in p.got_mods.items():
        if not n or n in p.ref_mods or _parent(n) not in p.ref_mods or not _has_state(gm):
            continue
        if isinstance(gm, nn.PReLU) and any(isinstance(m, nn.PReLU) for r, m in p.ref_mods.items()
                                            if r and _parent(r) == _parent(n)):
            continue  # reported as "two PReLU modules"
        if _leaf(n) == "se":
            yield _Finding(f"use_se=False but {p.where(_parent(n))} has an SE gate (se.*)",
                           "Create self.se only when use_se is True: the use_se=False checkpoint (GFPGAN's) has no "
                           "se keys, so strict loading fails.")
        else:
            yield _Finding(f"unexpected submodule {n} ({_describe(gm)}): the reference has no such module, so the "
                           f"state_dict keys differ and the pretrained checkpoint would not load")


def _rule_types(p: _Pair) -> Iterable[_Finding]:
    """A torch.nn module of another type under the reference's name (BatchNorm1d for 2d, max for avg pool)."""
    for n, rm in p.ref_mods.items():
        gm = p.got_mods.get(n)
        if gm is None or not _is_torch_leaf(rm) or isinstance(gm, type(rm)):
            continue
        if isinstance(rm, nn.PReLU) and isinstance(gm, _RELU_LIKE):
            continue  # reported as "ReLU where the reference uses PReLU"
        hint = "Return the nn.Conv2d itself." if not n and isinstance(rm, nn.Conv2d) else ""
        yield _Finding(f"{p.where(n)} is {type(gm).__name__} where the reference uses {_describe(rm)}", hint)


def _se_width_finding(p: _Pair, n: str, rm: nn.Linear, gm: nn.Linear) -> Optional[_Finding]:
    """The SE bottleneck's width (fc.0's output) in words, or None when ``n`` is not an SE's fc.0."""
    fc = _parent(n)
    if _leaf(n) != "0" or _leaf(fc) != "fc" or not isinstance(p.ref_mods.get(_parent(fc)), SEBlock):
        return None
    if gm.out_features == rm.out_features:
        return None
    reduction = p.case.context.get("reduction", 16)
    where = f"{_parent(fc)}: " if _parent(fc) else ""
    return _Finding(f"{where}SE bottleneck width is {gm.out_features}, expected channel // reduction = "
                    f"{rm.in_features} // {reduction} = {rm.out_features}",
                    "The excitation MLP squeezes channel -> channel // reduction -> channel; use the reduction "
                    "argument (default 16) with integer division.")


def _rule_shapes(p: _Pair) -> Iterable[_Finding]:
    """Channel and feature counts of convolutions, linears, BatchNorms and PReLUs."""
    se_reported = set()
    for n, rm in p.ref_mods.items():
        gm = p.got_mods.get(n)
        if gm is None or not isinstance(gm, type(rm)):
            continue
        if isinstance(rm, nn.Conv2d):
            if (gm.in_channels, gm.out_channels) != (rm.in_channels, rm.out_channels):
                role = p.role(n)
                yield _Finding(f"{p.where(n)} maps {gm.in_channels} -> {gm.out_channels} channels but the "
                               f"reference's maps {rm.in_channels} -> {rm.out_channels}"
                               + (f" ({role})" if role else ""))
            if gm.kernel_size != rm.kernel_size:
                yield _Finding(f"{p.where(n)}: kernel_size is {_fmt(gm.kernel_size)} but should be "
                               f"{_fmt(rm.kernel_size)}")
        elif isinstance(rm, nn.Linear):
            se = _se_width_finding(p, n, rm, gm)
            if se is not None:
                se_reported.add(_parent(n))
                yield se
            elif _parent(n) in se_reported:
                continue
            elif gm.in_features != rm.in_features and _leaf(n) == "fc5":
                yield _Finding(f"fc5 expects {gm.in_features} inputs, reference {rm.in_features // 64}*8*8 = "
                               f"{rm.in_features}",
                               "A 128x128 input leaves an 8x8 map after the stem's max-pool (64x64) and the three "
                               "stride-2 stages (32, 16, 8); 7x7 is the 112x112 convention of InsightFace.")
            elif (gm.in_features, gm.out_features) != (rm.in_features, rm.out_features):
                yield _Finding(f"{p.where(n)} is Linear({gm.in_features}, {gm.out_features}) but the reference has "
                               f"Linear({rm.in_features}, {rm.out_features})")
        elif isinstance(rm, _BatchNorm) and gm.num_features != rm.num_features:
            yield _Finding(f"{p.where(n)} normalises {gm.num_features} channels but the reference's normalises "
                           f"{rm.num_features} (batch norm in the wrong place, or sized for the wrong convolution?)",
                           "Each BatchNorm normalises the output of the convolution just before it.")
        elif isinstance(rm, nn.PReLU) and gm.num_parameters != rm.num_parameters:
            yield _Finding(f"{p.where(n)} has {gm.num_parameters} slopes but the reference uses nn.PReLU() with "
                           f"{rm.num_parameters} shared slope")


def _rule_conv_attrs(p: _Pair) -> Iterable[_Finding]:
    """Convolution bias, stride (including a stride on the wrong convolution), padding and the rest."""
    convs = [(n, rm, p.got_mods[n]) for n, rm in p.ref_mods.items()
             if isinstance(rm, nn.Conv2d) and isinstance(p.got_mods.get(n), nn.Conv2d)]
    biased = [n for n, rm, gm in convs if gm.bias is not None and rm.bias is None]
    if biased:
        names = ", ".join(p.where(n) for n in biased)
        yield _Finding(f"{names} {'has' if len(biased) == 1 else 'have'} a bias; the reference uses bias=False "
                       f"because BatchNorm follows",
                       "BatchNorm subtracts the mean and adds its own shift (beta), which makes a convolution bias "
                       "redundant: pass bias=False.")
    by_parent: Dict[str, List[Tuple[str, int, int]]] = {}
    for n, rm, gm in convs:
        if gm.stride != rm.stride:
            by_parent.setdefault(_parent(n), []).append((n, gm.stride[0], rm.stride[0]))
    for parent, wrong in by_parent.items():
        too_big = [n for n, g, r in wrong if g > r]
        too_small = [n for n, g, r in wrong if g < r]
        prefix = "wrong downsample: " if "downsample" in parent else ""
        if too_big and too_small:
            inside = f" (in {parent})" if parent else ""
            yield _Finding(f"the stride is on {_leaf(too_big[0])} but the reference puts it on {_leaf(too_small[0])}"
                           f"{inside}", p.spec.hints.get("stride", ""))
        else:
            for n, g, r in wrong:
                yield _Finding(f"{prefix}{p.where(n)}: stride is {g} but should be {r}", p.spec.hints.get("stride", ""))
    for n, rm, gm in convs:
        for attr in ("padding", "dilation", "groups", "padding_mode"):
            g, r = getattr(gm, attr), getattr(rm, attr)
            if g != r:
                hint = ("padding=1 keeps H and W at stride 1: H_out = (H + 2 * padding - 3) // stride + 1."
                        if attr == "padding" else "")
                yield _Finding(f"{p.where(n)}: {attr} is {_fmt(g)!s} but should be {_fmt(r)}", hint)
    for n, rm, gm in convs:
        if gm.bias is None and rm.bias is not None:
            yield _Finding(f"{p.where(n)} has no bias; the reference's does")


def _rule_other_attrs(p: _Pair) -> Iterable[_Finding]:
    """Linear bias, dropout probability, BatchNorm settings, pooling settings."""
    for n, rm in p.ref_mods.items():
        gm = p.got_mods.get(n)
        if gm is None or not isinstance(gm, type(rm)):
            continue
        if isinstance(rm, nn.Linear) and (gm.bias is None) != (rm.bias is None):
            has = "has a bias" if gm.bias is not None else "has no bias"
            yield _Finding(f"{p.where(n)} {has}; the reference's Linear uses bias={rm.bias is not None}")
        elif isinstance(rm, nn.Dropout) and gm.p != rm.p:
            yield _Finding(f"{p.where(n)} has p={gm.p} but the reference uses nn.Dropout() with p={rm.p}")
        elif isinstance(rm, _BatchNorm):
            for attr in ("eps", "momentum", "affine", "track_running_stats"):
                if getattr(gm, attr) != getattr(rm, attr):
                    yield _Finding(f"{p.where(n)}: {attr} is {getattr(gm, attr)} but the reference uses "
                                   f"{getattr(rm, attr)} (the default)")
        elif isinstance(rm, nn.MaxPool2d):
            for attr in ("kernel_size", "stride", "padding"):
                if _fmt(getattr(gm, attr)) != _fmt(getattr(rm, attr)):
                    yield _Finding(f"{p.where(n)}: {attr} is {_fmt(getattr(gm, attr))} but should be "
                                   f"{_fmt(getattr(rm, attr))}")
        elif isinstance(rm, nn.AdaptiveAvgPool2d) and _fmt(gm.output_size) != _fmt(rm.output_size):
            yield _Finding(f"{p.where(n)}: output_size is {gm.output_size} but the reference pools to 1x1")


def _rule_keys(p: _Pair) -> Iterable[_Finding]:
    """Whatever key or shape difference the specific rules did not explain."""
    ref_sd, got_sd = p.ref.state_dict(), p.got.state_dict()
    missing = [k for k in ref_sd if k not in got_sd]
    unexpected = [k for k in got_sd if k not in ref_sd]
    shapes = [f"{k}: yours {tuple(got_sd[k].shape)}, reference {tuple(ref_sd[k].shape)}"
              for k in ref_sd if k in got_sd and got_sd[k].shape != ref_sd[k].shape]
    parts = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("with other shapes", shapes)):
        if items:
            parts.append(f"{len(items)} {title} ({'; '.join(items[:4])}{' ...' if len(items) > 4 else ''})")
    if parts:
        yield _Finding("the state_dict differs from the reference's: " + ", ".join(parts) + " keys",
                       "Names and shapes must match exactly so that the pretrained checkpoint loads with strict=True.")


def _compare_structure(ctx: _Ctx, pair: _Pair) -> List[_Finding]:
    """Raise on the first hard structural difference; return soft findings (missing parameterless modules)."""
    soft: List[_Finding] = []
    findings: List[_Finding] = []
    for rule in (_rule_relu_for_prelu, _rule_extra_prelu, _rule_types, lambda q: _rule_missing(q, soft),
                 _rule_extra, _rule_shapes, _rule_conv_attrs, _rule_other_attrs):
        findings.extend(rule(pair))
    if not findings:
        findings.extend(_rule_keys(pair))
    if findings:
        first, rest = findings[0], findings[1:]
        details = [f"also: {f.problem}" for f in rest[:3]]
        if len(rest) > 3:
            details.append(f"... and {len(rest) - 3} more structural differences")
        got_count, ref_count = (sum(t.numel() for t in m.parameters()) for m in (pair.got, pair.ref))
        if got_count != ref_count:
            details.append(f"parameters: yours {got_count:,}, the reference's {ref_count:,}")
        ctx.fail(first.problem, first.hint, details)
    return soft


# ---------------------------------------------------------------------------------------------
# Behaviour: the same weights, the same input, eval and train mode, gradients
# ---------------------------------------------------------------------------------------------

@dataclass
class _Run:
    """What one forward (and, in train mode, backward) pass produced, recorded with hooks."""

    out: Any = None
    error: Optional[BaseException] = None
    stage: str = ""  # "forward" or "backward" when error is set
    calls: Dict[str, int] = field(default_factory=dict)  # submodule name -> times called
    outputs: Dict[str, torch.Tensor] = field(default_factory=dict)  # first output of each submodule
    order: List[str] = field(default_factory=list)  # submodules in the order their first call completed
    grads: Dict[str, Optional[torch.Tensor]] = field(default_factory=dict)
    buffers: Dict[str, torch.Tensor] = field(default_factory=dict)
    names: Tuple[str, ...] = ()  # every submodule of the module that ran, called or not


def _projection(shape: torch.Size) -> torch.Tensor:
    """The fixed random direction ``P`` whose loss ``(output * P).sum()`` both modules backpropagate."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(SEED + 3))


def _run(module: nn.Module, x: torch.Tensor, train: bool, grad: bool = False) -> _Run:
    """Run ``module`` forward on a copy of ``x`` in eval or train mode, recording what happens.

    The RNG is seeded just before the forward so that dropout draws the same
    mask in both modules. Forward hooks record how often each submodule runs
    and a copy of its first output (used to explain a difference). With
    ``grad``, the output keeps its autograd graph for :func:`_backward`.
    """
    record = _Run(names=tuple(n for n, _ in module.named_modules() if n))

    def hook_for(name: str) -> Callable:
        def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
            record.calls[name] = record.calls.get(name, 0) + 1
            if name not in record.outputs and isinstance(out, torch.Tensor):
                record.outputs[name] = out.detach().clone()  # clone: later in-place ops must not change it
                record.order.append(name)
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in module.named_modules() if n]
    module.train(train)
    try:
        record.stage = "forward"
        torch.manual_seed(SEED + 1)
        with torch.set_grad_enabled(grad):
            record.out = module(x.clone())
        record.stage = ""
    except Exception as exc:  # the learner's code may raise anything; it is reported, not re-raised
        record.error = exc
    finally:
        for h in handles:
            h.remove()
    record.buffers = {n: b.detach().clone() for n, b in module.named_buffers()}
    return record


def _backward(module: nn.Module, record: _Run) -> None:
    """Backpropagate ``(output * P).sum()`` for a fixed random ``P``; keep every parameter's gradient."""
    for prm in module.parameters():
        prm.grad = None
    try:
        record.stage = "backward"
        (record.out * _projection(record.out.shape)).sum().backward()
        record.grads = {n: (q.grad.detach() if q.grad is not None else None) for n, q in module.named_parameters()}
        record.stage = ""
    except Exception as exc:  # e.g. an in-place operation on a tensor autograd still needs
        record.error = exc


def _fail_on_error(ctx: _Ctx, got: _Run, ref: _Run, mode: str) -> None:
    """Turn an exception from the learner's forward or backward into a CheckFailed that summarises it."""
    exc = got.error
    if exc is None:
        return
    if isinstance(exc, NotImplementedError) and 'missing the required "forward"' in str(exc):
        ctx.fail(f"{ctx.label} has no forward method", "Define forward(self, x) in the class (check its indentation).")
    if isinstance(exc, NotImplementedError):
        ctx.fail(f"{ctx.label} is not implemented yet: its {got.stage} raised NotImplementedError",
                 "Replace `raise NotImplementedError` in the exercise cell with your code, run that cell, "
                 "then run this check again.")
    details = [f"raised in {mode} mode during the {got.stage} pass"]
    if got.order and got.stage == "forward":
        details.append(f"the last submodule that completed was {got.order[-1]}")
    skipped = [n for n in ref.calls if n in got.names and n not in got.calls and _leaf(n) == "downsample"]
    problem = f"your {got.stage} raised {_summarise(exc)}"
    hint = "Run your module by hand on a small input to see where it fails."
    if skipped:
        problem = (f"missing downsample: {skipped[0]} is never applied, and the {got.stage} raised "
                   f"{_summarise(exc)}")
        hint = "Apply the downsample to x (the block's input) to form the identity before the addition."
    elif got.stage == "backward":
        hint = ("An in-place operation modified a tensor autograd still needs (e.g. x += ... on the block's input, "
                "or an in-place activation on a tensor used again); use out = out + identity on a new tensor.")
    elif "size of tensor" in str(exc) or "shape" in str(exc) or "mat1" in str(exc):
        hint = ("A shape mismatch inside forward: print each step's shape and compare it with the chapter's "
                "walk-through of the reference (channels, then the stride's effect on H and W).")
    ctx.fail(problem, hint, details)


def _variant_match(ctx: _Ctx, ref: nn.Module, state: Dict[str, torch.Tensor], x: torch.Tensor, train: bool,
                   got_out: torch.Tensor) -> Optional[_Variant]:
    """The first known mistake whose output, computed on the reference's weights, equals the learner's."""
    for variant in ctx.spec.variants:
        if not variant.applies(ref) or (variant.train_only and not train):
            continue
        model = copy.deepcopy(ref)
        model.load_state_dict(state)
        model.train(train)
        torch.manual_seed(SEED + 1)
        try:
            with torch.no_grad():
                out = variant.forward(model, x.clone())
        except Exception:  # a variant that cannot run on this configuration simply does not match
            continue
        if _close(got_out, out):
            return variant
    return None


def _first_difference(got: _Run, ref: _Run) -> str:
    """Name the first submodule (in the reference's call order) whose output differs, in words."""
    for name in ref.order:
        if name in got.outputs and not _close(got.outputs[name], ref.outputs[name]):
            return f"the first submodule whose output differs is {name}"
    if all(n in got.calls for n in ref.calls):
        return ("every submodule's output matches the reference's, so the difference is in the arithmetic between "
                "them in forward (the residual addition, an activation, the order of operations)")
    return ""


def _diagnose(ctx: _Ctx, ref_module: nn.Module, state: Dict[str, torch.Tensor], x: torch.Tensor, train: bool,
              got: _Run, ref: _Run, soft: List[_Finding]) -> NoReturn:
    """Explain why the learner's output differs from the reference's, as precisely as the evidence allows."""
    mode = "train" if train else "eval"
    diff = _max_diff(got.out, ref.out)
    details = [f"the {mode}-mode output differs: max abs diff {diff:.3g} (reference values up to "
               f"{_scale(ref.out):.3g})"]
    if not train:
        details[0] += "; structure and weights match"
    never = [n for n in ref.calls if n not in got.calls and n in got.names]
    counts = [f"{n} is called {got.calls[n]} time(s) in your forward, {ref.calls[n]} in the reference's"
              for n in ref.calls if n in got.calls and got.calls[n] != ref.calls[n]]
    details += counts[:3]
    first = _first_difference(got, ref)
    if first:
        details.append(first)
    variant = _variant_match(ctx, ref_module, state, x, train, got.out)
    if variant is not None:
        ctx.fail(variant.message, "", details)
    if never:
        role = ctx.spec.hints.get(_leaf(never[0]), "")
        ctx.fail(f"{never[0]} is defined but never called in forward" + (f" ({role})" if role else ""), "", details)
    if soft:
        ctx.fail(soft[0].problem, soft[0].hint, details)
    hint = f"Likely causes in {ctx.spec.kind}: " + "; ".join(ctx.spec.causes) + "." if ctx.spec.causes else ""
    ctx.fail(f"the {mode}-mode output differs from the reference's although the structure matches", hint, details)


def _compare_behaviour(ctx: _Ctx, ref: nn.Module, got: nn.Module, soft: List[_Finding]) -> None:
    """Copy the reference's (randomised) weights into the learner's module and compare what they compute.

    Eval mode first, then (unless the case is eval-only) train mode, with the
    gradients of every parameter when the case asks for them.
    """
    state = _randomise(ref)
    try:
        got.load_state_dict(state, strict=True)
    except Exception as exc:
        ctx.fail(f"the reference's weights do not load into yours: {_summarise(exc)}")
    x = ctx.case.make_input()
    for train in ((False, True) if ctx.case.train else (False,)):
        mode = "train" if train else "eval"
        xm = x if train or ctx.case.eval_batch is None else x[:ctx.case.eval_batch]
        grad = train and ctx.case.grads
        ref_run = _run(ref, xm, train, grad)
        if ref_run.error is not None:  # pragma: no cover - the reference always runs
            raise ref_run.error
        got_run = _run(got, xm, train, grad)
        _fail_on_error(ctx, got_run, ref_run, mode)
        _check_output_shape(ctx, got_run.out, ref_run.out, soft)
        if not _close(got_run.out, ref_run.out):
            _diagnose(ctx, ref, state, xm, train, got_run, ref_run, soft)
        if train:
            _compare_buffers(ctx, got_run, ref_run)
        if grad:  # only now, so that a wrong output is reported without paying for a backward pass
            _backward(ref, ref_run)
            _backward(got, got_run)
            _fail_on_error(ctx, got_run, ref_run, mode)
            _compare_grads(ctx, got_run, ref_run)


def _check_output_shape(ctx: _Ctx, got_out: Any, ref_out: torch.Tensor, soft: List[_Finding]) -> None:
    """Fail when forward returns something other than a tensor of the reference's shape."""
    if not isinstance(got_out, torch.Tensor):
        ctx.fail(f"forward returned {type(got_out).__name__}, not a tensor",
                 "End forward with `return out` (a single tensor).")
    if got_out.shape == ref_out.shape:
        return
    hint = ctx.spec.shape_hint(tuple(got_out.shape), tuple(ref_out.shape)) if ctx.spec.shape_hint else ""
    details = [f"possibly related: {f.problem}" for f in soft[:1]]
    ctx.fail(f"the output has shape {tuple(got_out.shape)} but the reference's has {tuple(ref_out.shape)}",
             hint, details)


def _compare_grads(ctx: _Ctx, got: _Run, ref: _Run) -> None:
    """Fail on the first parameter whose gradient is missing or differs (outputs already match)."""
    for name, ref_grad in ref.grads.items():
        if ref_grad is None:
            continue
        got_grad = got.grads.get(name)
        if got_grad is None:
            ctx.fail(f"no gradient reaches {name} although the outputs match",
                     "Is part of forward detached (.detach(), .data, torch.no_grad()) or computed outside autograd?")
        if not _close(got_grad, ref_grad, GRAD_RTOL):
            ctx.fail(f"the gradient of {name} differs from the reference's although the outputs match "
                     f"(max abs diff {_max_diff(got_grad, ref_grad):.3g})",
                     "Is part of forward detached (.detach(), .data) or does an in-place operation change a "
                     "tensor autograd still needs?")


def _compare_buffers(ctx: _Ctx, got: _Run, ref: _Run) -> None:
    """Fail when BatchNorm running statistics differ after the same train-mode forward."""
    for name, ref_buf in ref.buffers.items():
        got_buf = got.buffers.get(name)
        if got_buf is None or not ref_buf.is_floating_point():
            continue
        if not _close(got_buf, ref_buf):
            ctx.fail(f"{name} differs after one train-mode forward (max abs diff {_max_diff(got_buf, ref_buf):.3g})",
                     "BatchNorm updates its running statistics from what it normalises in train mode; is it applied "
                     "to the same tensor, once, with the default momentum?")


# ---------------------------------------------------------------------------------------------
# Initialisation (the whole network)
# ---------------------------------------------------------------------------------------------

def _excess_kurtosis(w: torch.Tensor) -> float:
    """Excess kurtosis of (a sample of) ``w``: 0 for a normal distribution, -1.2 for a uniform one."""
    w = w.detach().flatten()[:65536].double()  # a sample is plenty to tell normal (0) from uniform (-1.2)
    z = (w - w.mean()) / w.std()
    return (z.pow(4).mean() - 3.0).item()


def _check_init(ctx: _Ctx, model: nn.Module) -> None:
    """Compare a fresh model's parameter statistics with the reference's initialisation.

    Xavier-normal gives std ``sqrt(2 / (fan_in + fan_out))``; PyTorch's default
    (``kaiming_uniform_`` with ``a = sqrt(5)``) gives ``1 / sqrt(3 * fan_in)``, which is
    noticeably different for every layer of this network.
    """
    problems: List[str] = []
    weights = kaiming = uniform = 0
    for n, m in model.named_modules():
        if isinstance(m, _BatchNorm) and m.affine:
            if not (torch.all(m.weight == 1) and torch.all(m.bias == 0)):
                problems.append(f"{n}: BatchNorm weight should be 1 and bias 0")
        elif isinstance(m, nn.PReLU):
            if not torch.allclose(m.weight, torch.full_like(m.weight, 0.25)):
                problems.append(f"{n}.weight is {m.weight.flatten()[0].item():.3g}, PReLU keeps its default 0.25")
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach()
            receptive = w[0][0].numel()
            fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
            xavier, default = math.sqrt(2.0 / (fan_in + fan_out)), 1.0 / math.sqrt(3.0 * fan_in)
            std, tol = w.std().item(), 0.1 + 4.0 / math.sqrt(2.0 * w.numel())
            weights += 1
            if abs(std / xavier - 1) > tol:
                problems.append(f"{n}.weight std {std:.3g}, xavier_normal_ gives {xavier:.3g}")
                kaiming += abs(std / default - 1) <= tol
            elif w.numel() >= 4096 and _excess_kurtosis(w) < -0.6:
                uniform += 1
                problems.append(f"{n}.weight has the right std but looks uniform, not normal")
            if isinstance(m, nn.Linear) and m.bias is not None and not torch.all(m.bias == 0):
                problems.append(f"{n}.bias is not 0")
    if not problems:
        return
    notes = []
    if kaiming:
        notes.append(f"{kaiming} of {weights} conv/linear weights have the std of PyTorch's default init "
                     f"(kaiming_uniform_ with a=sqrt(5)): does your init loop run at the end of __init__?")
    if uniform:
        notes.append(f"{uniform} weights look uniformly distributed: xavier_uniform_ instead of xavier_normal_?")
    ctx.fail(f"initialisation differs: {len(problems)} problem(s), e.g. {problems[0]}",
             "At the end of __init__: for m in self.modules(): Conv2d and Linear -> nn.init.xavier_normal_(m.weight); "
             "Linear bias -> 0; BatchNorm weight 1 and bias 0; PReLU keeps its default 0.25.",
             notes + problems[1:4])


# ---------------------------------------------------------------------------------------------
# The engine every check shares
# ---------------------------------------------------------------------------------------------

def _label(obj: Any) -> str:
    """The learner's object's name, e.g. ``MyIRBlock``."""
    return getattr(obj, "__name__", type(obj).__name__)


def _validate(spec: _Spec, obj: Any, want_class: bool) -> None:
    """Reject objects that cannot be the exercise's answer, before building anything."""
    label = _label(obj)
    dummy = _Case(f"{label}", lambda: nn.Identity(), lambda: None, lambda: torch.zeros(0))
    ctx = _Ctx(spec, dummy, label)
    if obj is None:
        ctx.fail("got None instead of your implementation", "Run the exercise cell that defines it, then the check.")
    if not want_class:
        if not callable(obj):
            ctx.fail(f"expected a function {spec.signature}, got a {type(obj).__name__}")
        return
    if isinstance(obj, nn.Module):
        ctx.fail(f"got an instance of {type(obj).__name__}; pass the class itself",
                 f"Call {spec.check}({type(obj).__name__}), not {spec.check}({type(obj).__name__}(...)).")
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        ctx.fail(f"expected a subclass of nn.Module with constructor {spec.signature}, got {obj!r}")


def _construct(ctx: _Ctx) -> nn.Module:
    """Build the learner's module for this case, turning any error into a friendly CheckFailed."""
    torch.manual_seed(SEED)
    try:
        got = ctx.case.build_got()
    except NotImplementedError:
        ctx.fail(f"{ctx.label} is not implemented yet: calling {ctx.case.config} raised NotImplementedError",
                 "Replace `raise NotImplementedError` in the exercise cell with your code, run that cell, "
                 "then run this check again.")
    except Exception as exc:
        hint = ("Call super().__init__() first in __init__, before creating any layer."
                if "Module.__init__() call" in str(exc) else f"It must accept {ctx.spec.signature}.")
        ctx.fail(f"calling {ctx.case.config} raised {_summarise(exc)}", hint)
    if got is None:
        ctx.fail(f"{ctx.case.config} returned None", "Did you forget `return`?")
    if not isinstance(got, nn.Module):
        ctx.fail(f"{ctx.case.config} returned a {type(got).__name__}, not an nn.Module")
    return got


def _run_check(spec: _Spec, obj: Any, cases: Sequence[_Case], want_class: bool = True) -> None:
    """Compare ``obj`` with the reference on every case; raise CheckFailed on the first difference.

    The caller's random-number state is left untouched.
    """
    _validate(spec, obj, want_class)
    label = _label(obj)
    with torch.random.fork_rng(devices=[]):
        for case in cases:
            ctx = _Ctx(spec, case, label)
            torch.manual_seed(SEED)
            ref = case.build_ref()
            got = _construct(ctx)
            try:
                pair = _Pair(ref, got, spec, case, spec.root_label or label)
                soft = _compare_structure(ctx, pair)
                if spec.check_init:
                    _check_init(ctx, got)
            except CheckFailed:
                raise
            except Exception as exc:  # an unusual module the rules cannot inspect: still a friendly message
                ctx.fail(f"could not inspect your module's structure: {_summarise(exc)}",
                         "Build it from standard torch.nn modules registered as attributes, as the reference does.")
            _compare_behaviour(ctx, ref, got, soft)
    print(f"{spec.check}: all {len(cases)} configurations match the reference ({spec.what}) {_tick()}")


def _call_text(label: str, args: Sequence[Any], kwargs: Dict[str, Any], names: Dict[int, str]) -> str:
    """``MyIRBlock(32, 64, 2, downsample, use_se=True)``; ``names`` replaces some positional values by words."""
    parts = [names.get(i, repr(a)) for i, a in enumerate(args)] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{label}({', '.join(parts)})"


def _input(*shape: int) -> Callable[[], torch.Tensor]:
    """A factory of the same standard-normal input of ``shape`` every time it is called."""
    return lambda: torch.randn(*shape, generator=torch.Generator().manual_seed(SEED + 4))


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
