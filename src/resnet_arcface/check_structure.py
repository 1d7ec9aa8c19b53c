"""The structure rules of the exercise self-checks (:mod:`resnet_arcface.checks`).

Before running anything, a check compares the learner's module with the reference
submodule by submodule: names (they are state_dict keys the pretrained checkpoint
needs), module types where they matter (PReLU vs ReLU, BatchNorm2d vs BatchNorm1d),
parameter shapes and attributes (convolution bias, stride and padding; dropout
probability; BatchNorm eps and momentum). Each ``_rule_*`` function yields
:class:`_Finding` objects; :func:`_compare_structure` runs them all and raises
:class:`~resnet_arcface.checks.CheckFailed` on the first hard difference.

Called by :func:`resnet_arcface.check_engine._run_check`; nothing here is learner-facing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

# Absolute imports: the coursework grader loads this file afresh; the references are the installed package's.
from resnet_arcface.blocks import IRBlock
from resnet_arcface.se import SEBlock

if TYPE_CHECKING:  # annotations only: the engine imports this module, not the other way round
    from resnet_arcface.check_engine import _Case, _Ctx, _Spec

#: Fixed activations a learner may put where the reference has a PReLU; containers are not layers.
_RELU_LIKE = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.ELU, nn.GELU, nn.SiLU)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


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
