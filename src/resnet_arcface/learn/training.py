"""Train an embedding network with a margin loss: :func:`fit`.

The network maps a face to an embedding; a :class:`~resnet_arcface.learn.losses.MarginHead` classifies the
embedding over the *training* identities and its loss shapes the embedding space. After training the head
is discarded and the embedding is judged on identities it never saw (:mod:`resnet_arcface.eval.verify`).
The command-line front end is :mod:`resnet_arcface.cli.common` (``arcface-train``).
"""
import math
import time
from contextlib import nullcontext
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from ..data.transforms import preprocess, resolve_cfg
from ..device import resolve_device
from .losses import LOSSES, MarginHead
from ..eval.verify import evaluate

#: Optimizers :func:`fit` builds, with their default learning rate and weight decay.
#: SGD with momentum is InsightFace's choice (lr 0.1, weight decay 5e-4); AdamW needs less tuning.
OPTIMIZERS = {"sgd": (0.1, 5e-4), "adamw": (1e-3, 5e-2)}

History = Dict[str, List[Any]]


def _validate(images: object, labels: object, batch_size: int, epochs: int) -> None:
    """Raise a ``ValueError`` naming the argument of :func:`fit` that cannot work, and the fix."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"fit: images must be a float tensor (N, C, H, W) in [0, 1], got {got}.")
    if not isinstance(labels, torch.Tensor) or labels.shape != (len(images),) or labels.is_floating_point():
        got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"fit: labels must be an integer tensor (N,) with N = {len(images)}, one identity per image; "
                         f"got {got}.")
    if len(torch.unique(labels)) < 2:
        raise ValueError("fit: the labels hold fewer than two identities; a classifier needs at least two.")
    if len(images) < 2 or batch_size < 2:
        raise ValueError(f"fit: need at least 2 images and batch_size >= 2 (BatchNorm needs two samples in train "
                         f"mode), got {len(images)} images and batch_size={batch_size}.")
    if epochs < 1:
        raise ValueError(f"fit: epochs must be at least 1, got {epochs}.")


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up from 0 over ``warmup`` steps, then a cosine decay to 0 at ``total``.

    Warm-up matters for margin losses: at initialisation every target angle is near 90°, the margin
    makes the loss large, and full-size steps then can throw BatchNorm statistics and class weights far off.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _batches(n: int, batch_size: int, generator: torch.Generator) -> List[torch.Tensor]:
    """A shuffled epoch of equal index batches.

    The remainder (fewer than ``batch_size`` images, different ones each epoch) is dropped, so no batch is
    ever a single image, which ``bn5`` cannot normalise in train mode.
    """
    order = torch.randperm(n, generator=generator)
    if n <= batch_size:
        return [order]
    return list(order[: n - n % batch_size].split(batch_size))


def fit(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, loss: str = "arcface", epochs: int = 10,
        batch_size: int = 128, lr: Optional[float] = None, optimizer: str = "sgd", weight_decay: Optional[float] = None,
        s: Optional[float] = None, m: Optional[float] = None, warmup: float = 0.05, flip: bool = True,
        seed: int = 0, device: Union[str, torch.device] = "auto",
        val: Optional[Tuple[torch.Tensor, torch.Tensor]] = None, progress: bool = True,
        head: Optional[MarginHead] = None, resume: Optional[Mapping[str, Any]] = None,
        on_epoch_end: Optional[Callable[[Dict[str, Any]], None]] = None) -> History:
    """Train ``model`` in place to embed faces, with a softmax, CosFace or ArcFace head over ``labels``.

    Each epoch visits the images in a fresh random order (seeded by ``seed`` and the epoch, so a resumed
    run sees the same batches), mirrors a random half of each batch left-right when ``flip``, and feeds them
    through :func:`resnet_arcface.preprocess` at ``model.input_size``. The learning rate warms up linearly
    over the first ``warmup`` fraction of steps, then follows a cosine to zero. On CUDA the network runs in
    bfloat16 autocast with channels_last memory (the head stays float32); elsewhere in float32.
    ``val``, held-out identities, is verified after every epoch (open set: see :mod:`resnet_arcface.eval.verify`).

    Args:
        model: An embedding network with ``input_size`` (default 128); moved to ``device`` and left there.
        images: Training images in [0, 1], gray or RGB, any size.
        labels: Identity of each image (any integers; they are renumbered 0..C-1 for the head).
        loss: ``"arcface"``, ``"cosface"`` or ``"softmax"``.
        epochs: Total epochs (a resumed run continues up to this number).
        batch_size: Images per step (at least 2).
        lr: Peak learning rate; ``None`` takes the optimizer's default from :data:`OPTIMIZERS`.
        optimizer: ``"sgd"`` (momentum 0.9) or ``"adamw"``.
        weight_decay: ``None`` takes the optimizer's default.
        s, m: The head's scale and margin; ``None`` takes the loss's defaults (InsightFace's, ``LOSSES``).
            Its s = 64 is made for tens of thousands of identities; with a few hundred, ArcFace at s = 64
            stays near chance and s = 16 trains well (``arcface-train`` defaults to 16).
        warmup: Fraction of all steps spent warming up the learning rate.
        flip: Random horizontal flips (faces are nearly symmetric; identity does not change).
        seed: Seeds the head's initialisation, the batch order, flips and dropout.
        device: ``"auto"`` (:func:`resnet_arcface.pick_device`), ``"cpu"``, ``"cuda"``, ``"mps"`` or a device.
        val: ``(images, labels)`` of identities not in ``labels``, verified after each epoch.
        progress: Show a tqdm bar (loss, accuracy, images per second) for each epoch.
        head: A :class:`MarginHead` to train (e.g. to inspect its class weights afterwards); by default a new
            one is built from ``loss``, ``s`` and ``m``.
        resume: A state given to ``on_epoch_end`` by an earlier call; training continues after its epoch.
        on_epoch_end: Called after every epoch with the state (``epoch``, ``model``, ``head``, ``optimizer``,
            ``scheduler`` state_dicts and ``history``), e.g. to save a checkpoint. Its tensors are the live
            ones that training keeps changing: save or copy them inside the callback.

    Returns:
        The history (the model is trained in place and left in eval mode; torch's global random state is
        reseeded every epoch), one list entry per epoch: ``epoch``, ``loss`` (mean over the epoch), ``train_accuracy``
        (margin-free predictions on the training batches), ``lr`` (at the epoch's end), ``images_per_s``,
        ``seconds`` and ``verification`` (the dict of :func:`resnet_arcface.eval.verify.evaluate`, or ``None``).

    Shape:
        - images: ``(N, C, H, W)``, ``C`` in {1, 3}; labels: ``(N,)``
    """
    _validate(images, labels, batch_size, epochs)
    if loss not in LOSSES:
        raise ValueError(f"fit: unknown loss {loss!r}; expected one of {sorted(LOSSES)}.")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"fit: unknown optimizer {optimizer!r}; expected one of {sorted(OPTIMIZERS)}.")
    device = resolve_device(device)  # checks the names it knows; "cuda:1" and torch.device objects pass as given
    classes, targets = torch.unique(labels, return_inverse=True)
    if head is None:
        torch.manual_seed(seed)
        embedding_dim = getattr(model, "embedding_dim", 512)
        head = MarginHead(embedding_dim, len(classes), loss=loss, s=s, m=m)
    elif head.num_classes != len(classes):
        raise ValueError(f"fit: the head has {head.num_classes} classes but the labels hold {len(classes)} identities.")
    model.to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.contiguous_format)
    head.to(device)

    steps = len(_batches(len(images), batch_size, torch.Generator()))
    opt, sched = _optimizer(list(model.parameters()) + list(head.parameters()), optimizer, lr, weight_decay,
                            total=steps * epochs, warmup=warmup)
    history: History = {k: [] for k in ("epoch", "loss", "train_accuracy", "lr", "images_per_s", "seconds",
                                        "verification")}
    start = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        head.load_state_dict(resume["head"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        history = {k: list(v) for k, v in resume["history"].items()}
        start = int(resume["epoch"])

    for epoch in range(start + 1, epochs + 1):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        torch.manual_seed(seed * 1_000_003 + epoch)  # dropout: the same per epoch, resumed or not
        batches = _batches(len(images), batch_size, generator)
        bar = _progress(sum(len(b) for b in batches), f"epoch {epoch}/{epochs}", progress)
        tic = time.perf_counter()
        mean_loss, accuracy = _train_epoch(model, head, opt, sched, images, targets, batches, flip=flip,
                                           generator=generator, device=device, bar=bar)
        seconds = time.perf_counter() - tic
        history["epoch"].append(epoch)
        history["loss"].append(mean_loss)
        history["train_accuracy"].append(accuracy)
        history["lr"].append(opt.param_groups[0]["lr"])
        history["images_per_s"].append(sum(len(b) for b in batches) / seconds)
        history["seconds"].append(seconds)
        history["verification"].append(None if val is None else evaluate(model, *val))
        if on_epoch_end is not None:
            on_epoch_end({"epoch": epoch, "model": model.state_dict(), "head": head.state_dict(),
                          "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "history": history})
    model.eval()
    return history


def _optimizer(params: List[nn.Parameter], name: str, lr: Optional[float], weight_decay: Optional[float],
               total: int, warmup: float) -> Tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimizer (defaults from :data:`OPTIMIZERS`) and its per-step warm-up + cosine schedule."""
    default_lr, default_wd = OPTIMIZERS[name]
    lr = default_lr if lr is None else lr
    wd = default_wd if weight_decay is None else weight_decay
    opt = (torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd) if name == "sgd"
           else torch.optim.AdamW(params, lr=lr, weight_decay=wd))
    warmup_steps = max(1, round(warmup * total))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda k: _lr_factor(k, total, warmup_steps))


