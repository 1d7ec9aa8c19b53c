"""What defines a training run: :class:`TrainConfig`, one dataclass for :func:`~resnet_arcface.fit`,
``arcface-train``, ``--resume`` and ``metrics.json``.

Every knob of :func:`~resnet_arcface.fit` that changes the numbers it produces is a field here, with the
defaults that train at this package's scale (hundreds to thousands of identities). The command line maps
its flags onto the fields, a checkpoint stores the config it was trained with (``TrainConfig.to_dict``),
and a resumed run is compared with it field by field (:meth:`TrainConfig.differences`).
"""
import dataclasses
import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .losses import LOSSES

#: Optimizers :func:`~resnet_arcface.fit` builds, with their default learning rate and weight decay.
#: SGD with momentum 0.9 is InsightFace's choice (lr 0.1, weight decay 5e-4) for large data sets; AdamW at
#: the shipped recipe's lr 2e-3 (:data:`resnet_arcface.learn.recipe.RECIPE`) needs less tuning at this scale.
OPTIMIZERS: Dict[str, Tuple[float, float]] = {"sgd": (0.1, 5e-4), "adamw": (2e-3, 5e-2)}

# Why s = None means AdaCos's scale: ArcFace (m 0.5) on 200 synthetic identities x 10 images (seed 0), the small
# network, 6 epochs of AdamW at lr 2e-3, batch 64, flips, one CPU thread; held-out TAR at FAR 1e-3 (1e-2) on
# 100 identities x 6 of seed 1000, two training seeds:
#   AdaCos 7.49:  0.313, 0.382 (0.665, 0.697)
#   fixed 16:     0.375, 0.357 (0.703, 0.715)   (the old arcface-train default)
#   recipe's 32:  0.295, 0.319 (0.647, 0.643)
# AdaCos beats the recipe's 32 at this scale; a fixed 16 is as good here (within the seeds' spread at 1e-3) but
# does not follow the number of identities, which AdaCos does (10.7 for 2,000, 16 would suit about 80,000).

#: How many stages ``freeze_stages`` can freeze, in order: 1 the stem (``conv1``, ``bn1``, ``prelu``),
#: 2..5 also ``layer1``..``layer4``, 6 also the output layers (``bn4``, ``fc5``, ``bn5``): the whole network,
#: so only the head trains (a "linear probe" of fixed embeddings).
MAX_FREEZE_STAGES = 6

#: Defaults of ``arcface-train --init`` (fine-tuning trained weights), applied unless a flag overrides them.
#: Educated guesses, to be replaced by measured values: a backbone learning rate ten times below the new
#: head's, so the first large head gradients do not wreck the trained features, and one epoch of head
#: warm-up, so the head's random class weights are aligned with the embeddings before the backbone moves.
FINETUNE: Dict[str, Any] = dict(backbone_lr_scale=0.1, head_warmup_epochs=1)

#: Fields that do not change the numbers a run produces: a resumed run may change them.
NOT_COMPARED = ("workers",)


def adacos_scale(num_classes: int) -> float:
    """AdaCos's fixed scale ``sqrt(2) * ln(C - 1)`` for ``C`` classes (Zhang et al. 2019), at least 1.

    The scale that keeps the softmax neither saturated nor flat when cosines are spread like random
    directions: about 7.5 for 200 identities, 10.7 for 2,000; InsightFace's 64 is tuned for about 85,000.
    Below 3 classes the formula gives 0 or less, so the result is floored at 1.
    """
    return max(1.0, math.sqrt(2.0) * math.log(max(num_classes - 1, 1)))


