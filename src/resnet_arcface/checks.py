"""Self-checks for the book's "implement it yourself" exercises: ``check_ir_block(MyIRBlock)`` and the like.

A check compares the learner's component with the package's own (the single source of truth) under a few
configurations (:class:`Case`): for a module, its structure (submodule names, which are the state_dict keys a
checkpoint needs; types; channels; settings such as bias, stride, padding, eps, p), a fresh network's
initialisation, and then, on the reference's weights (BatchNorm statistics and PReLU slopes randomised so that
their mistakes show), outputs in eval and train mode, every parameter's gradient and the BatchNorm running
statistics; for a function, its outputs and the gradients of its arguments. Tensors are compared with
:func:`torch.testing.assert_close`. When an output differs, the component's known mistakes (:class:`Mistake`)
are reproduced on the reference to name the one that matches. Last, the learner's object must not be, subclass
or call the package's answer. Any difference raises :class:`CheckFailed` (configuration, problem, evidence,
hint); success prints one line. Wording lives in each :class:`Exercise`'s table of hints.
"""
from __future__ import annotations

import copy
import inspect
import math
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, NoReturn, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .blocks import BasicBlock, Bottleneck, IRBlock
from .checkpoint import describe_mismatch
from .conv import conv3x3
from .data import preprocess
from .inference import fold_conv_bn
from .losses import arcface_logits, cosface_logits, identity_loss
from .model import ResNetArcFace
from .se import SEBlock
from .verify import roc, tar_at_far

__all__ = ["CheckFailed", "Case", "Mistake", "Exercise", "run_check", "run_function_check", "check_conv3x3",
           "check_basic_block", "check_bottleneck", "check_se_block", "check_ir_block", "check_resnet_arcface",
           "check_arcface_logits", "check_tar_at_far", "check_identity_loss", "check_fold_conv_bn", "EXERCISES"]

SEED = 0
#: Outputs must agree to ``rtol`` elementwise and ``atol * max|reference|``; gradients to ``GRAD_RTOL``.
RTOL, ATOL, GRAD_RTOL = 1e-4, 1e-5, 1e-3


class CheckFailed(AssertionError):
    """A self-check found a difference between the learner's component and the reference.

    The message is self-contained: the check, the configuration, the problem, evidence and a hint.

    Attributes:
        check: The check's name, e.g. ``"check_ir_block"``.
        config: How the learner's object was called, e.g. ``"MyIRBlock(32, 64, 2, downsample)"``.
        problem: What differs, in one sentence.
        details: Further evidence (max abs differences, call counts, ...).
        hint: What to do about it.
    """

    def __init__(self, check: str, config: str, problem: str, hint: str = "", details: Sequence[str] = ()) -> None:
        self.check, self.config, self.problem, self.hint, self.details = check, config, problem, hint, tuple(details)
        lines = [f"{check} failed for {config}", f"  Problem: {problem}", *(f"  - {d}" for d in self.details)]
        super().__init__("\n".join(lines + ([f"  Hint: {hint}"] if hint else [])))


@dataclass(frozen=True)
class Mistake:
    """A known mistake, reproduced on the reference's own parts to name it when the learner's output matches.

    Attributes:
        message: The diagnosis shown when the learner's output equals this one's.
        forward: ``forward(reference_module, x)`` (modules) or ``forward(*arguments)`` (functions).
        applies: Whether the mistake changes anything for this reference module.
        train_only: The mistake changes nothing in eval mode (e.g. where dropout sits).
    """

    message: str
    forward: Callable[..., Any]
    applies: Callable[[Any], bool] = lambda m: True
    train_only: bool = False


@dataclass
class Case:
    """One configuration: how to build the reference and the learner's version, and the input.

    For a function check ``build_ref``/``build_got`` are unused and ``make_input`` returns the argument tuple.
    """

    config: str  # shown in messages: how the learner's object was called
    build_ref: Callable[[], Any]
    build_got: Callable[[], Any]
    make_input: Callable[[], Any]
    train: bool = True  # also compare train mode (modules)
    grads: bool = True  # and, in train mode, the gradients
    eval_batch: Optional[int] = None  # compare eval mode on the first samples only (saves time)
    finite_only: bool = False  # a function's edge case: outputs and gradients need only be finite


@dataclass
class Exercise:
    """What one check compares: the reference, the signature, the typical mistakes and the hints."""

    check: str  # e.g. "check_ir_block"
    reference: Any  # the package's class or function: the answer, which the learner may not reuse
    signature: str
    mistakes: Tuple[Mistake, ...] = ()
    causes: Tuple[str, ...] = ()  # likely causes when no known mistake matches
    hints: Dict[str, str] = field(default_factory=dict)  # by submodule ("bn0", "IRBlock.conv1") or topic
    shape_hint: Callable[[Tuple[int, ...], Tuple[int, ...]], str] = lambda got, ref: ""
    after: Callable[[Tuple, Tuple], str] = lambda args, ref_args: ""  # a function's effect on its arguments
    root: str = ""  # how messages call the learner's whole module ("" -> its name)
    check_init: bool = False
    what: str = "structure, eval/train outputs and gradients"

    @property
    def kind(self) -> str:
        return self.reference.__name__


class _Ctx:
    """The exercise and configuration under test, to raise :class:`CheckFailed` with."""

    def __init__(self, ex: Exercise, config: str, label: str) -> None:
        self.ex, self.config, self.label = ex, config, label

    def fail(self, problem: str, hint: str = "", details: Sequence[str] = ()) -> NoReturn:
        raise CheckFailed(self.ex.check, self.config, problem, hint, details) from None


# --- Helpers -------------------------------------------------------------------------------------------------------

def _summarise(exc: BaseException) -> str:
    """``'RuntimeError: first line of the message'``, shortened."""
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _difference(got: Any, ref: torch.Tensor, rtol: float = RTOL) -> str:
    """'' when ``got`` is close to ``ref`` (:func:`torch.testing.assert_close`), else the evidence in one line."""
    if not isinstance(got, torch.Tensor) or got.shape != ref.shape:
        return f"shape {tuple(getattr(got, 'shape', ()))} instead of {tuple(ref.shape)}"
    scale = ref.detach().abs().max().item() if ref.numel() else 0.0
    try:
        torch.testing.assert_close(got.detach(), ref.detach(), rtol=rtol, atol=ATOL * max(scale, 1.0),
                                   check_dtype=False, check_device=False)
        return ""
    except AssertionError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.startswith(("Mismatched", "Greatest absolute",
                                                                              "Expected", "Absolute difference"))]
        return "; ".join(lines) + f" (reference values up to {scale:.3g})"


def _tick() -> str:
    try:
        "\u2713".encode(sys.stdout.encoding or "ascii")
        return "\u2713"
    except (UnicodeEncodeError, LookupError):
        return "OK"


def _label(obj: Any) -> str:
    return getattr(obj, "__name__", type(obj).__name__)


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def _leaf(name: str) -> str:
    return name.rpartition(".")[2]


def _fmt(v: Any) -> str:
    return str(v[0]) if isinstance(v, tuple) and v and all(x == v[0] for x in v) else str(v)


def _describe(m: nn.Module) -> str:
    """``Conv2d(16, 32, 1x1, stride=2, padding=0, bias=False)``, ``BatchNorm1d(512)``, ``Dropout(p=0.5)``..."""
    if isinstance(m, nn.Sequential):
        return "Sequential(" + ", ".join(_describe(c) for c in m) + ")"
    if isinstance(m, nn.Conv2d):
        return (f"Conv2d({m.in_channels}, {m.out_channels}, {'x'.join(map(str, m.kernel_size))}, "
                f"stride={_fmt(m.stride)}, padding={_fmt(m.padding)}, bias={m.bias is not None})")
    if isinstance(m, nn.Linear):
        return f"Linear({m.in_features}, {m.out_features})"
    if isinstance(m, _BatchNorm):
        return f"{type(m).__name__}({m.num_features})"
    names = {nn.PReLU: "nn.PReLU()", nn.Dropout: f"nn.Dropout() (p={getattr(m, 'p', '')})"}
    return names.get(type(m), type(m).__name__)


