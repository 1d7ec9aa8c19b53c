"""The self-check engine behind :mod:`resnet_arcface.teach.exercises` (the ten "implement it yourself" exercises).

:func:`run_check` compares a learner's module (``check_ir_block(MyIRBlock)``) with the package's on a few
:class:`Case` s: structure (state_dict keys via :func:`~resnet_arcface.models.checkpoint.describe_mismatch`, each layer's
type and settings, plus the exercise's own rules and checks), then on the reference's randomised weights eval and
train outputs, gradients and buffers. :func:`run_function_check` compares a learner's function: outputs, then each argument's gradient. A
difference is named by reproducing the known :class:`Mistake` s on the reference; reusing the package's answer is
rejected. Failures raise :class:`CheckFailed`; success prints one line. What is particular to one component (its
mistakes, hints, wording, the network's initialisation) is data in its :class:`Exercise`; the engine keeps the
rules common to the book's modules (a PReLU replaced by a ReLU, a bias before BatchNorm, a shortcut never applied).
"""
from __future__ import annotations

import copy
import inspect
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..models.checkpoint import describe_mismatch

__all__ = ["CheckFailed", "Case", "Mistake", "Exercise", "WORDING", "difference", "matching_mistake", "reject_reuse",
           "validate", "randomise", "name_of", "summarise", "run_check", "run_function_check"]

SEED = 0  #: seeds every input, weight and dropout mask, so that the reference and the learner's see the same
#: Outputs must agree to ``rtol`` elementwise and ``atol * max|reference|``; gradients to ``GRAD_RTOL``.
RTOL, ATOL, GRAD_RTOL = 1e-4, 1e-5, 1e-3
#: The hint when a gradient is missing or differs although the outputs match.
DETACHED = "Is part of it detached (.detach(), .data, torch.no_grad()) or done outside autograd (.item(), numpy)?"


class CheckFailed(AssertionError):
    """A difference from the reference: ``check``, ``config`` (how the learner's object was called), ``problem``
    (one sentence), ``details`` (evidence) and ``hint``; the message holds them all."""

    def __init__(self, check: str, config: str, problem: str, hint: str = "", details: Sequence[str] = ()) -> None:
        self.check, self.config, self.problem, self.hint, self.details = check, config, problem, hint, tuple(details)
        lines = [f"{check} failed for {config}", f"  Problem: {problem}", *(f"  - {d}" for d in self.details)]
        super().__init__("\n".join(lines + ([f"  Hint: {hint}"] if hint else [])))


@dataclass(frozen=True)
class Mistake:
    """A known mistake, reproduced on the reference: ``forward(module, x)`` (modules) or ``forward(*args, **kw)``
    (functions); ``applies(module or args)``; ``train_only``: invisible in eval mode (where dropout sits)."""

    message: str
    forward: Callable[..., Any]
    applies: Callable[[Any], bool] = lambda m: True
    train_only: bool = False


@dataclass
class Case:
    """One configuration: its text, the input (a function's: ``(args, kwargs)``), and for modules the builders."""

    config: str
    make_input: Callable[[], Any]
    build_ref: Optional[Callable[[], Any]] = None
    build_got: Optional[Callable[[], Any]] = None
    train: bool = True  # also compare train mode (modules)
    grads: bool = True  # and gradients
    eval_batch: Optional[int] = None  # compare eval mode on the first samples only (saves time)
    finite_only: bool = False  # a function's edge case: outputs and gradients need only be finite


