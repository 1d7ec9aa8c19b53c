"""Train an embedding network with a margin loss: :func:`fit`.

The network maps a face to an embedding; a :class:`~resnet_arcface.learn.losses.MarginHead` classifies the
embedding over the *training* identities and its loss shapes the embedding space. After training the head
is discarded and the embedding is judged on identities it never saw (:mod:`resnet_arcface.eval.verify`).
What defines a run is a :class:`~resnet_arcface.learn.config.TrainConfig`; the command-line front end is
:mod:`resnet_arcface.cli.train` (``arcface-train``).
"""
import dataclasses
import math
import time
from contextlib import nullcontext
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, default_collate

from ..data.augment import AUGMENTATIONS
from ..data.transforms import preprocess
from ..device import pick_device
from ..eval.verify import evaluate
from .config import MAX_FREEZE_STAGES, OPTIMIZERS, TrainConfig
from .losses import MarginHead

__all__ = ["fit", "TrainConfig", "OPTIMIZERS", "make_sampler", "EpochShuffle", "STAGES"]

History = Dict[str, List[Any]]

#: The network's stages from the input, as attribute names: what ``TrainConfig.freeze_stages`` freezes,
#: first ``freeze_stages`` of them.
STAGES: Tuple[Tuple[str, ...], ...] = (("conv1", "bn1", "prelu"), ("layer1",), ("layer2",), ("layer3",),
                                       ("layer4",), ("bn4", "dropout", "fc5", "bn5"))
assert len(STAGES) == MAX_FREEZE_STAGES


def _epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's randomness (batch order, augmentation, dropout): a function of the run's seed
    and the epoch only, so a resumed run draws what an uninterrupted one would."""
    return seed * 1_000_003 + epoch


class EpochShuffle(Sampler):
    """Every index of a data set once per epoch, in an order seeded by ``seed`` and the epoch.

    It has :class:`torch.utils.data.DistributedSampler`'s interface (``set_epoch`` before each epoch), so
    either can feed :func:`fit` (see :func:`make_sampler`).
    """

    def __init__(self, length: int, seed: int = 0) -> None:
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.length, generator=generator).tolist())

    def __len__(self) -> int:
        return self.length


def make_sampler(dataset: Dataset, seed: int) -> Sampler:
    """The sampler :func:`fit` draws training items with: each item once per epoch, shuffled from ``seed``.

    One function, so that a distributed run can return ``DistributedSampler(dataset, seed=seed,
    drop_last=True)`` here instead. Whatever it returns must have ``set_epoch(epoch)``, which :func:`fit`
    calls before every epoch.
    """
    return EpochShuffle(len(dataset), seed)  # type: ignore[arg-type]


class _TensorFaces(Dataset):
    """``(images, labels)`` tensors as a Dataset whose batches are one fancy-indexing each (``__getitems__``),
    not ``batch_size`` separate items stacked: as fast as indexing the tensors directly."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