def _input(*shape: int) -> Callable[[], torch.Tensor]:
    """A factory of the same standard-normal input of ``shape`` every time it is called."""
    return lambda: torch.randn(*shape, generator=torch.Generator().manual_seed(SEED + 4))


def _call_text(label: str, args: Sequence[Any], kwargs: Dict[str, Any], names: Dict[int, str] = {}) -> str:
    """``MyIRBlock(32, 64, 2, downsample, use_se=True)``; ``names`` replaces some positional values by words."""
    parts = [names.get(i, repr(a)) for i, a in enumerate(args)] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{label}({', '.join(parts)})"


NOT_IMPLEMENTED = ("Replace `raise NotImplementedError` in the exercise cell with your code, run that cell, then "
                   "run this check again.")


# --- Structure: names, types, channels and settings ----------------------------------------------------------------

_RELU_LIKE = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.ELU, nn.GELU, nn.SiLU)
#: The settings compared per layer type; any difference reads "{name}: {setting} is {yours} but should be {ref}".
_SETTINGS = {nn.Conv2d: ("kernel_size", "padding", "dilation", "groups", "padding_mode"), nn.Dropout: ("p",),
             _BatchNorm: ("eps", "momentum", "affine", "track_running_stats"),
             nn.MaxPool2d: ("kernel_size", "stride", "padding"), nn.AdaptiveAvgPool2d: ("output_size",)}
_PRELU_HINT = ("PReLU learns its negative slope (one value, initialised to 0.25) instead of zeroing negatives; its "
               "weight is the state_dict key {n}.weight that the pretrained checkpoint needs.")
_BIAS = ("{names} {have} a bias; the reference uses bias=False because BatchNorm follows",
         "BatchNorm subtracts the mean and adds its own shift (beta), which makes a convolution bias redundant.")


def _structure(ctx: _Ctx, ref: nn.Module, got: nn.Module) -> List[Tuple[str, str]]:
    """Raise on the first hard structural difference; return the soft ones (parameterless modules missing)."""
    R, G = dict(ref.named_modules(remove_duplicate=False)), dict(got.named_modules(remove_duplicate=False))
    hints, where = ctx.ex.hints, (lambda n: n or ctx.ex.root or ctx.label)
    hard: List[Tuple[str, str]] = []
    soft: List[Tuple[str, str]] = []
    biased: List[str] = []
    strides: Dict[str, List[Tuple[str, int, int]]] = {}

    def role(n: str) -> str:
        parent = R.get(_parent(n)) if n else None
        text = hints.get(f"{type(parent).__name__}.{_leaf(n)}", hints.get(_leaf(n), ""))
        return f" ({text})" if text else ""

    def siblings(n: str, kinds: Any) -> List[str]:
        return [g for g, m in G.items() if g and _parent(g) == _parent(n) and isinstance(m, kinds)]

    for n, rm in R.items():
        gm, parent = G.get(n), _parent(n)
        if isinstance(rm, nn.PReLU) and not isinstance(gm, nn.PReLU) and (
                isinstance(gm, _RELU_LIKE) or (gm is None and siblings(n, _RELU_LIKE))):
            kind = type(gm if gm is not None else G[siblings(n, _RELU_LIKE)[0]]).__name__
            hard.append((f"{kind} where the reference uses PReLU: {where(parent)} has {kind} "
                         f"({n if gm is not None else ', '.join(siblings(n, _RELU_LIKE))}) but the reference has "
                         f"nn.PReLU() named {n}", _PRELU_HINT.format(n=n)))
        elif gm is None:
            if parent not in G:
                continue  # the parent is missing: reported there
            renamed = [e for e in siblings(n, type(rm)) if e not in R]
            rename = f" You have {renamed[0]}: if that is it, rename it to {_leaf(n)} (names are state_dict keys)." \
                if renamed else ""
            if not rm.state_dict():
                soft.append((f"{n} missing: the reference has {_describe(rm)} named {n}{role(n)}", rename.strip()))
            elif _leaf(n) == "downsample":
                hard.append((f"missing downsample: {where(parent)} has no submodule named downsample, but the "
                             f"reference has {n} = {_describe(rm)}", hints.get("downsample", "") + rename))
            elif _leaf(parent) == "downsample":
                kind = "no BatchNorm2d" if isinstance(rm, _BatchNorm) else f"no {_describe(rm)}"
                hard.append((f"wrong downsample: {parent} has {kind} ({n}); the reference's downsample is "
                             f"{_describe(R[parent])}", "The shortcut must match the branch's shape AND its "
                             "normalisation: a 1x1 convolution with the stage's stride and no bias, then BatchNorm2d."))
            elif isinstance(rm, SEBlock):
                hard.append((f"use_se=True but {where(parent)} has no SE gate named se", "Build self.se = "
                             "SEBlock(planes) when use_se is True and gate the branch with it after bn2." + rename))
            else:
                hard.append((f"{n} missing: the reference has {_describe(rm)} named {n}{role(n)}", rename.strip()))
        elif not isinstance(gm, type(rm)):
            if type(rm).__module__.startswith("torch.nn") and not isinstance(rm, (nn.Sequential, nn.ModuleList)):
                hint = "Return the nn.Conv2d itself." if not n and isinstance(rm, nn.Conv2d) else ""
                hard.append((f"{where(n)} is {type(gm).__name__} where the reference uses {_describe(rm)}", hint))
        elif isinstance(rm, nn.Conv2d):
            if (gm.in_channels, gm.out_channels) != (rm.in_channels, rm.out_channels):
                hard.append((f"{where(n)} maps {gm.in_channels} -> {gm.out_channels} channels but the reference's "
                             f"maps {rm.in_channels} -> {rm.out_channels}{role(n)}", ""))
            if gm.stride != rm.stride:
                strides.setdefault(parent, []).append((n, gm.stride[0], rm.stride[0]))
            if gm.bias is not None and rm.bias is None:
                biased.append(where(n))
        elif isinstance(rm, nn.Linear):
            grand = R.get(_parent(parent))
            if isinstance(grand, SEBlock) and n.endswith("fc.0") and gm.out_features != rm.out_features:
                reduction = rm.in_features // rm.out_features
                hard.append((f"{_parent(parent) + ': ' if _parent(parent) else ''}SE bottleneck width is "
                             f"{gm.out_features}, expected channel // reduction = {rm.in_features} // {reduction} = "
                             f"{rm.out_features}", "The excitation MLP squeezes channel -> channel // reduction -> "
                             "channel; use the reduction argument (default 16) with integer division."))
            elif isinstance(grand, SEBlock) and any(p.startswith("SE bottleneck") or ": SE" in p for p, _ in hard):
                continue
            elif _leaf(n) == "fc5" and gm.in_features != rm.in_features:
                hard.append((f"fc5 expects {gm.in_features} inputs, reference {rm.in_features // 64}*8*8 = "
                             f"{rm.in_features}", hints.get("fc5", "")))
            elif (gm.in_features, gm.out_features, gm.bias is None) != (rm.in_features, rm.out_features,
                                                                         rm.bias is None):
                hard.append((f"{where(n)} is {_describe(gm)} (bias={gm.bias is not None}) but the reference has "
                             f"{_describe(rm)} (bias={rm.bias is not None})", ""))
        elif isinstance(rm, _BatchNorm) and gm.num_features != rm.num_features:
            hard.append((f"{where(n)} normalises {gm.num_features} channels but the reference's normalises "
                         f"{rm.num_features} (batch norm in the wrong place, or sized for the wrong convolution?)",
                         "Each BatchNorm normalises the output of the convolution just before it."))
        elif isinstance(rm, nn.PReLU) and gm.num_parameters != rm.num_parameters:
            hard.append((f"{where(n)} has {gm.num_parameters} slopes but the reference uses nn.PReLU() with one", ""))
        for kind, names in _SETTINGS.items():
            if isinstance(rm, kind) and isinstance(gm, kind):
                for s in names:
                    if _fmt(getattr(gm, s)) != _fmt(getattr(rm, s)):
                        hint = "padding=1 keeps H and W at stride 1: H_out = (H + 2 * padding - 3) // stride + 1." \
                            if s == "padding" and kind is nn.Conv2d else hints.get(_leaf(n), "")
                        hard.append((f"{where(n)}: {s} is {_fmt(getattr(gm, s))} but should be "
                                     f"{_fmt(getattr(rm, s))}", hint))
    if biased:
        hard.insert(0, (_BIAS[0].format(names=", ".join(biased), have="has" if len(biased) == 1 else "have"), _BIAS[1]))
    for parent, wrong in strides.items():
        big, small = [n for n, g, r in wrong if g > r], [n for n, g, r in wrong if g < r]
        if big and small:
            hard.append((f"the stride is on {_leaf(big[0])} but the reference puts it on {_leaf(small[0])}"
                         + (f" (in {parent})" if parent else ""), hints.get("stride", "")))
        else:
            hard += [(f"{'wrong downsample: ' if 'downsample' in parent else ''}{where(n)}: stride is {g} but "
                      f"should be {r}", hints.get("stride", "")) for n, g, r in wrong]
    for n, gm in G.items():  # extra submodules with parameters
        if not n or n in R or _parent(n) not in R or not gm.state_dict():
            continue
        prelus = [r for r in R if r and _parent(r) == _parent(n) and isinstance(R[r], nn.PReLU)]
        if isinstance(gm, nn.PReLU) and prelus:
            mine = [_leaf(g) for g in siblings(n, nn.PReLU)]
            twice = (" applied both inside the branch and after the addition"
                     if isinstance(R.get(_parent(n)), IRBlock) else "")
            hard.append((f"{where(_parent(n))} has {({2: 'two', 3: 'three'}).get(len(mine), len(mine))} PReLU modules"
                         f" ({', '.join(mine)}) but the reference shares ONE {_leaf(prelus[0])},{twice}",
                         f"Create one self.{_leaf(prelus[0])} = nn.PReLU() and call it twice: both uses share one "
                         f"learned slope, and the pretrained checkpoint holds a single {prelus[0]}.weight."))
        elif _leaf(n) == "se":
            hard.append((f"use_se=False but {where(_parent(n))} has an SE gate (se.*)", "Create self.se only when "
                         "use_se is True: the use_se=False checkpoint (GFPGAN's) has no se keys."))
        else:
            hard.append((f"unexpected submodule {n} ({_describe(gm)}): the reference has no such module, so the "
                         "state_dict keys differ and the pretrained checkpoint would not load", ""))
    if not hard and describe_mismatch(got, ref.state_dict()):
        hard.append(("the reference's weights, as a checkpoint, do not fit your module: "
                     + describe_mismatch(got, ref.state_dict()).replace("\n", " "),
                     "Names and shapes must match exactly so that the pretrained checkpoint loads with strict=True."))
    if hard:
        counts = [sum(p.numel() for p in m.parameters()) for m in (got, ref)]
        details = [f"also: {p}" for p, _ in hard[1:4]]
        details += [f"parameters: yours {counts[0]:,}, the reference's {counts[1]:,}"] if counts[0] != counts[1] else []
        ctx.fail(hard[0][0], hard[0][1], details)
    return soft