@dataclass
class Exercise:
    """One check: the reference (the answer, not to be reused), signature, mistakes, likely causes, hints by
    submodule (``"bn0"``) or topic (``"stride"``, ``"shape"``, ``"maps:conv1"``, ``"error:<text>"``,
    ``"grad:<argument>"``, ``"grad:nan"``), and for modules the component's own wording, rules and checks."""

    check: str
    reference: Any
    signature: str
    mistakes: Tuple[Mistake, ...] = ()
    causes: Tuple[str, ...] = ()
    hints: Dict[str, str] = field(default_factory=dict)
    after: Callable[[Tuple, Tuple], str] = lambda args, ref_args: ""  # a function's effect on its arguments
    root: str = ""  # how messages call the learner's whole module ("" -> its name)
    what: str = "structure, eval/train outputs and gradients"
    wording: Dict[str, Tuple[str, str]] = field(default_factory=dict)  # entries added to (or replacing) WORDING's
    rules: Tuple[Callable[..., Optional[Tuple[str, str]]], ...] = ()  # rule(ex, name, ref_sub, got_sub): a problem
    extra_check: Optional[Callable[..., None]] = None  # extra_check(ex, config, module), after the structure
    also: Tuple[Any, ...] = ()  # other package functions that compute the answer (another signature): reuse too

    @property
    def kind(self) -> str:
        return self.reference.__name__

    def fail(self, config: str, problem: str, hint: str = "", details: Sequence[str] = ()) -> NoReturn:
        raise CheckFailed(self.check, config, problem, hint, details) from None

    def not_implemented(self, config: str, label: str, where: str) -> NoReturn:
        """Fail because ``where`` (e.g. "its forward") still raises the stub's NotImplementedError."""
        self.fail(config, *(t.format(label=label, where=where) for t in WORDING["not_implemented"]))

    def passed(self, cases: int) -> None:
        """Print the one-line success message."""
        try:
            tick = "\u2713".encode(sys.stdout.encoding or "ascii") and "\u2713"
        except (UnicodeEncodeError, LookupError):
            tick = "OK"
        print(f"{self.check}: all {cases} configurations match the reference ({self.what}) {tick}")


#: Structural problems by the submodule concerned ({n}: its name, {p}: its parent's, {d}/{D}: the reference's);
#: an Exercise's ``wording`` adds ``missing:<name>``, ``missing:<parent>.`` and ``extra:<name>`` entries.
WORDING: Dict[str, Tuple[str, str]] = {
    "missing:": ("{n} missing: the reference has {d} named {n}", ""),
    "extra:prelu": ("{p} has two PReLU modules ({mine}) but the reference shares ONE {ref}", "Create one self.{ref} = "
                    "nn.PReLU() and call it twice: both uses share one learned slope, and the pretrained checkpoint "
                    "holds a single {n0}.weight."),
    "prelu": ("{kind} where the reference uses PReLU: {p} has {kind} but the reference has nn.PReLU() named {n}",
              "PReLU learns its negative slope (one value, initialised to 0.25) instead of zeroing negatives; its "
              "weight is the state_dict key {n}.weight that the pretrained checkpoint needs."),
    "bias": ("{n} {have} a bias; the reference uses bias=False because BatchNorm follows", "BatchNorm subtracts the "
             "mean and adds its own shift (beta), which makes a convolution bias redundant."),
    "padding": ("", "padding=1 keeps H and W at stride 1: H_out = (H + 2 * padding - 3) // stride + 1."),
    "not_implemented": ("{label} is not implemented yet: {where} raised NotImplementedError", "Replace `raise "
                        "NotImplementedError` in the exercise cell with your code, run that cell, then run this "
                        "check again."),
}
_RELU_LIKE = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.ELU, nn.GELU, nn.SiLU)
_NOT_SETTINGS = {"training", "inplace", "in_channels", "out_channels", "stride"}  # compared apart, or free


def summarise(exc: BaseException) -> str:
    """An exception in one line: its type and the first line of its message."""
    text = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def difference(got: Any, ref: torch.Tensor, rtol: float = RTOL) -> str:
    """'' when ``got`` is close to ``ref`` (:func:`torch.testing.assert_close`), else the evidence in one line."""
    if not isinstance(got, torch.Tensor) or got.shape != ref.shape:
        return f"shape {tuple(getattr(got, 'shape', ()))} instead of {tuple(ref.shape)}"
    scale = ref.detach().abs().max().item() if ref.numel() else 0.0
    try:
        torch.testing.assert_close(got.detach(), ref.detach(), rtol=rtol, atol=ATOL * max(scale, 1.0),
                                   check_dtype=False, check_device=False)
        return ""
    except AssertionError as err:
        lines = str(err).splitlines()
        return "; ".join(ln.strip() for ln in lines if ln.startswith(("Mismatched", "Greatest absolute"))) + \
            f" (reference values up to {scale:.3g})"


def name_of(obj: Any) -> str:
    """How messages call the learner's object: its ``__name__``, else its type's."""
    return getattr(obj, "__name__", type(obj).__name__)


