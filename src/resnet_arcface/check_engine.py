"""The comparison engine every exercise self-check shares.

:mod:`resnet_arcface.checks` describes each check (its configurations, the
mistakes typical of its component, its hints) and calls :func:`_run_check`,
which for every configuration:

1. validates and builds the learner's object and the reference (:func:`_validate`, :func:`_construct`);
2. compares their structure (:func:`resnet_arcface.check_structure._compare_structure`);
3. for the whole network, checks the initialisation (:func:`_check_init`);
4. randomises the reference's BatchNorm statistics and PReLU slopes (:func:`_randomise`), copies its
   weights into the learner's module and compares outputs in eval and train mode, gradients and BatchNorm
   running statistics (:func:`_compare_behaviour`); when outputs differ, :func:`_diagnose` tries the
   spec's known mistakes on the reference to name the one the learner made.

Any difference raises :class:`CheckFailed` (re-exported by :mod:`resnet_arcface.checks`, where learners
import it from). The coursework grader loads this file afresh, like ``checks.py``, before it grades.
"""
from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

# Absolute imports: the coursework grader loads this file afresh (and the structure rules just before it).
from resnet_arcface.check_structure import _compare_structure, _Finding, _leaf, _Pair

SEED = 0
#: Outputs must agree to ``ATOL + RTOL * max|reference|``; gradients to ``GRAD_RTOL`` of their scale.
RTOL, ATOL, GRAD_RTOL = 1e-4, 1e-6, 1e-3


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


# Learners import CheckFailed from resnet_arcface.checks; it is defined here because the engine raises it.
# Named after the public module so that tracebacks read ``resnet_arcface.checks.CheckFailed`` as before.
CheckFailed.__module__ = "resnet_arcface.checks"


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


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

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