def _check_number(name: str, value: object, *, integer: bool = False, low: float = 0.0, strict: bool = True,
                  optional: bool = False) -> None:
    """Raise a ``ValueError`` naming the field when ``value`` is not a finite number above ``low``."""
    if value is None and optional:
        return
    kinds = (int,) if integer else (int, float)
    bad = isinstance(value, bool) or not isinstance(value, kinds)
    bad = bad or not math.isfinite(value) or (value <= low if strict else value < low)  # type: ignore[arg-type]
    if bad:
        kind = "an int" if integer else "a finite number"
        relation = ">" if strict else ">="
        raise ValueError(f"TrainConfig: {name} must be {kind} {relation} {low:g}{' or None' if optional else ''}, "
                         f"got {value!r}.")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines how :func:`~resnet_arcface.fit` trains (frozen: change it with
    :func:`dataclasses.replace`).

    Defaults train the small network on a few hundred synthetic identities in a few epochs: AdamW at the
    shipped recipe's learning rate and batch size, and for ArcFace and CosFace AdaCos's scale
    ``sqrt(2) * ln(C - 1)`` (see ``s``). ``None`` fields are filled in by :meth:`resolved` once the number of
    identities is known; checkpoints and ``metrics.json`` record the resolved config.

    Args:
        loss: ``"arcface"``, ``"cosface"`` or ``"softmax"`` (:data:`~resnet_arcface.learn.losses.LOSSES`).
        epochs: Total epochs; the learning-rate schedule spans them (a resumed run continues up to this number).
        batch_size: Images per step (at least 2: BatchNorm cannot normalise one image in train mode).
        optimizer: ``"adamw"`` or ``"sgd"`` (momentum 0.9); see :data:`OPTIMIZERS`.
        lr: Peak learning rate of the head (and of the backbone, times ``backbone_lr_scale``); ``None``: the
            optimizer's default from :data:`OPTIMIZERS`.
        weight_decay: ``None``: the optimizer's default. It never applies to 1-D parameters (BatchNorm,
            PReLU slopes, biases), as in timm: decay would pull PReLU slopes toward 0 (a ReLU) and BatchNorm
            scales toward 0, which normalisation makes meaningless anyway.
        s: The head's scale. ``None``: :func:`adacos_scale` of the number of identities (about 7.5 for 200).
            InsightFace's 64 is made for tens of thousands of identities; with a few hundred, ArcFace at
            s = 64 stays near chance (see the measurement below :data:`OPTIMIZERS`).
        m: The head's margin; ``None``: the loss's usual one (ArcFace 0.5 rad, CosFace 0.35).
        warmup: Fraction of all steps over which the learning rate rises linearly from 0, before its cosine
            decay to 0 at the last step.
        augment: Name of the batch augmentation in :data:`resnet_arcface.data.augment.AUGMENTATIONS`
            (``"flip"``: random left-right mirror; ``"none"``).
        seed: Seeds the head's initialisation, the batch order, the augmentation and dropout, per epoch, so
            a resumed run sees exactly the batches an uninterrupted one would.
        workers: DataLoader worker processes (0: read batches in the training process). Does not change the
            results, so ``--resume`` may change it.
        backbone_lr_scale: The network's learning rate is ``backbone_lr_scale * lr`` (the head's is ``lr``):
            below 1 when fine-tuning trained weights with a new head.
        freeze_stages: How many stages, from the input, keep their weights: 0 none, 1 the stem (``conv1``,
            ``bn1``, ``prelu``), 2 also ``layer1``, ... 5 also ``layer4``, 6 the whole network (only the head
            trains). Frozen parameters get ``requires_grad=False`` during :func:`~resnet_arcface.fit` and their
            BatchNorm layers stay in eval mode (their running statistics do not move).
        head_warmup_epochs: For the first this many epochs only the head trains: the network runs in eval mode
            without gradients, as if fully frozen. Must be below ``epochs``.
    """

    loss: str = "arcface"
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: Optional[float] = None
    weight_decay: Optional[float] = None
    s: Optional[float] = None
    m: Optional[float] = None
    warmup: float = 0.05
    augment: str = "flip"
    seed: int = 0
    workers: int = 0
    backbone_lr_scale: float = 1.0
    freeze_stages: int = 0
    head_warmup_epochs: int = 0

    def __post_init__(self) -> None:
        from ..data.augment import AUGMENTATIONS  # here, not at import: data.augment may grow heavier

        for name, choices in (("loss", LOSSES), ("optimizer", OPTIMIZERS), ("augment", AUGMENTATIONS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"TrainConfig: unknown {name} {getattr(self, name)!r}; expected one of "
                                 f"{sorted(choices)}.")
        _check_number("epochs", self.epochs, integer=True)
        _check_number("batch_size", self.batch_size, integer=True, low=1)
        _check_number("lr", self.lr, optional=True)
        _check_number("weight_decay", self.weight_decay, strict=False, optional=True)
        _check_number("s", self.s, optional=True)
        _check_number("m", self.m, strict=False, optional=True)
        _check_number("warmup", self.warmup, strict=False)
        _check_number("seed", self.seed, integer=True, strict=False)
        _check_number("workers", self.workers, integer=True, strict=False)
        _check_number("backbone_lr_scale", self.backbone_lr_scale, strict=False)
        _check_number("freeze_stages", self.freeze_stages, integer=True, strict=False)
        _check_number("head_warmup_epochs", self.head_warmup_epochs, integer=True, strict=False)
        if self.loss == "softmax" and (self.s is not None or self.m is not None):
            raise ValueError("TrainConfig: the softmax loss has no scale or margin; leave s and m None, or choose "
                             "loss='arcface' or 'cosface'.")
        if self.loss == "arcface" and self.m is not None and self.m >= math.pi / 2:
            raise ValueError(f"TrainConfig: ArcFace's margin m is an angle in radians below pi/2, got {self.m}; "
                             f"try 0.5.")
        if self.warmup >= 1:
            raise ValueError(f"TrainConfig: warmup is a fraction of all steps in [0, 1), got {self.warmup}.")
        if self.freeze_stages > MAX_FREEZE_STAGES:
            raise ValueError(f"TrainConfig: freeze_stages counts stages 0..{MAX_FREEZE_STAGES} (stem, layer1..4, "
                             f"output), got {self.freeze_stages}.")
        if self.head_warmup_epochs >= self.epochs:
            raise ValueError(f"TrainConfig: head_warmup_epochs ({self.head_warmup_epochs}) must be below epochs "
                             f"({self.epochs}), or the network never trains; to train only the head, set "
                             f"freeze_stages={MAX_FREEZE_STAGES}.")

    def resolved(self, num_classes: int) -> "TrainConfig":
        """This config with every ``None`` default filled in for a head over ``num_classes`` identities."""
        default_lr, default_wd = OPTIMIZERS[self.optimizer]
        s, m = self.s, self.m
        if self.loss != "softmax":
            s = adacos_scale(num_classes) if s is None else s
            m = LOSSES[self.loss][1] if m is None else m
        return dataclasses.replace(self, lr=default_lr if self.lr is None else self.lr,
                                   weight_decay=default_wd if self.weight_decay is None else self.weight_decay,
                                   s=s, m=m)

    def to_dict(self) -> Dict[str, Any]:
        """The fields as a JSON-ready dict (what checkpoints and ``metrics.json`` store)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> "TrainConfig":
        """The config :meth:`to_dict` wrote; unknown keys are a ``ValueError`` (a newer or foreign file)."""
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"TrainConfig: unknown fields {unknown}; expected those of TrainConfig.")
        return cls(**fields)

    def differences(self, other: "TrainConfig", ignore: Tuple[str, ...] = NOT_COMPARED) -> List[str]:
        """Names of the fields whose values differ between ``self`` and ``other`` (``ignore`` left out)."""
        return [f.name for f in dataclasses.fields(self)
                if f.name not in ignore and getattr(self, f.name) != getattr(other, f.name)]