def matching_mistake(mistakes: Sequence[Mistake], got: Any, reproduce: Callable[[Mistake], Any]) -> Optional[str]:
    """The message of the first mistake whose reproduction (``None``: it does not apply) equals ``got``."""
    for mistake in mistakes:
        try:
            torch.manual_seed(SEED + 1)
            with torch.no_grad():
                out = reproduce(mistake)
            if out is not None and not difference(got, out):
                return mistake.message
        except Exception:  # a mistake that cannot run on this configuration simply does not match
            pass
    return None


def _fmt(v: Any) -> str:
    return str(v[0]) if isinstance(v, tuple) and v and all(x == v[0] for x in v) else str(v)


def _describe(m: nn.Module) -> str:
    if isinstance(m, nn.Sequential):
        return "Sequential(" + ", ".join(map(_describe, m)) + ")"
    return f"{type(m).__name__}({m.num_features})" if isinstance(m, _BatchNorm) else repr(m).split("\n")[0]


# --- Modules: structure and initialisation --------------------------------------------------------------------------

def _structure(ex: Exercise, cfg: str, label: str, ref: nn.Module, got: nn.Module) -> List[Tuple[str, str]]:
    """Raise on the first structural difference; return the soft ones (parameterless modules missing)."""
    R, G, wording = dict(ref.named_modules()), dict(got.named_modules()), {**WORDING, **ex.wording}
    hard: List[Tuple[str, str]] = []
    soft: List[Tuple[str, str]] = []
    biased, strides = [], []

    def where(n: str) -> str:
        return n or ex.root or label

    def sib(n: str, kinds: Any) -> List[str]:
        return [g for g, m in G.items() if g and g.rpartition(".")[0] == n.rpartition(".")[0] and isinstance(m, kinds)]

    def word(key: str, n: str, **kw: Any) -> Tuple[str, str]:
        p = n.rpartition(".")[0]
        values = dict(n=n, p=where(p), d=_describe(R[n]) if n in R else "", D=_describe(R[p]) if p in R else "", **kw)
        return wording[key][0].format(**values), ex.hints.get(n.rpartition(".")[2]) or wording[key][1].format(**values)

    for n, rm in R.items():
        gm, leaf, parent = G.get(n), n.rpartition(".")[2], n.rpartition(".")[0]
        if isinstance(rm, nn.PReLU) and not isinstance(gm, nn.PReLU) and (
                isinstance(gm, _RELU_LIKE) or (gm is None and sib(n, _RELU_LIKE))):
            hard.append(word("prelu", n, kind=type(gm if gm is not None else G[sib(n, _RELU_LIKE)[0]]).__name__))
        elif gm is None and parent in G:  # (a missing parent is reported itself)
            key = next(k for k in (f"missing:{leaf}", f"missing:{parent.rpartition('.')[2]}.", "missing:")
                       if k in wording)
            problem, hint = word(key, n)
            if key == "missing:":
                problem, hint = problem + (f" ({ex.hints[leaf]})" if leaf in ex.hints else ""), ""
            renamed = [e for e in sib(n, type(rm)) if e not in R]
            hint = f"{hint} You have {renamed[0]}: if that is it, rename it to {leaf} (names are state_dict keys)." \
                .strip() if renamed else hint
            (hard if rm.state_dict() else soft).append((problem, hint))
        elif gm is not None and not isinstance(gm, type(rm)):
            if type(rm).__module__.startswith("torch.nn") and not isinstance(rm, (nn.Sequential, nn.ModuleList)):
                hint = "Return the nn.Conv2d itself." if not n and isinstance(rm, nn.Conv2d) else ""
                hard.append((f"{where(n)} is {type(gm).__name__} where the reference uses {type(rm).__name__}", hint))
        elif gm is not None and type(rm).__module__.startswith("torch.nn"):
            if isinstance(rm, nn.Conv2d):
                if (gm.in_channels, gm.out_channels) != (rm.in_channels, rm.out_channels):
                    hard.append((f"{where(n)} maps {gm.in_channels} -> {gm.out_channels} channels but the reference's"
                                 f" maps {rm.in_channels} -> {rm.out_channels}", ex.hints.get(f"maps:{leaf}", "")))
                strides += [(n, gm.stride[0], rm.stride[0])] if gm.stride != rm.stride else []
                biased += [where(n)] if gm.bias is not None and rm.bias is None else []
            hard += [p for p in (rule(ex, n, rm, gm) for rule in ex.rules) if p]
            for s, v in vars(rm).items():  # every setting: kernel_size, padding, eps, momentum, p, ...
                if s[0] != "_" and s not in _NOT_SETTINGS and _fmt(getattr(gm, s, None)) != _fmt(v):
                    hint = WORDING["padding"][1] if s == "padding" else ex.hints.get(leaf, "")
                    hard.append((f"{where(n)}: {s} is {_fmt(getattr(gm, s, None))} but should be {_fmt(v)}", hint))
    if biased:
        have = "has" if len(biased) == 1 else "have"
        hard.insert(0, tuple(t.format(n=", ".join(biased), have=have) for t in WORDING["bias"]))
    big, small = [n for n, g, r in strides if g > r], [n for n, g, r in strides if g < r]
    if big and small:
        hard.append((f"the stride is on {big[0].rpartition('.')[2]} but the reference puts it on "
                     f"{small[0].rpartition('.')[2]}", ex.hints.get("stride", "")))
    else:
        hard += [(f"{'wrong downsample: ' if 'downsample' in n else ''}{where(n)}: stride is {g} but should be {r}",
                  ex.hints.get("stride", "")) for n, g, r in strides]
    for n, gm in G.items():  # extra submodules with parameters
        parent, leaf = n.rpartition(".")[0], n.rpartition(".")[2]
        prelus = [r for r in R if r and r.rpartition(".")[0] == parent and isinstance(R[r], nn.PReLU)]
        if n not in R and parent in R and isinstance(gm, nn.PReLU) and prelus:
            hard.append(word("extra:prelu", n, mine=", ".join(g.rpartition(".")[2] for g in sib(n, nn.PReLU)),
                             ref=prelus[0].rpartition(".")[2], n0=prelus[0]))
        elif n not in R and parent in R and f"extra:{leaf}" in wording:
            hard.append(word(f"extra:{leaf}", n))
    mismatch = describe_mismatch(got, ref.state_dict())
    if not hard and mismatch:
        hard.append(("the reference's weights, as a checkpoint, do not fit your module: " + mismatch.replace("\n", " "),
                     "Names and shapes must match exactly so that the pretrained checkpoint loads with strict=True."))
    if hard:
        counts = [sum(p.numel() for p in m.parameters()) for m in (got, ref)]
        details = [f"also: {p}" for p, _ in hard[1:4]]
        details += [f"parameters: yours {counts[0]:,}, the reference's {counts[1]:,}"] if counts[0] != counts[1] else []
        ex.fail(cfg, hard[0][0], hard[0][1], details)
    return soft