def _whole_batch(batch: Tuple[torch.Tensor, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """The DataLoader's collate function for :class:`_TensorFaces`: its batches come out already stacked."""
    return batch


def _as_dataset(images: Union[torch.Tensor, Dataset], labels: Optional[torch.Tensor]) -> Tuple[Dataset, bool]:
    """The training data as a Dataset, checked; and whether its pixels still need checking batch by batch.

    Tensors are checked whole, before training: shape, dtype, and that every pixel is finite. A Dataset's
    images are read lazily, so they are checked as each batch arrives; its ``labels`` are checked now.
    """
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or not images.is_floating_point():
            raise ValueError(f"fit: images must be a float tensor (N, C, H, W) in [0, 1], got "
                             f"{images.dtype} of shape {tuple(images.shape)}.")
        if not isinstance(labels, torch.Tensor) or labels.shape != (len(images),) or labels.is_floating_point():
            got = (f"{labels.dtype} of shape {tuple(labels.shape)}" if isinstance(labels, torch.Tensor)
                   else type(labels).__name__)
            raise ValueError(f"fit: labels must be an integer tensor (N,) with N = {len(images)}, one identity per "
                             f"image; got {got}.")
        bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
        if bad:
            raise ValueError(f"fit: {bad} of the {len(images)} images hold NaN or infinite pixels; fix or drop them "
                             f"(e.g. images[torch.isfinite(images).flatten(1).all(1)]).")
        return _TensorFaces(images, labels), False
    if not isinstance(images, Dataset):
        raise ValueError(f"fit: expected images and labels as tensors, or a torch.utils.data.Dataset, got "
                         f"{type(images).__name__}.")
    if labels is not None:
        raise ValueError("fit: a Dataset carries its labels (its `labels` attribute); do not pass labels too.")
    data_labels = getattr(images, "labels", None)
    if (not isinstance(data_labels, torch.Tensor) or data_labels.dim() != 1 or data_labels.is_floating_point()
            or len(data_labels) != len(images)):  # type: ignore[arg-type]
        raise ValueError(f"fit: a Dataset needs a `labels` attribute, an integer tensor with one label per item "
                         f"({len(images)}); {type(images).__name__} has "  # type: ignore[arg-type]
                         f"{type(data_labels).__name__ if data_labels is None else tuple(getattr(data_labels, 'shape', ()))}.")
    return images, True


def _config(config: Optional[TrainConfig], overrides: Mapping[str, Any]) -> TrainConfig:
    """``config`` (default: ``TrainConfig()``) with ``overrides`` (fields given as keywords to :func:`fit`)."""
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"fit: config must be a TrainConfig, got {type(config).__name__}.")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        hint = " (flip=... is now augment='flip' or 'none')" if "flip" in unknown else ""
        raise TypeError(f"fit() got unexpected keyword arguments {unknown}{hint}; TrainConfig's fields are "
                        f"{sorted(fields)}.")
    return dataclasses.replace(config or TrainConfig(), **overrides)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up from 0 over ``warmup`` steps, then a cosine decay to 0 at ``total``.

    Warm-up matters for margin losses: at initialisation every target angle is near 90°, the margin
    makes the loss large, and full-size steps then can throw BatchNorm statistics and class weights far off.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _schedule(config: TrainConfig, steps_per_epoch: int, first_epoch: int) -> Dict[str, int]:
    """The learning-rate schedule's length: warm-up and cosine over epochs ``first_epoch + 1 .. config.epochs``
    (``first_epoch`` is 0, or the epoch a warm restart began after). Saved in every checkpoint."""
    total = steps_per_epoch * (config.epochs - first_epoch)
    return {"epochs": config.epochs, "first_epoch": first_epoch, "steps_per_epoch": steps_per_epoch,
            "total_steps": total, "warmup_steps": max(1, round(config.warmup * total))}


def _frozen_modules(model: nn.Module, stages: int) -> List[nn.Module]:
    """The modules of the first ``stages`` of :data:`STAGES` (a ``ValueError`` if the model lacks them)."""
    names = [name for stage in STAGES[:stages] for name in stage]
    missing = [name for name in names if not isinstance(getattr(model, name, None), nn.Module)]
    if missing:
        raise ValueError(f"fit: freeze_stages={stages} needs a ResNetArcFace-like model with {names}; "
                         f"{type(model).__name__} lacks {missing}.")
    return [getattr(model, name) for name in names]


def _param_groups(model: nn.Module, head: MarginHead, config: TrainConfig) -> List[Dict[str, Any]]:
    """The optimizer's parameter groups: backbone and head, each with and without weight decay.

    The backbone's learning rate is ``backbone_lr_scale`` times the head's. Weight decay skips 1-D parameters
    (BatchNorm weights and biases, PReLU slopes, biases), as timm does: decaying a PReLU slope pulls it toward
    a ReLU, and a BatchNorm scale's size is meaningless to the normalisation that follows. Frozen parameters
    (``requires_grad`` False) are left out.
    """
    assert config.lr is not None and config.weight_decay is not None, "resolve the config first"
    groups = []
    for part, module, lr in (("backbone", model, config.lr * config.backbone_lr_scale), ("head", head, config.lr)):
        params = [p for p in module.parameters() if p.requires_grad]
        for kind, chosen, decay in (("decay", [p for p in params if p.dim() > 1], config.weight_decay),
                                    ("no_decay", [p for p in params if p.dim() <= 1], 0.0)):
            if chosen:
                groups.append({"params": chosen, "lr": lr, "weight_decay": decay, "name": f"{part}.{kind}"})
    return groups


def _optimizer(groups: List[Dict[str, Any]], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=0.9)
    return torch.optim.AdamW(groups, lr=groups[0]["lr"])


def _scheduler(opt: torch.optim.Optimizer, schedule: Mapping[str, int]) -> torch.optim.lr_scheduler.LambdaLR:
    total, warmup = schedule["total_steps"], schedule["warmup_steps"]
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda k: _lr_factor(k, total, warmup))