# --- Behaviour: the same weights, the same input, eval and train mode, gradients -----------------------------------

def _randomise(module: nn.Module) -> Dict[str, torch.Tensor]:
    """Random BatchNorm statistics and affines, PReLU slopes and Linear biases (a fresh BatchNorm is the identity
    in eval mode, so a missing one would go unnoticed); returns a copy of the state_dict."""
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, _BatchNorm):
                m.weight.uniform_(0.5, 1.5, generator=g), m.bias.normal_(0.0, 0.2, generator=g)
                m.running_mean.normal_(0.0, 0.2, generator=g), m.running_var.uniform_(0.5, 2.0, generator=g)
            elif isinstance(m, nn.PReLU):
                m.weight.uniform_(0.05, 0.5, generator=g)
            elif isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.normal_(0.0, 0.1, generator=g)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@dataclass
class _Run:
    """What one forward (and backward) pass did, recorded with forward hooks."""

    out: Any = None
    error: Optional[BaseException] = None
    stage: str = ""
    calls: Dict[str, int] = field(default_factory=dict)  # submodule -> times called
    outputs: Dict[str, torch.Tensor] = field(default_factory=dict)  # first output of each submodule, in call order
    grads: Dict[str, Optional[torch.Tensor]] = field(default_factory=dict)


def _run(module: nn.Module, x: torch.Tensor, train: bool, grad: bool) -> _Run:
    """Forward a copy of ``x`` (the RNG seeded, so both modules draw the same dropout mask); with ``grad``,
    backpropagate ``(output * P).sum()`` for a fixed random ``P`` and keep each parameter's gradient."""
    rec = _Run()

    def hook(name: str) -> Callable:
        def record(_m: nn.Module, _i: Any, out: Any) -> None:
            rec.calls[name] = rec.calls.get(name, 0) + 1
            if name not in rec.outputs and isinstance(out, torch.Tensor):
                rec.outputs[name] = out.detach().clone()
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in module.named_modules() if n]
    module.train(train)
    try:
        rec.stage = "forward"
        torch.manual_seed(SEED + 1)
        with torch.set_grad_enabled(grad):
            rec.out = module(x.clone())
        if grad and isinstance(rec.out, torch.Tensor):
            rec.stage = "backward"
            module.zero_grad(set_to_none=True)
            proj = torch.randn(rec.out.shape, generator=torch.Generator().manual_seed(SEED + 3))
            (rec.out * proj).sum().backward()
            rec.grads = {n: p.grad for n, p in module.named_parameters()}
        rec.stage = ""
    except Exception as exc:  # the learner's code may raise anything; it is reported, not re-raised
        rec.error = exc
    finally:
        for h in handles:
            h.remove()
    return rec


def _fail_on_error(ctx: _Ctx, got: _Run, ref: _Run, names: Sequence[str], mode: str) -> None:
    """Turn an exception from the learner's forward or backward into a CheckFailed that summarises it."""
    exc = got.error
    if exc is None:
        return
    if isinstance(exc, NotImplementedError) and 'missing the required "forward"' in str(exc):
        ctx.fail(f"{ctx.label} has no forward method", "Define forward(self, x) in the class (check its indentation).")
    if isinstance(exc, NotImplementedError):
        ctx.fail(f"{ctx.label} is not implemented yet: its {got.stage} raised NotImplementedError", NOT_IMPLEMENTED)
    details = [f"raised in {mode} mode during the {got.stage} pass"]
    details += [f"the last submodule that completed was {list(got.outputs)[-1]}"] if got.outputs else []
    skipped = [n for n in ref.calls if n in names and n not in got.calls and _leaf(n) == "downsample"]
    if skipped:
        ctx.fail(f"missing downsample: {skipped[0]} is never applied, and the {got.stage} raised {_summarise(exc)}",
                 "Apply the downsample to x (the block's input) to form the identity before the addition.", details)
    hint = ("An in-place operation modified a tensor autograd still needs (e.g. x += ... on the block's input); use "
            "out = out + identity." if got.stage == "backward" else "A shape mismatch inside forward? Print each "
            "step's shape and compare it with the chapter's walk-through of the reference.")
    ctx.fail(f"your {got.stage} raised {_summarise(exc)}", hint, details)