# --- Modules: behaviour on the same weights ------------------------------------------------------------------------

def randomise(module: nn.Module) -> Dict[str, torch.Tensor]:
    """Random BatchNorm statistics and affines, PReLU slopes and Linear biases (a fresh BatchNorm is the identity
    in eval mode: a missing one would go unnoticed); returns a copy of the state_dict."""
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


def _run(module: nn.Module, x: torch.Tensor, train: bool, grad: bool) -> Dict[str, Any]:
    """Forward a copy of ``x`` (RNG seeded: both draw the same dropout mask), counting each submodule's calls;
    with ``grad``, backpropagate ``(output * P).sum()`` for a fixed random ``P``."""
    run: Dict[str, Any] = {"out": None, "error": None, "stage": "forward", "calls": {}, "grads": {}}
    count = (lambda name: lambda *_: run["calls"].__setitem__(name, run["calls"].get(name, 0) + 1))
    handles = [m.register_forward_hook(count(n)) for n, m in module.named_modules() if n]
    try:
        torch.manual_seed(SEED + 1)
        with torch.set_grad_enabled(grad):
            out = run["out"] = module.train(train)(x.clone())
        if grad and isinstance(out, torch.Tensor):
            run["stage"] = "backward"
            module.zero_grad(set_to_none=True)
            (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(SEED + 3))).sum().backward()
            run["grads"] = {n: p.grad for n, p in module.named_parameters()}
    except Exception as exc:  # the learner's code may raise anything; it is reported, not re-raised
        run["error"] = exc
    finally:
        for h in handles:
            h.remove()
    return run