def _check_resume(resume: Mapping[str, Any], config: TrainConfig, steps_per_epoch: int,
                  warm_restart: bool) -> Tuple[int, Dict[str, int], bool]:
    """``(epochs done, schedule, whether to keep the saved schedule)`` for continuing ``resume``.

    The saved run must have the same config (but for ``epochs`` and :data:`~resnet_arcface.learn.config.NOT_COMPARED`)
    and the same steps per epoch. A different ``epochs`` changes the schedule's length, which is refused unless
    ``warm_restart``.
    """
    missing = [k for k in ("epoch", "model", "head", "optimizer", "scheduler", "history", "config", "schedule")
               if k not in resume]
    if missing:
        raise ValueError(f"fit: resume lacks {missing}; give the state fit passed to on_epoch_end (checkpoint.pt), "
                         f"from this version of resnet_arcface.")
    saved = TrainConfig.from_dict(resume["config"])
    differ = [name for name in saved.differences(config) if name != "epochs"]
    if differ:
        pairs = ", ".join(f"{n}={getattr(config, n)!r} (saved {getattr(saved, n)!r})" for n in differ)
        raise ValueError(f"fit: resume: the config differs from the saved run's: {pairs}; resume with the same "
                         f"config, or start a new run.")
    schedule, start = dict(resume["schedule"]), int(resume["epoch"])
    if schedule["steps_per_epoch"] != steps_per_epoch:
        raise ValueError(f"fit: resume: the saved run took {schedule['steps_per_epoch']} steps per epoch, this data "
                         f"gives {steps_per_epoch}; resume on the same data.")
    if start >= config.epochs:
        raise ValueError(f"fit: resume: the saved run has already trained {start} epochs; ask for more than "
                         f"{start} (epochs={config.epochs}).")
    if schedule["epochs"] == config.epochs:
        return start, schedule, True
    if not warm_restart:
        raise ValueError(f"fit: resume: the saved run's learning rate follows a schedule over {schedule['epochs']} "
                         f"epochs; continuing it with epochs={config.epochs} would jump along its cosine. Keep "
                         f"epochs={schedule['epochs']}, or ask for a warm restart (warm_restart=True, "
                         f"arcface-train --warm-restart): a new warm-up and cosine over the remaining epochs.")
    return start, _schedule(config, steps_per_epoch, first_epoch=start), False