def _diagnose(ctx: _Ctx, ref_module: nn.Module, state: Dict[str, torch.Tensor], x: torch.Tensor, train: bool,
              got: _Run, ref: _Run, names: Sequence[str], soft: List[Tuple[str, str]], diff: str) -> NoReturn:
    """Explain why the learner's output differs, as precisely as the evidence allows."""
    mode = "train" if train else "eval"
    details = [f"the {mode}-mode output differs: {diff}" + ("" if train else "; structure and weights match")]
    details += [f"{n} is called {got.calls[n]} time(s) in your forward, {c} in the reference's"
                for n, c in ref.calls.items() if n in got.calls and got.calls[n] != c][:3]
    first = next((n for n in ref.outputs if n in got.outputs and _difference(got.outputs[n], ref.outputs[n])), None)
    if first:
        details.append(f"the first submodule whose output differs is {first}")
    elif all(n in got.calls for n in ref.calls):
        details.append("every submodule's output matches the reference's, so the difference is in the arithmetic "
                       "between them in forward (the residual addition, an activation, the order of operations)")
    for mistake in ctx.ex.mistakes:
        if mistake.applies(ref_module) and (train or not mistake.train_only):
            model = copy.deepcopy(ref_module)
            model.load_state_dict(state)
            model.train(train)
            torch.manual_seed(SEED + 1)
            try:
                with torch.no_grad():
                    if not _difference(got.out, mistake.forward(model, x.clone())):
                        ctx.fail(mistake.message, "", details)
            except CheckFailed:
                raise
            except Exception:  # a mistake that cannot run on this configuration simply does not match
                pass
    never = [n for n in ref.calls if n not in got.calls and n in names]
    if never:
        role = ctx.ex.hints.get(_leaf(never[0]), "")
        ctx.fail(f"{never[0]} is defined but never called in forward" + (f" ({role})" if role else ""), "", details)
    if soft:
        ctx.fail(soft[0][0], soft[0][1], details)
    ctx.fail(f"the {mode}-mode output differs from the reference's although the structure matches",
             f"Likely causes in {ctx.ex.kind}: " + "; ".join(ctx.ex.causes) + "." if ctx.ex.causes else "", details)


def _behaviour(ctx: _Ctx, case: Case, ref: nn.Module, got: nn.Module, soft: List[Tuple[str, str]]) -> None:
    """Load the reference's randomised weights into the learner's module and compare what the two compute."""
    state = _randomise(ref)
    try:
        got.load_state_dict(state, strict=True)
    except Exception as exc:
        ctx.fail(f"the reference's weights do not load into yours: {_summarise(exc)}")
    names = [n for n, _ in got.named_modules() if n]
    x = case.make_input()
    for train in ((False, True) if case.train else (False,)):
        xm = x if train or case.eval_batch is None else x[:case.eval_batch]
        grad = train and case.grads
        ref_run, got_run = _run(ref, xm, train, grad), _run(got, xm, train, grad)
        if ref_run.error is not None:  # pragma: no cover - the reference always runs
            raise ref_run.error
        _fail_on_error(ctx, got_run, ref_run, names, "train" if train else "eval")
        if not isinstance(got_run.out, torch.Tensor):
            ctx.fail(f"forward returned {type(got_run.out).__name__}, not a tensor", "End forward with `return out`.")
        if got_run.out.shape != ref_run.out.shape:
            shapes = tuple(got_run.out.shape), tuple(ref_run.out.shape)
            ctx.fail(f"the output has shape {shapes[0]} but the reference's has {shapes[1]}",
                     ctx.ex.shape_hint(*shapes), [f"possibly related: {p}" for p, _ in soft[:1]])
        diff = _difference(got_run.out, ref_run.out)
        if diff:
            _diagnose(ctx, ref, state, xm, train, got_run, ref_run, names, soft, diff)
        got_buffers = dict(got.named_buffers())
        for n, b in (ref.named_buffers() if train else ()):
            if b.is_floating_point() and n in got_buffers and _difference(got_buffers[n], b):
                ctx.fail(f"{n} differs after one train-mode forward ({_difference(got_buffers[n], b)})",
                         "BatchNorm updates its running statistics from what it normalises in train mode; is it "
                         "applied to the same tensor, once?")
        for n, g in (ref_run.grads.items() if grad else ()):
            mine = got_run.grads.get(n)
            if g is not None and (mine is None or _difference(mine, g, GRAD_RTOL)):
                ctx.fail(f"no gradient reaches {n} although the outputs match" if mine is None else
                         f"the gradient of {n} differs from the reference's although the outputs match "
                         f"({_difference(mine, g, GRAD_RTOL)})", "Is part of forward detached (.detach(), .data, "
                         "torch.no_grad()), or does an in-place operation change a tensor autograd still needs?")


# --- Initialisation (the whole network) ----------------------------------------------------------------------------

def _check_init(ctx: _Ctx, model: nn.Module) -> None:
    """A fresh model's statistics against the reference's init: Xavier-normal (std ``sqrt(2 / (fan_in +
    fan_out))``) convs and linears, not PyTorch's default kaiming-uniform (std ``1 / sqrt(3 fan_in)``)."""
    problems: List[str] = []
    weights = kaiming = uniform = 0
    for n, m in model.named_modules():
        if isinstance(m, _BatchNorm) and m.affine and not (torch.all(m.weight == 1) and torch.all(m.bias == 0)):
            problems.append(f"{n}: BatchNorm weight should be 1 and bias 0")
        elif isinstance(m, nn.PReLU) and not torch.allclose(m.weight, torch.full_like(m.weight, 0.25)):
            problems.append(f"{n}.weight is {m.weight.flatten()[0].item():.3g}, PReLU keeps its default 0.25")
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach()
            fan_in, fan_out = w[0].numel(), w.shape[0] * w[0][0].numel()
            xavier, default = math.sqrt(2.0 / (fan_in + fan_out)), 1.0 / math.sqrt(3.0 * fan_in)
            std, tol = w.std().item(), 0.1 + 4.0 / math.sqrt(2.0 * w.numel())
            weights += 1
            if abs(std / xavier - 1) > tol:
                problems.append(f"{n}.weight std {std:.3g}, xavier_normal_ gives {xavier:.3g}")
                kaiming += abs(std / default - 1) <= tol
            elif w.numel() >= 4096:
                z = w.flatten()[:65536].double()
                if (((z - z.mean()) / z.std()).pow(4).mean() - 3.0).item() < -0.6:  # excess kurtosis: uniform -1.2
                    uniform += 1
                    problems.append(f"{n}.weight has the right std but looks uniform, not normal")
            if isinstance(m, nn.Linear) and m.bias is not None and not torch.all(m.bias == 0):
                problems.append(f"{n}.bias is not 0")
    if problems:
        notes = [f"{kaiming} of {weights} conv/linear weights have the std of PyTorch's default init (kaiming_uniform_"
                 " with a=sqrt(5)): does your init loop run at the end of __init__?"] if kaiming else []
        notes += ["weights look uniformly distributed: xavier_uniform_ instead of xavier_normal_?"] if uniform else []
        ctx.fail(f"initialisation differs: {len(problems)} problem(s), e.g. {problems[0]}",
                 "At the end of __init__: for m in self.modules(): Conv2d and Linear -> nn.init.xavier_normal_("
                 "m.weight); Linear bias -> 0; BatchNorm weight 1 and bias 0; PReLU keeps its default 0.25.",
                 notes + problems[1:4])


# --- The engine every check shares ---------------------------------------------------------------------------------

@contextmanager
def _watch(reference: Any, seen: List[str]) -> Iterator[None]:
    """Record in ``seen`` every call of the reference's code (a function's, or any method its class defines)."""
    members = vars(reference).values() if isinstance(reference, type) else [reference]
    codes = {inspect.unwrap(f).__code__ for f in members if hasattr(inspect.unwrap(f), "__code__")}

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code in codes:
            seen.append(frame.f_code.co_name)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield
    finally:
        sys.setprofile(previous)