def _behaviour(ex: Exercise, case: Case, label: str, ref: nn.Module, got: nn.Module, soft: List[Tuple[str, str]]
               ) -> None:
    """Load the reference's randomised weights into the learner's module and compare what the two compute."""
    state, cfg = randomise(ref), case.config
    try:
        got.load_state_dict(state, strict=True)
    except Exception as exc:
        ex.fail(cfg, f"the reference's weights do not load into yours: {summarise(exc)}")
    names, x = [n for n, _ in got.named_modules() if n], case.make_input()
    for train in ((False, True) if case.train else (False,)):
        xm, mode = (x if train or case.eval_batch is None else x[:case.eval_batch]), ("train" if train else "eval")
        r, g = _run(ref, xm, train, train and case.grads), _run(got, xm, train, train and case.grads)
        exc, stage = g["error"], g["stage"]
        if isinstance(exc, NotImplementedError):
            if 'missing the required "forward"' in str(exc):
                ex.fail(cfg, f"{label} has no forward method", "Define forward(self, x) in the class (check its "
                        "indentation).")
            ex.not_implemented(cfg, label, f"its {stage}")
        if exc is not None:
            details = [f"raised in {mode} mode during the {stage} pass"]
            skipped = [n for n in r["calls"] if n in names and n not in g["calls"] and n.endswith("downsample")]
            ex.fail(cfg, f"missing downsample: {skipped[0]} is never applied, and the {stage} raised "
                    f"{summarise(exc)}" if skipped else f"your {stage} raised {summarise(exc)}", "Apply the "
                    "downsample to x (the block's input) to form the identity before the addition." if skipped else
                    "An in-place operation modified a tensor autograd still needs (e.g. x += ... on the block's "
                    "input)? Use out = out + identity." if stage == "backward" else "A shape mismatch inside forward?"
                    " Print each step's shape and compare with the chapter's walk-through.", details)
        if not isinstance(g["out"], torch.Tensor):
            ex.fail(cfg, f"forward returned {type(g['out']).__name__}, not a tensor", "End forward with `return out`.")
        diff = difference(g["out"], r["out"])
        if diff:
            details = [f"the {mode}-mode output differs: {diff}"] + [
                f"{n} is called {g['calls'][n]} time(s) in your forward, {c} in the reference's"
                for n, c in r["calls"].items() if n in g["calls"] and g["calls"][n] != c][:3]

            def reproduce(mistake: Mistake) -> Any:
                if mistake.applies(ref) and (train or not mistake.train_only):
                    model = copy.deepcopy(ref)
                    model.load_state_dict(state)
                    return mistake.forward(model.train(train), xm.clone())
            named = matching_mistake(ex.mistakes, g["out"], reproduce)
            never = [n for n in r["calls"] if n not in g["calls"] and n in names]
            if named or never:
                role = ex.hints.get(never[0].rpartition(".")[2], "") if never else ""
                soft = [(named or f"{never[0]} is defined but never called in forward" + (f" ({role})" if role else ""),
                         "")]
            elif g["out"].shape != r["out"].shape:
                soft = soft or [(f"the output has shape {tuple(g['out'].shape)} but the reference's has "
                                 f"{tuple(r['out'].shape)}", ex.hints.get("shape", ""))]
            ex.fail(cfg, *(soft or [(f"the {mode}-mode output differs from the reference's although the structure "
                                     "matches", f"Likely causes in {ex.kind}: " + "; ".join(ex.causes) + ".")])[0],
                    details)
        buffers = dict(got.named_buffers())
        for n, b in (ref.named_buffers() if train else ()):
            if b.is_floating_point() and n in buffers and difference(buffers[n], b):
                ex.fail(cfg, f"{n} differs after one train-mode forward ({difference(buffers[n], b)})", "BatchNorm "
                        "updates its running statistics from what it normalises in train mode; is it applied to the "
                        "same tensor, once?")
        for n, rg in r["grads"].items():
            mine = g["grads"].get(n)
            if rg is not None and (mine is None or difference(mine, rg, GRAD_RTOL)):
                ex.fail(cfg, f"no gradient reaches {n} although the outputs match" if mine is None else f"the "
                        f"gradient of {n} differs although the outputs match ({difference(mine, rg, GRAD_RTOL)})",
                        DETACHED + " Or an in-place operation changes a tensor autograd still needs?")