def fit(model: nn.Module, images: Union[torch.Tensor, Dataset], labels: Optional[torch.Tensor] = None,
        config: Optional[TrainConfig] = None, *, val: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        device: Union[str, torch.device] = "auto", progress: bool = True, head: Optional[MarginHead] = None,
        resume: Optional[Mapping[str, Any]] = None, warm_restart: bool = False,
        on_epoch_end: Optional[Callable[[Dict[str, Any]], None]] = None, **overrides: Any) -> History:
    """Train ``model`` in place to embed faces, with a softmax, CosFace or ArcFace head over the labels.

    ``config`` (a :class:`~resnet_arcface.learn.config.TrainConfig`; default ``TrainConfig()``) says how;
    its fields can also be given as keywords, which replace the config's (``fit(model, x, y, epochs=3)``).
    Each epoch visits every image once, in batches of ``config.batch_size`` read through a
    :class:`~torch.utils.data.DataLoader` (the last, incomplete batch is dropped, so no batch is a single
    image, which BatchNorm cannot normalise). The order comes from :func:`make_sampler`; the batch is
    augmented (``config.augment``, see :mod:`resnet_arcface.data.augment`) and fed through
    :func:`resnet_arcface.preprocess` at ``model.input_size``. The learning rate warms up linearly over the
    first ``config.warmup`` fraction of steps, then follows a cosine to zero at the last step. On CUDA the
    network runs in bfloat16 autocast with channels_last memory (the head stays float32); elsewhere in
    float32. ``val``, held-out identities, is verified after every epoch (open set: see
    :mod:`resnet_arcface.eval.verify`).

    Nothing silently wrong: non-finite pixels are refused before training (for a Dataset, when their batch
    arrives), and a non-finite loss raises :class:`FloatingPointError` *before* its backward pass and
    optimizer step, so the parameters stay those of the last good step. Whatever happens, the model is left
    in eval mode with its ``requires_grad`` flags as they were.

    Args:
        model: An embedding network with ``input_size`` (default 128); moved to ``device`` and left there.
        images: Training images in [0, 1], gray or RGB, any size; or a :class:`~torch.utils.data.Dataset`
            whose items are ``(image, label)``, ``image`` a ``(C, H, W)`` tensor (uint8, or float in [0, 1])
            of one size for all, ``label`` an int, and which has a ``labels`` attribute (the integer tensor of
            every item's label, in item order).
        labels: Identity of each image (any integers; they are renumbered 0..C-1 for the head); ``None`` with a
            Dataset.
        config: How to train; ``None`` takes ``TrainConfig()``. Its ``None`` fields are filled in for the
            number of identities (:meth:`TrainConfig.resolved`).
        val: ``(images, labels)`` of identities not in ``labels``, verified after each epoch.
        device: ``"auto"`` (:func:`resnet_arcface.pick_device`), ``"cpu"``, ``"cuda"``, ``"mps"`` or a device.
        progress: Show a tqdm bar (loss, accuracy, images per second) for each epoch.
        head: A :class:`MarginHead` to train (e.g. to inspect its class weights afterwards); by default a new
            one is built from the config's ``loss``, ``s`` and ``m``.
        resume: A state given to ``on_epoch_end`` by an earlier call; training continues after its epoch. Its
            config must equal this one but for ``epochs`` and ``workers``; a different ``epochs`` changes the
            schedule's length and is refused unless ``warm_restart``.
        warm_restart: Continue ``resume`` with a *new* schedule: a fresh warm-up and cosine over the epochs
            from the saved one to ``config.epochs``, keeping the weights and the optimizer's moments (SGD with
            warm restarts, Loshchilov and Hutter 2017). Has no effect when ``epochs`` did not change.
        on_epoch_end: Called after every epoch with the state (``epoch``, ``model``, ``head``, ``optimizer``,
            ``scheduler`` state_dicts, ``history``, ``config``: the resolved config as a dict, and
            ``schedule``: its length in steps and epochs), e.g. to save a checkpoint. Its tensors are the
            live ones that training keeps changing: save or copy them inside the callback.
        **overrides: Fields of :class:`TrainConfig` (``loss``, ``epochs``, ``lr``, ``s``, ...), replacing
            those of ``config``.

    Returns:
        The history (the model is trained in place and left in eval mode; torch's global random state is
        reseeded every epoch), one list entry per epoch: ``epoch``, ``loss`` (mean over the epoch),
        ``train_accuracy`` (margin-free predictions on the training batches), ``lr`` (the head's, at the
        epoch's end), ``images_per_s``, ``seconds`` and ``verification`` (the dict of
        :func:`resnet_arcface.eval.verify.evaluate`, or ``None``).

    Raises:
        ValueError: Bad data, config or resume state (the message names it and the fix).
        FloatingPointError: The loss became NaN or infinite (the message gives the epoch and step).

    Shape:
        - images: ``(N, C, H, W)``, ``C`` in {1, 3}; labels: ``(N,)``
    """
    config = _config(config, overrides)
    dataset, check_batches = _as_dataset(images, labels)
    all_labels: torch.Tensor = dataset.labels  # type: ignore[attr-defined]
    classes = torch.unique(all_labels)
    if len(classes) < 2:
        raise ValueError("fit: the labels hold fewer than two identities; a classifier needs at least two.")
    if len(dataset) < 2:  # type: ignore[arg-type]
        raise ValueError(f"fit: need at least 2 images (BatchNorm needs two samples in train mode), got "
                         f"{len(dataset)}.")  # type: ignore[arg-type]
    config = config.resolved(len(classes))
    # pick_device checks availability of the names it knows; "cuda:1" and torch.device objects pass as given.
    device = pick_device(device) if device in ("auto", "cpu", "cuda", "mps") else torch.device(device)
    if head is None:
        torch.manual_seed(config.seed)
        head = MarginHead(getattr(model, "embedding_dim", 512), len(classes), loss=config.loss, s=config.s,
                          m=config.m)
    elif head.num_classes != len(classes):
        raise ValueError(f"fit: the head has {head.num_classes} classes but the labels hold {len(classes)} identities.")
    frozen = _frozen_modules(model, config.freeze_stages)
    model.to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.contiguous_format)
    head.to(device)

    # The batch never exceeds the data, so a tiny data set still gives one batch per epoch.
    batches = BatchSampler(make_sampler(dataset, config.seed), min(config.batch_size, len(dataset)),
                           drop_last=True)  # type: ignore[arg-type]
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=config.workers, pin_memory=device.type == "cuda",
                        collate_fn=_whole_batch if isinstance(dataset, _TensorFaces) else default_collate)
    start, schedule, keep_schedule = 0, _schedule(config, len(batches), first_epoch=0), True
    if resume is not None:
        start, schedule, keep_schedule = _check_resume(resume, config, len(batches), warm_restart)

    requires_grad = [p.requires_grad for p in model.parameters()]
    try:
        for module in frozen:
            module.requires_grad_(False)
        opt = _optimizer(_param_groups(model, head, config), config)
        history: History = {k: [] for k in ("epoch", "loss", "train_accuracy", "lr", "images_per_s", "seconds",
                                            "verification")}
        if resume is None:
            sched = _scheduler(opt, schedule)
        else:
            model.load_state_dict(resume["model"])
            head.load_state_dict(resume["head"])
            if keep_schedule:  # this order leaves each group's lr at the saved step's, not at step 0's
                sched = _scheduler(opt, schedule)
                opt.load_state_dict(resume["optimizer"])
                sched.load_state_dict(resume["scheduler"])
            else:  # warm restart: the saved moments, a new schedule starting from each group's base lr
                opt.load_state_dict(resume["optimizer"])
                for group in opt.param_groups:
                    group["lr"] = group["initial_lr"]
                sched = _scheduler(opt, schedule)
            history = {k: list(v) for k, v in resume["history"].items()}

        augment = AUGMENTATIONS[config.augment]
        for epoch in range(start + 1, config.epochs + 1):
            generator = torch.Generator().manual_seed(_epoch_seed(config.seed, epoch))  # the augmentation's draws
            torch.manual_seed(_epoch_seed(config.seed, epoch))  # dropout: the same per epoch, resumed or not
            batches.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
            seen = len(batches) * batches.batch_size
            bar = _progress(seen, f"epoch {epoch}/{config.epochs}", progress)
            tic = time.perf_counter()
            mean_loss, accuracy = _train_epoch(
                model, head, opt, sched, loader, classes, augment=augment, generator=generator, device=device,
                frozen=frozen, head_only=epoch <= config.head_warmup_epochs, check_batches=check_batches,
                epoch=epoch, bar=bar)
            seconds = time.perf_counter() - tic
            history["epoch"].append(epoch)
            history["loss"].append(mean_loss)
            history["train_accuracy"].append(accuracy)
            history["lr"].append(opt.param_groups[-1]["lr"])  # the head's (the last group)
            history["images_per_s"].append(seen / seconds)
            history["seconds"].append(seconds)
            history["verification"].append(None if val is None else evaluate(model, *val))
            if on_epoch_end is not None:
                on_epoch_end({"epoch": epoch, "model": model.state_dict(), "head": head.state_dict(),
                              "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "history": history,
                              "config": config.to_dict(), "schedule": dict(schedule)})
    finally:
        for p, flag in zip(model.parameters(), requires_grad):
            p.requires_grad_(flag)
        model.eval()
        head.eval()
    return history