def _train_epoch(model: nn.Module, head: MarginHead, opt: torch.optim.Optimizer,
                 sched: torch.optim.lr_scheduler.LambdaLR, images: torch.Tensor, targets: torch.Tensor,
                 batches: List[torch.Tensor], *, flip: bool, generator: torch.Generator, device: torch.device,
                 bar: Optional[Any]) -> Tuple[float, float]:
    """One pass over ``batches``; returns the mean loss and the (margin-free) training accuracy."""
    cuda = device.type == "cuda"
    size = resolve_cfg(model).input_size
    # bfloat16 keeps float32's exponent range, so unlike float16 it needs no loss scaling.
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
    model.train()
    head.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for index in batches:
        x = preprocess(images[index].to(device), size=size)  # (B, 1, size, size) in [-1, 1]
        if flip:
            mirror = (torch.rand(len(index), generator=generator) < 0.5).to(device)
            x = torch.where(mirror[:, None, None, None], x.flip(3), x)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        y = targets[index].to(device)
        with autocast:
            embeddings = model(x)  # (B, D)
        batch_loss = head(embeddings, y)  # float32 whatever the autocast
        opt.zero_grad(set_to_none=True)
        batch_loss.backward()
        opt.step()
        sched.step()
        value = float(batch_loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"fit: the loss became {value}; lower the learning rate (now "
                                     f"{opt.param_groups[0]['lr']:.3g}) or the scale s.")
        with torch.no_grad():
            correct += int((head.logits(embeddings.detach()).argmax(1) == y).sum())
        loss_sum += value * len(index)
        seen += len(index)
        if bar is not None:
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
            bar.update(len(index))
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