# --- The engine: validation, reuse, the loop over cases -------------------------------------------------------------

def reject_reuse(ex: Exercise, cfg: str, obj: Any, run: Callable[[], Any]) -> None:
    """Fail if ``obj`` is, subclasses or (while ``run`` runs) calls the package's own answer."""
    ref, kind, label, seen = ex.reference, ex.kind, name_of(obj), []
    hint = (f"Write your own from torch primitives, as the chapter builds it; the package's {kind} is what the "
            f"check compares with, so using it proves nothing.")
    if obj is ref:
        ex.fail(cfg, f"{label} is the package's own {kind}, not your implementation", hint)
    if isinstance(obj, type) and isinstance(ref, type) and issubclass(obj, ref):
        ex.fail(cfg, f"{label} is a subclass of the package's {kind}, not your own implementation", hint)
    for other in ex.also:
        if obj is other:
            ex.fail(cfg, f"{label} is the package's {other.__module__}.{other.__name__}, not your implementation", hint)
    members = [*(vars(ref).values() if isinstance(ref, type) else [ref]), *ex.also]
    codes = {inspect.unwrap(f).__code__: f for f in members if hasattr(inspect.unwrap(f), "__code__")}
    previous = sys.getprofile()
    sys.setprofile(lambda frame, event, _: seen.append(codes[frame.f_code])
                   if event == "call" and frame.f_code in codes else None)
    try:
        with torch.random.fork_rng(devices=[]):
            run()
    except Exception:
        pass
    finally:
        sys.setprofile(previous)
    if seen:
        where = (f"{kind}.{seen[0].__name__}" if seen[0] not in ex.also
                 else f"{seen[0].__module__}.{seen[0].__name__}")
        ex.fail(cfg, f"{label} calls the package's own {kind} ({where}): it wraps the answer instead of "
                "implementing it", hint)


def validate(ex: Exercise, obj: Any, want_class: bool) -> None:
    """Reject objects that cannot be the exercise's answer (a class if ``want_class``, else a function)."""
    label = name_of(obj)
    if obj is None:
        ex.fail(label, "got None instead of your implementation", "Run the exercise cell that defines it, then the "
                "check.")
    if not want_class and not callable(obj):
        ex.fail(label, f"expected a function {ex.signature}, got a {type(obj).__name__}")
    if want_class and isinstance(obj, nn.Module):
        ex.fail(label, f"got an instance of {label}; pass the class itself", f"Call {ex.check}({label}), not "
                f"{ex.check}({label}(...)).")
    if want_class and not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        ex.fail(label, f"expected a subclass of nn.Module with constructor {ex.signature}, got {obj!r}")


def run_check(ex: Exercise, obj: Any, cases: Sequence[Case], want_class: bool = True) -> None:
    """Compare the learner's module builder ``obj`` with ``ex.reference`` on every case: structure (and
    ``ex.extra_check``), behaviour; then reuse. Raises :class:`CheckFailed` on the first difference;
    prints one line on success. The caller's random-number state is left untouched."""
    label = name_of(obj)
    validate(ex, obj, want_class)
    with torch.random.fork_rng(devices=[]):
        for case in cases:
            cfg, ref = case.config, (torch.manual_seed(SEED), case.build_ref())[1]
            torch.manual_seed(SEED)
            try:
                got = case.build_got()
            except NotImplementedError:
                ex.not_implemented(cfg, label, f"calling {cfg}")
            except Exception as exc:
                ex.fail(cfg, f"calling {cfg} raised {summarise(exc)}", "Call super().__init__() first in __init__."
                        if "Module.__init__() call" in str(exc) else f"It must accept {ex.signature}.")
            if not isinstance(got, nn.Module):
                ex.fail(cfg, f"{cfg} returned None" if got is None else f"{cfg} returned a {type(got).__name__}, not "
                        "an nn.Module", "Did you forget `return`?" if got is None else "")
            try:
                soft = _structure(ex, cfg, label, ref, got)
                ex.extra_check(ex, cfg, got) if ex.extra_check else None
            except CheckFailed:
                raise
            except Exception as exc:  # an unusual module the rules cannot inspect
                ex.fail(cfg, f"could not inspect your module's structure: {summarise(exc)}", "Build it from "
                        "standard torch.nn modules registered as attributes, as the reference does.")
            _behaviour(ex, case, label, ref, got, soft)
    first = cases[0]
    reject_reuse(ex, first.config, obj, lambda: first.build_got().eval()(first.make_input()[:1]) if want_class
                 else first.build_got())
    ex.passed(len(cases))