def _train_epoch(model: nn.Module, head: MarginHead, opt: torch.optim.Optimizer,
                 sched: torch.optim.lr_scheduler.LambdaLR, loader: DataLoader, classes: torch.Tensor, *,
                 augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor], generator: torch.Generator,
                 device: torch.device, frozen: List[nn.Module], head_only: bool, check_batches: bool, epoch: int,
                 bar: Optional[Any]) -> Tuple[float, float]:
    """One pass over ``loader``; returns the mean loss and the (margin-free) training accuracy.

    ``head_only``: the network runs in eval mode without gradients (head warm-up). ``frozen`` modules stay in
    eval mode, so their BatchNorm statistics do not move.
    """
    cuda = device.type == "cuda"
    size = getattr(model, "input_size", 128)
    # bfloat16 keeps float32's exponent range, so unlike float16 it needs no loss scaling.
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    model.train(not head_only)
    for module in frozen:
        module.eval()
    head.train()
    classes = classes.to(device)
    loss_sum, correct, seen = 0.0, 0, 0
    for step, (x, y) in enumerate(loader, 1):
        x = x.to(device, non_blocking=True)
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        if check_batches and not bool(torch.isfinite(x).all()):
            raise ValueError(f"fit: batch {step} of epoch {epoch} holds NaN or infinite pixels; fix the Dataset's "
                             f"images.")
        x = preprocess(augment(x, generator), size=size)  # (B, 1, size, size) in [-1, 1]
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(device)
        targets = torch.searchsorted(classes, y).clamp_(max=len(classes) - 1)
        if not bool((classes[targets] == y).all()):
            raise ValueError(f"fit: batch {step} of epoch {epoch} holds labels missing from the Dataset's `labels`.")
        with autocast, (torch.no_grad() if head_only else nullcontext()):
            embeddings = model(x)  # (B, D)
        batch_loss = head(embeddings, targets)  # float32 whatever the autocast
        value = float(batch_loss.detach())
        if not math.isfinite(value):  # before backward and step: the parameters stay those of the last good step
            raise FloatingPointError(f"fit: the loss became {value} at epoch {epoch}, step {step}, before any update "
                                     f"from it; lower the learning rate (now {opt.param_groups[-1]['lr']:.3g}) or "
                                     f"the scale s.")
        opt.zero_grad(set_to_none=True)
        batch_loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            correct += int((head.logits(embeddings.detach()).argmax(1) == targets).sum())
        loss_sum += value * len(y)
        seen += len(y)
        if bar is not None:
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
            bar.update(len(y))
    if cuda:
        torch.cuda.synchronize()  # the epoch's time must include the queued GPU work
    if bar is not None:
        bar.close()
    return loss_sum / seen, correct / seen


def _progress(total: int, desc: str, enabled: bool) -> Optional[Any]:
    """A tqdm bar counting images (so its rate reads in images per second), or ``None`` when disabled."""
    if not enabled:
        return None
    from tqdm import tqdm  # the text bar: tqdm.auto would want ipywidgets inside notebooks

    return tqdm(total=total, desc=desc, unit="img", unit_scale=True, leave=False, dynamic_ncols=True)