def _reject_reuse(ctx: _Ctx, obj: Any, run: Callable[[], Any]) -> None:
    """Fail if ``obj`` is, subclasses or calls the package's own answer: the check would compare it with itself."""
    ref, kind, seen = ctx.ex.reference, ctx.ex.kind, []
    hint = (f"Write your own from torch primitives, as the chapter builds it; the package's {kind} is what the "
            f"check compares with, so using it proves nothing.")
    if obj is ref:
        ctx.fail(f"{ctx.label} is the package's own {kind}, not your implementation", hint)
    if isinstance(obj, type) and isinstance(ref, type) and issubclass(obj, ref):
        ctx.fail(f"{ctx.label} is a subclass of the package's {kind}, not your own implementation", hint)
    with torch.random.fork_rng(devices=[]), _watch(ref, seen):
        try:
            run()
        except Exception:
            pass
    if seen:
        ctx.fail(f"{ctx.label} calls the package's own {kind} ({kind}.{seen[0]}): it wraps the answer instead of "
                 "implementing it", hint)


def _validate(ctx: _Ctx, obj: Any, want_class: bool) -> None:
    """Reject objects that cannot be the exercise's answer, before building anything."""
    if obj is None:
        ctx.fail("got None instead of your implementation", "Run the exercise cell that defines it, then the check.")
    if not want_class and not callable(obj):
        ctx.fail(f"expected a function {ctx.ex.signature}, got a {type(obj).__name__}")
    if want_class and isinstance(obj, nn.Module):
        ctx.fail(f"got an instance of {type(obj).__name__}; pass the class itself",
                 f"Call {ctx.ex.check}({type(obj).__name__}), not {ctx.ex.check}({type(obj).__name__}(...)).")
    if want_class and not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        ctx.fail(f"expected a subclass of nn.Module with constructor {ctx.ex.signature}, got {obj!r}")


def _construct(ctx: _Ctx, build: Callable[[], Any]) -> nn.Module:
    """Build the learner's module, turning any error into a CheckFailed."""
    torch.manual_seed(SEED)
    try:
        got = build()
    except NotImplementedError:
        ctx.fail(f"{ctx.label} is not implemented yet: calling {ctx.config} raised NotImplementedError",
                 NOT_IMPLEMENTED)
    except Exception as exc:
        ctx.fail(f"calling {ctx.config} raised {_summarise(exc)}", "Call super().__init__() first in __init__."
                 if "Module.__init__() call" in str(exc) else f"It must accept {ctx.ex.signature}.")
    if got is None:
        ctx.fail(f"{ctx.config} returned None", "Did you forget `return`?")
    if not isinstance(got, nn.Module):
        ctx.fail(f"{ctx.config} returned a {type(got).__name__}, not an nn.Module")
    return got


def run_check(ex: Exercise, obj: Any, cases: Sequence[Case], want_class: bool = True) -> None:
    """Compare the learner's module builder ``obj`` with ``ex.reference`` on every case.

    Raises :class:`CheckFailed` on the first difference; prints one line on success. The caller's
    random-number state is left untouched.
    """
    label = _label(obj)
    _validate(_Ctx(ex, label, label), obj, want_class)
    with torch.random.fork_rng(devices=[]):
        for case in cases:
            ctx = _Ctx(ex, case.config, label)
            torch.manual_seed(SEED)
            ref, got = case.build_ref(), _construct(ctx, case.build_got)
            try:
                soft = _structure(ctx, ref, got)
                if ex.check_init:
                    _check_init(ctx, got)
            except CheckFailed:
                raise
            except Exception as exc:  # an unusual module the rules cannot inspect
                ctx.fail(f"could not inspect your module's structure: {_summarise(exc)}",
                         "Build it from standard torch.nn modules registered as attributes, as the reference does.")
            _behaviour(ctx, case, ref, got, soft)
    first = cases[0]
    _reject_reuse(_Ctx(ex, first.config, label), obj,
                  lambda: first.build_got().eval()(first.make_input()[:1]) if want_class else first.build_got())
    print(f"{ex.check}: all {len(cases)} configurations match the reference ({ex.what}) {_tick()}")


# --- Chapter 1: conv3x3 --------------------------------------------------------------------------------------------

_CONV = Exercise("check_conv3x3", conv3x3, "(inplanes, outplanes, stride=1) -> nn.Conv2d", root="the convolution",
                 causes=("return nn.Conv2d(inplanes, outplanes, kernel_size=3, stride=stride, padding=1, bias=False)",))


def check_conv3x3(fn: Callable[..., nn.Module]) -> None:
    """Check a learner's ``conv3x3(inplanes, outplanes, stride=1)`` (``my_conv3x3``, chapter 1) against the
    package's, on four configurations. Raises :class:`CheckFailed` naming what differs (bias, padding, stride...)."""
    configs = [(3, 8), (16, 16, 1), (8, 16, 2), (16, 32, 2)]
    run_check(_CONV, fn, [Case(_call_text(_label(fn), a, {}), lambda a=a: conv3x3(*a), lambda a=a: fn(*a),
                               _input(2, a[0], 9, 9)) for a in configs], want_class=False)


# --- Chapters 2, 3 and 5: the residual blocks, one table -----------------------------------------------------------

def _block_forward(m: nn.Module, x: torch.Tensor, steps: Sequence[str], after: Sequence[str]) -> torch.Tensor:
    """A block's forward spelled as data: the branch's ``steps`` (attribute names), then ``after`` ("add" adds
    the identity; other names are modules). Mistakes are edits of these two lists."""
    out = x
    for s in steps:
        out = out if s == "se" and not m.use_se else getattr(m, s)(out)
    for s in after:
        out = out + (m.downsample(x) if m.downsample is not None else x) if s == "add" else getattr(m, s)(out)
    return out


def _block_mistakes(steps: Tuple[str, ...], act: str) -> Tuple[Mistake, ...]:
    """The usual mistakes of a residual block, generated from its steps and final activation."""
    name = {"relu": "ReLU", "prelu": "PReLU"}
    ok = ("add", act)
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


_DOWNSAMPLE = ("The check passes a downsample module (a 1x1 convolution with the block's stride, then BatchNorm2d); "
               "store it as self.downsample and apply it to x: identity = self.downsample(x) if self.downsample is "
               "not None else x.")
_BLOCK_SHAPE = "The output has planes * expansion channels and (H - 1) // stride + 1 rows: check the stride."
#: exercise id -> (reference, the branch's steps, final activation, configurations
#: (inplanes, planes, stride, with a downsample[, use_se]), hints by submodule)
_BLOCKS: Dict[str, Tuple[type, Tuple[str, ...], str, List[Tuple], Dict[str, str]]] = {
    "basic_block": (BasicBlock, ("conv1", "bn1", "relu", "conv2", "bn2"), "relu",
                    [(16, 16, 1, False), (16, 32, 2, True), (8, 16, 1, True), (16, 16, 2, True)],
                    {"downsample": _DOWNSAMPLE, "stride": "BasicBlock puts the stride on conv1 (conv3x3(inplanes, "
                     "planes, stride)); conv2 keeps stride 1."}),
    "bottleneck": (Bottleneck, ("conv1", "bn1", "relu", "conv2", "bn2", "relu", "conv3", "bn3"), "relu",
                   [(64, 16, 1, False), (32, 16, 2, True), (16, 8, 1, True), (64, 16, 2, True)],
                   {"downsample": _DOWNSAMPLE, "stride": "Bottleneck (torchvision's 'v1.5' layout) puts the stride on "
                    "the 3x3 conv2; the 1x1 conv1 and conv3 keep stride 1."}),
    "ir_block": (IRBlock, ("bn0", "conv1", "bn1", "prelu", "conv2", "bn2", "se"), "prelu",
                 [(32, 32, 1, False, None), (32, 32, 1, False, False), (32, 64, 2, True, True),
                  (32, 64, 2, True, False), (16, 32, 1, True, True), (64, 64, 2, True, True)],
                 {"downsample": _DOWNSAMPLE, "bn0": "it normalises the block's input before conv1, pre-activation "
                  "style", "stride": "IRBlock keeps the resolution in conv1 (inplanes -> inplanes, stride 1) and "
                  "changes width and resolution in conv2 (inplanes -> planes, stride).",
                  "IRBlock.conv1": "IRBlock's conv1 keeps inplanes channels; conv2 maps inplanes -> planes"}),
}