# --- Functions: outputs and gradients --------------------------------------------------------------------------------

def run_function_check(ex: Exercise, fn: Callable[..., Any], cases: Sequence[Case],
                       convert: Callable[[Any, Tuple], Any] = lambda out, args: out) -> None:
    """Compare the learner's function ``fn`` with ``ex.reference`` on every case: outputs (through ``convert``),
    then the gradient of every argument that requires one. Raises :class:`CheckFailed`; prints one line on
    success."""
    label, names = name_of(fn), list(inspect.signature(ex.reference).parameters)
    validate(ex, fn, want_class=False)
    with torch.random.fork_rng(devices=[]):
        for case in cases:
            cfg, (ra, rk), (ga, gk) = case.config, case.make_input(), case.make_input()
            torch.manual_seed(SEED + 1)
            ref = convert(ex.reference(*ra, **rk), ra)
            try:
                torch.manual_seed(SEED + 1)
                got = convert(fn(*ga, **gk), ga)
            except NotImplementedError:
                ex.not_implemented(cfg, label, "it")
            except Exception as exc:
                known = [v for k, v in ex.hints.items() if k.startswith("error:") and k[6:] in str(exc)]
                ex.fail(cfg, known[0] if known else f"your function raised {summarise(exc)}",
                        f"It must accept {ex.signature}.", [f"raised {summarise(exc)}"] if known else [])
            if ex.after(ga, ra):
                ex.fail(cfg, ex.after(ga, ra))
            if not isinstance(got, torch.Tensor):
                ex.fail(cfg, f"{cfg} returned {type(got).__name__}, not what {ex.signature} returns",
                        "Did you forget `return`?" if got is None else "")
            diff = difference(got, ref)
            if diff and not case.finite_only:
                def reproduce(mistake: Mistake) -> Any:
                    ma, mk = case.make_input()
                    return convert(mistake.forward(*ma, **mk), ma) if mistake.applies(ma) else None
                ex.fail(cfg, matching_mistake(ex.mistakes, got, reproduce) or "the output differs from the "
                        "reference's", "Likely causes: " + "; ".join(ex.causes) + ".", [diff])
            if not torch.isfinite(got).all():
                ex.fail(cfg, "the output is not finite (NaN or inf)", ex.hints.get("grad:nan", ""))
            if case.grads and got.requires_grad:
                proj = torch.randn(ref.shape, generator=torch.Generator().manual_seed(SEED + 3), dtype=ref.dtype)
                (ref * proj).sum().backward() if ref.requires_grad else None
                (got * proj.to(got.dtype)).sum().backward()
                for name, r, g in zip(names, ra, ga):
                    if not (isinstance(g, torch.Tensor) and g.requires_grad):
                        continue
                    rg = r.grad if r.grad is not None and r.grad.any() else None
                    if g.grad is not None and not torch.isfinite(g.grad).all():
                        ex.fail(cfg, ex.hints.get("grad:nan", f"the gradient of {name} is not finite (NaN or inf)"))
                    if rg is None and g.grad is not None and g.grad.any():
                        ex.fail(cfg, ex.hints.get(f"grad:{name}", f"a gradient flows into {name}; the reference's "
                                                                  "does not"))
                    if rg is not None and (g.grad is None or not case.finite_only and difference(g.grad, rg,
                                                                                                 GRAD_RTOL)):
                        ex.fail(cfg, f"no gradient reaches {name}" if g.grad is None else f"the gradient of {name} "
                                f"differs ({difference(g.grad, rg, GRAD_RTOL)}) although the outputs match", DETACHED)
    first = cases[0]
    reject_reuse(ex, first.config, fn, lambda: fn(*first.make_input()[0], **first.make_input()[1]))
    ex.passed(len(cases))