def _check_block(exercise: str, cls: type) -> None:
    """The one check behind :func:`check_basic_block`, :func:`check_bottleneck` and :func:`check_ir_block`."""
    ref_cls, steps, act, configs, hints = _BLOCKS[exercise]
    extra = ", use_se=True" if "se" in steps else ""
    ex = Exercise(f"check_{exercise}", ref_cls, f"(inplanes, planes, stride=1, downsample=None{extra})",
                  _block_mistakes(steps, act), ("the order inside the branch is " + " -> ".join(steps),
                  "downsample must be applied to the block's input x"), hints, lambda g, r: _BLOCK_SHAPE)
    label = _label(cls)
    ctx = _Ctx(ex, label, label)
    _validate(ctx, cls, want_class=True)
    if getattr(cls, "expansion", None) != ref_cls.expansion:
        ctx.fail(f"{label} has no class attribute expansion; the reference {ex.kind} sets expansion = "
                 f"{ref_cls.expansion}" if getattr(cls, "expansion", None) is None else f"expansion is {cls.expansion}"
                 f" but the reference {ex.kind} has expansion = {ref_cls.expansion}",
                 "ResNetArcFace's _make_layer reads block.expansion: the block's output has planes * expansion "
                 "channels.")
    cases = []
    for inplanes, planes, stride, with_ds, *use_se in configs:
        out = planes * ref_cls.expansion
        args = [inplanes, planes] + ([stride] if stride != 1 or with_ds else []) + (["downsample"] if with_ds else [])
        kwargs = {"use_se": use_se[0]} if use_se and use_se[0] is not None else {}

        def build(klass: type, a: Tuple = tuple(args), k: Dict = kwargs, i: int = inplanes, o: int = out,
                  s: int = stride) -> nn.Module:
            torch.manual_seed(SEED + 2)
            ds = nn.Sequential(nn.Conv2d(i, o, kernel_size=1, stride=s, bias=False), nn.BatchNorm2d(o))
            return klass(*[ds if v == "downsample" else v for v in a], **k)

        names = {3: f"downsample=Sequential(Conv2d({inplanes}, {out}, 1x1, stride={stride}, bias=False), "
                    f"BatchNorm2d({out}))"}
        cases.append(Case(_call_text(label, args, kwargs, names), lambda b=build: b(ref_cls), lambda b=build: b(cls),
                          _input(4, inplanes, 8, 8)))
    run_check(ex, cls, cases)


def check_basic_block(cls: type) -> None:
    """Check a learner's ``BasicBlock(inplanes, planes, stride=1, downsample=None)`` (``MyBasicBlock``,
    chapter 2) on four configurations. Raises :class:`CheckFailed` naming what differs."""
    _check_block("basic_block", cls)


def check_bottleneck(cls: type) -> None:
    """Check a learner's ``Bottleneck(inplanes, planes, stride=1, downsample=None)`` (``MyBottleneck``,
    chapter 3) on four configurations. Raises :class:`CheckFailed` naming what differs."""
    _check_block("bottleneck", cls)


def check_ir_block(cls: type) -> None:
    """Check a learner's ``IRBlock(inplanes, planes, stride=1, downsample=None, use_se=True)`` (``MyIRBlock``,
    chapter 5) on six configurations: with and without SE (once with ``use_se`` left at its default), strides 1
    and 2, with and without a downsample. Raises :class:`CheckFailed` naming what differs."""
    _check_block("ir_block", cls)


# --- Chapter 4: SEBlock --------------------------------------------------------------------------------------------

_SE = Exercise(
    "check_se_block", SEBlock, "(channel, reduction=16)",
    (Mistake("SE gate has no Sigmoid: your output equals x * (fc without the sigmoid)",
             lambda m, x: x * m.fc[2](m.fc[1](m.fc[0](m.avg_pool(x).flatten(1))))[:, :, None, None]),
     Mistake("the squeeze uses max pooling: your output equals the reference's with adaptive max pooling in place of "
             "the average", lambda m, x: x * m.fc(F.adaptive_max_pool2d(x, 1).flatten(1))[:, :, None, None]),
     Mistake("the gate is added, not multiplied: your output equals x + gate; the reference computes x * gate",
             lambda m, x: x + m.gate(x))),
    ("squeeze = global average pool to (N, C)", "excite = Linear -> PReLU -> Linear -> Sigmoid",
     "output = x * gate, broadcast over H and W"), {"fc": "the excitation MLP"},
    lambda g, r: ("SE returns the gate instead of x * gate: the output must have the input's shape (N, C, H, W)"
                  if g[-2:] == (1, 1) or len(g) == 2 else "The output must have the input's shape."))


def check_se_block(cls: type) -> None:
    """Check a learner's ``SEBlock(channel, reduction=16)`` (``MySEBlock``, chapter 4) on four configurations.
    Raises :class:`CheckFailed` naming what differs."""
    configs = [(64,), (32, 8), (48, 16), (128, 4)]
    run_check(_SE, cls, [Case(_call_text(_label(cls), a, {}), lambda a=a: SEBlock(*a), lambda a=a: cls(*a),
                              _input(4, a[0], 6, 6)) for a in configs])


# --- Chapter 6: the whole network ----------------------------------------------------------------------------------

def _model_forward(m: nn.Module, x: torch.Tensor, stem: bool = True, head: Sequence[str] = ("bn4", "dropout")
                   ) -> torch.Tensor:
    """ResNetArcFace's forward with switches for the usual mistakes."""
    x = m.maxpool(m.prelu(m.bn1(m.conv1(x))) if stem else m.bn1(m.conv1(x)))
    x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
    for s in head:
        x = getattr(m, s)(x)
    return m.bn5(m.fc5(x.flatten(1)))


_MODEL = Exercise(
    "check_resnet_arcface", ResNetArcFace, "(block, layers, use_se=True)",
    (Mistake("dropout missing: your train-mode output equals the reference's without dropout (nn.Dropout(), p=0.5, "
             "after bn4); in eval mode dropout does nothing, so only train mode shows it",
             lambda m, x: _model_forward(m, x, head=("bn4",)), train_only=True),
     Mistake("dropout in the wrong place: your train-mode output equals the reference's with dropout before bn4 (the "
             "head is bn4 -> dropout -> flatten -> fc5 -> bn5)",
             lambda m, x: _model_forward(m, x, head=("dropout", "bn4")),
             train_only=True),
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
     "stride": "Each of layer2..layer4 halves the resolution in its first block."},
    lambda g, r: "The network returns a (N, 512) embedding: bn5(fc5(flatten(dropout(bn4(x))))).",
    check_init=True, what="structure, initialisation, eval/train outputs and gradients")


def check_resnet_arcface(cls: type) -> None:
    """Check a learner's ``ResNetArcFace(block, layers, use_se=True)`` (``MyResNetArcFace``, chapter 6).

    Builds ``'IRBlock'`` networks with ``layers`` (1, 1, 1, 1) (``use_se`` at its default) and (2, 2, 2, 2)
    with ``use_se`` False (GFPGAN's) and True; checks each one's structure and initialisation, and on the same
    weights its eval-mode output; train-mode outputs for the first two; and the gradients of every parameter
    for the smallest one only (a backward pass through the whole network is the costliest step). The slowest
    check: 39 s measured on a 2-core CPU shared with other jobs (load 9), less on a quiet machine. The
    learner's class may use the package's ``IRBlock``.

    Raises:
        CheckFailed: naming the configuration and what differs.
    """
    configs = [(("IRBlock", (1, 1, 1, 1)), {}, "train, grads"), (("IRBlock", (2, 2, 2, 2)), {"use_se": False}, "train"),
               (("IRBlock", (2, 2, 2, 2)), {"use_se": True}, "")]
    run_check(_MODEL, cls, [Case(_call_text(_label(cls), a, k), lambda a=a, k=k: ResNetArcFace(*a, **k),
                                 lambda a=a, k=k: cls(*a, **k), _input(2, 1, 128, 128), train="train" in modes,
                                 grads="grads" in modes, eval_batch=1)  # train mode needs a batch of 2 (bn5)
                            for a, k, modes in configs])


# --- Chapters 7-10: functions, compared on outputs and input gradients ---------------------------------------------

def run_function_check(ex: Exercise, fn: Callable[..., Any], cases: Sequence[Case],
                       convert: Callable[[Any, Tuple], Any] = lambda out, args: out) -> None:
    """Compare the learner's function ``fn`` with ``ex.reference`` on every case (``make_input`` returns
    ``(args, kwargs)``, fresh each call): outputs (through ``convert``), then the gradient of every argument that
    requires one. ``ex.hints`` may word errors (``"error:<text in the message>"``) and gradients
    (``"grad:<argument>"``, ``"grad:nan"``). Raises :class:`CheckFailed`; prints one line on success."""
    label, names = _label(fn), list(inspect.signature(ex.reference).parameters)
    _validate(_Ctx(ex, label, label), fn, want_class=False)
    with torch.random.fork_rng(devices=[]):
        for case in cases:
            ctx = _Ctx(ex, case.config, label)
            (ra, rk), (ga, gk) = case.make_input(), case.make_input()
            torch.manual_seed(SEED + 1)
            ref = convert(ex.reference(*ra, **rk), ra)
            try:
                torch.manual_seed(SEED + 1)
                got = convert(fn(*ga, **gk), ga)
            except NotImplementedError:
                ctx.fail(f"{label} is not implemented yet: it raised NotImplementedError", NOT_IMPLEMENTED)
            except Exception as exc:
                known = [v for k, v in ex.hints.items() if k.startswith("error:") and k[6:] in str(exc)]
                ctx.fail(known[0] if known else f"your function raised {_summarise(exc)}",
                         f"It must accept {ex.signature}.", [f"raised {_summarise(exc)}"] if known else [])
            problem = ex.after(ga, ra)
            if problem:
                ctx.fail(problem)
            if not isinstance(got, torch.Tensor):
                ctx.fail(f"{case.config} returned {type(got).__name__}, not what {ex.signature} returns",
                         "Did you forget `return`?" if got is None else "")
            diff = _difference(got, ref)
            if diff and not case.finite_only:
                for mistake in ex.mistakes:
                    try:
                        (ma, mk) = case.make_input()
                        torch.manual_seed(SEED + 1)
                        if mistake.applies(ma) and not _difference(got, convert(mistake.forward(*ma, **mk), ma)):
                            ctx.fail(mistake.message, "", [f"your output differs from the reference's: {diff}"])
                    except CheckFailed:
                        raise
                    except Exception:  # a mistake that cannot run on this case simply does not match
                        pass
                ctx.fail("the output differs from the reference's", "Likely causes: " + "; ".join(ex.causes) + ".",
                         [diff])
            if not torch.isfinite(got).all():
                ctx.fail("the output is not finite (NaN or inf)", ex.hints.get("grad:nan", ""))
            if case.grads and got.requires_grad:
                proj = torch.randn(ref.shape, generator=torch.Generator().manual_seed(SEED + 3), dtype=ref.dtype)
                (ref * proj).sum().backward() if ref.requires_grad else None
                (got * proj.to(got.dtype)).sum().backward()
                for i, (r, g) in enumerate(zip(ra, ga)):
                    if not (isinstance(g, torch.Tensor) and g.requires_grad):
                        continue
                    if g.grad is not None and not torch.isfinite(g.grad).all():
                        ctx.fail(ex.hints.get("grad:nan", f"the gradient of {names[i]} is not finite (NaN or inf)"))
                    if (r.grad is None or not r.grad.any()) and g.grad is not None and g.grad.any():
                        ctx.fail(ex.hints.get(f"grad:{names[i]}", f"a gradient flows into {names[i]}; the "
                                 "reference's does not"))
                    if r.grad is not None and r.grad.any() and (g.grad is None or (
                            not case.finite_only and _difference(g.grad, r.grad, GRAD_RTOL))):
                        ctx.fail(f"no gradient reaches {names[i]}" if g.grad is None else f"the gradient of "
                                 f"{names[i]} differs ({_difference(g.grad, r.grad, GRAD_RTOL)}) although the "
                                 "outputs match", "Is part of the computation detached (.detach(), .data, "
                                 "torch.no_grad()) or done outside autograd (.item(), numpy)?")
    first = cases[0]
    _reject_reuse(_Ctx(ex, first.config, label), fn, lambda: fn(*first.make_input()[0], **first.make_input()[1]))
    print(f"{ex.check}: all {len(cases)} configurations match the reference ({ex.what}) {_tick()}")


_ARCFACE = Exercise(
    "check_arcface_logits", arcface_logits, "(cosine, labels, s=64.0, m=0.5) -> logits",
    (Mistake("margin added to every class: your logits equal s * cos(theta + m) in every column; ArcFace adds the "
             "margin to the target class's angle only (the column labels[i] of row i)",
             lambda c, l, s=64.0, m=0.5: torch.stack([arcface_logits(c, torch.full_like(l, j), s, m)[:, j]
                                                      for j in range(c.shape[1])], 1)),
     Mistake("margin added to cos(theta) instead of theta: your logits equal s * (cos(theta) - m) (CosFace's margin) "
             "at the target; ArcFace computes s * cos(theta + m)",
             lambda c, l, s=64.0, m=0.5: cosface_logits(c, l, s, m)),
     Mistake("margin added to cos(theta) instead of theta: your logits equal s * (cos(theta) + m) at the target; "
             "ArcFace computes s * cos(theta + m)", lambda c, l, s=64.0, m=0.5: cosface_logits(c, l, s, -m)),
     Mistake("s applied twice: your logits equal the reference's times s", lambda c, l, s=64.0, m=0.5:
             arcface_logits(c, l, s, m) * s),
     Mistake("s not applied: your logits equal the reference's divided by s (multiply by s once, after the margin)",
             lambda c, l, s=64.0, m=0.5: arcface_logits(c, l, s, m) / s),
     Mistake("s ignored: your logits equal the reference's with s=64 whatever the call passes",
             lambda c, l, s=64.0, m=0.5: arcface_logits(c, l, 64.0, m)),
     Mistake("m ignored: your logits equal the reference's with m=0.5 whatever the call passes",
             lambda c, l, s=64.0, m=0.5: arcface_logits(c, l, s, 0.5)),
     Mistake("labels ignored: your margin lands on each row's largest cosine, not on the column labels[i]",
             lambda c, l, s=64.0, m=0.5: arcface_logits(c, c.argmax(1), s, m)),
     Mistake("labels ignored: your margin lands on column 0, not on the column labels[i]",
             lambda c, l, s=64.0, m=0.5: arcface_logits(c, torch.zeros_like(l), s, m)),
     Mistake("cos(theta + m) used past theta = pi - m: there it grows again as theta grows; the reference switches to "
             "cos(theta) - m sin(m) when cos(theta) <= cos(pi - m) (see the chapter)",
             lambda c, l, s=64.0, m=0.5: s * torch.where(F.one_hot(l, c.shape[1]).bool(),
                                                         torch.cos(torch.acos(c.clamp(-1, 1)) + m), c))),
    ("the margin belongs to the target's angle: cos(theta + m) = cos(theta) cos(m) - sin(theta) sin(m)",
     "every logit is scaled by s once"),
    {"grad:nan": "NaN gradient at cos = 1: the derivative of acos (and of sqrt(1 - cos^2)) is infinite at cos = +-1; "
                 "clamp 1 - cos^2 away from 0 (or cos into [-1 + eps, 1 - eps]) before the square root or acos"},
    what="logits and their gradients, including cos = +-1")


def check_arcface_logits(fn: Callable[..., torch.Tensor]) -> None:
    """Check a learner's ``arcface_logits(cosine, labels, s=64.0, m=0.5)`` (``my_arcface_logits``, chapter 7)
    against :func:`resnet_arcface.losses.arcface_logits`: logits and gradients on random cosines (some past the
    threshold pi - m), with other ``s`` and ``m``, and finite gradients at cos = +-1 exactly."""
    def make(n: int, c: int, kw: Dict[str, float], edge: bool = False) -> Callable[[], Tuple]:
        def inputs() -> Tuple:
            g = torch.Generator().manual_seed(SEED + n)
            cos = torch.rand(n, c, generator=g, dtype=torch.float64) * 1.9 - 0.95
            labels = (cos.argmax(1) + 1 + torch.arange(n) % (c - 1)) % c  # never the row's largest cosine
            cos[0, labels[0]] = -0.97  # past the threshold cos(pi - m)
            if edge:
                cos[torch.arange(n), labels] = torch.tensor([1.0, -1.0]).repeat(n)[:n].to(cos)
            return (cos.requires_grad_(), labels), dict(kw)
        return inputs
    configs = [(6, 5, {}, False), (8, 7, {"s": 30.0, "m": 0.3}, False), (4, 3, {}, True)]
    text = "{}(cosine ({}, {}){}, labels{})"
    run_function_check(_ARCFACE, fn, [Case(text.format(_label(fn), n, c, " with +-1" if e else "", "".join(
        f", {k}={v}" for k, v in kw.items())), None, None, make(n, c, kw, e), finite_only=e)
        for n, c, kw, e in configs])


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
    :func:`resnet_arcface.verify.tar_at_far` on overlapping genuine and impostor scores, with and without ties."""
    def make(far: float, ties: bool) -> Callable[[], Tuple]:
        def inputs() -> Tuple:
            g = torch.Generator().manual_seed(SEED + 5)
            scores = torch.cat([torch.randn(30, generator=g) + 1.5, torch.randn(60, generator=g)])
            return ((scores * 4).round() / 4 if ties else scores, torch.arange(90) < 30, far), {}
        return inputs
    run_function_check(_TAR, fn, [Case(f"{_label(fn)}(scores, same, far={far})" + (" with tied scores" if ties else ""),
                                       None, None, make(far, ties), grads=False)
                                  for far, ties in [(0.1, False), (0.05, False), (0.25, True), (0.02, True)]],
                       convert=lambda out, args: torch.as_tensor(out, dtype=torch.float64) if isinstance(
                           out, (float, int, torch.Tensor)) and not isinstance(out, bool) else out)


def _identity_variant(model: nn.Module, output: torch.Tensor, target: torch.Tensor, weight: float = 10.0,
                      gray: str = "luma", loss: Callable = F.l1_loss, norm: bool = False) -> torch.Tensor:
    """GFPGAN's identity loss with switches for the usual mistakes."""
    def embed(x: torch.Tensor) -> torch.Tensor:
        if gray == "mean":
            x = x.mean(1, keepdim=True)
        e = model(preprocess(x, value_range=(-1.0, 1.0), size=model.input_size))
        return F.normalize(e, dim=1) if norm else e
    return weight * loss(embed(output), embed(target).detach())


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


def check_identity_loss(fn: Callable[..., torch.Tensor]) -> None:
    """Check a learner's ``identity_loss(model, output, target, weight=10.0)`` (``my_identity_loss``, chapter 9)
    against :func:`resnet_arcface.losses.identity_loss`, with a small eval-mode ResNetArcFace, RGB and gray images
    in [-1, 1] of another size than the network's, and the gradients of both image batches."""
    def make(channels: int, kw: Dict[str, float]) -> Callable[[], Tuple]:
        def inputs() -> Tuple:
            torch.manual_seed(SEED)
            model = ResNetArcFace("IRBlock", (1, 1, 1, 1), False, widths=(8, 8, 16, 16), input_size=32,
                                  embedding_dim=16)
            _randomise(model)
            model.modes = []  # the network's mode at each call: the learner's function must not train it
            model.register_forward_pre_hook(lambda m, i: m.modes.append(m.training))
            g = torch.Generator().manual_seed(SEED + 6)
            out, target = (torch.rand(2, 4, channels, 48, 48, generator=g) * 2 - 1).unbind(0)
            return (model.eval(), out.requires_grad_(), target.requires_grad_()), dict(kw)
        return inputs
    run_function_check(_IDENTITY, fn, [Case(f"{_label(fn)}(model, output {(4, c, 48, 48)}, target{extra})", None, None,
                                            make(c, kw)) for c, kw, extra in [(3, {}, ""), (3, {"weight": 2.5},
                                                                                             ", weight=2.5")]])


def _fold_variant(conv: nn.Conv2d, bn: nn.BatchNorm2d, mean: bool = True, beta: bool = True, root: bool = True,
                  eps: bool = True, axis: int = 0) -> nn.Conv2d:
    """Folding with switches for the usual mistakes: ``w * scale``, ``(b - mean) * scale + beta``."""
    var = bn.running_var + (bn.eps if eps else 0.0)
    scale = bn.weight / (var.sqrt() if root else var)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
    folded = copy.deepcopy(conv)
    folded.weight = nn.Parameter(conv.weight * scale.view([-1 if d == axis else 1 for d in range(4)]))
    folded.bias = nn.Parameter((bias - (bn.running_mean if mean else 0.0)) * scale + (bn.bias if beta else 0.0))
    return folded


def _fold_left(args: Tuple, ref_args: Tuple) -> str:
    same = all(torch.equal(a, b) for a, b in zip(args[0].state_dict().values(), ref_args[0].state_dict().values()))
    return "" if same and all(torch.equal(a, b) for a, b in zip(args[1].state_dict().values(),
                                                                 ref_args[1].state_dict().values())) else \
        "your function changed the convolution or the BatchNorm it was given; build a new nn.Conv2d"


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
    after=_fold_left, what="the folded convolution's output")


def check_fold_conv_bn(fn: Callable[[nn.Conv2d, nn.BatchNorm2d], nn.Conv2d]) -> None:
    """Check a learner's ``fold_conv_bn(conv, bn)`` (``my_fold_conv_bn``, chapter 10) against
    :func:`resnet_arcface.inference.fold_conv_bn`: the folded convolution's output on an input, for convolutions
    with and without bias and BatchNorms with random statistics (some variances far below 1)."""
    def make(cin: int, cout: int, stride: int, bias: bool) -> Callable[[], Tuple]:
        def inputs() -> Tuple:
            torch.manual_seed(SEED)
            conv, bn = nn.Conv2d(cin, cout, 3, stride, 1, bias=bias), nn.BatchNorm2d(cout)
            _randomise(bn)
            with torch.no_grad():
                bn.running_var[::2] = 1e-4  # where eps matters
            return (conv.requires_grad_(False), bn.eval().requires_grad_(False)), {}
        return inputs
    x = _input(2, 8, 7, 7)()

    def run(out: Any, args: Tuple) -> Any:
        if not isinstance(out, nn.Conv2d):
            return out
        return out(x[:, :out.in_channels]).detach()
    run_function_check(_FOLD, fn, [Case(f"{_label(fn)}(Conv2d({i}, {o}, 3x3, stride={s}, bias={b}), BatchNorm2d({o}))",
                                        None, None, make(i, o, s, b), grads=False)
                                   for i, o, s, b in [(8, 8, 1, False), (4, 8, 2, True), (8, 6, 1, True)]], run)


#: The grader's registry: exercise id -> (the learner's object's name in the chapter notebook, its check).
EXERCISES: Dict[str, Tuple[str, Callable[[Any], None]]] = {
    "conv3x3": ("my_conv3x3", check_conv3x3),
    "basic_block": ("MyBasicBlock", check_basic_block),
    "bottleneck": ("MyBottleneck", check_bottleneck),
    "se_block": ("MySEBlock", check_se_block),
    "ir_block": ("MyIRBlock", check_ir_block),
    "resnet_arcface": ("MyResNetArcFace", check_resnet_arcface),
    "arcface_logits": ("my_arcface_logits", check_arcface_logits),
    "tar_at_far": ("my_tar_at_far", check_tar_at_far),
    "identity_loss": ("my_identity_loss", check_identity_loss),
    "fold_conv_bn": ("my_fold_conv_bn", check_fold_conv_bn),
}
