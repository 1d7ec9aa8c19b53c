"""The recipe that made the shipped weights (``make weights``): :func:`build` trains them, :func:`write` saves them.

GFPGAN's ``arcface_resnet18.pth`` cannot be downloaded or shipped, so the package trains its own:
:func:`resnet_arcface.resnet_arcface_small` with an ArcFace head on :func:`resnet_arcface.synthetic_faces`,
from a fixed seed, in minutes on a laptop CPU. Next to the weights, ``<name>.json`` records the recipe, the
network's configuration and open-set verification on identities the network never saw, for the shipped ArcFace
network, for softmax and CosFace heads trained on the same budget, and for raw pixels.
"""
import json
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch

from ..models.shipped import WEIGHTS_DIR
from .config import TrainConfig
from ..nn.model import SMALL_CONFIG, ResNetArcFace

#: How the shipped weights are trained: identities, images and the optimisation, all from ``seed``. Every key
#: but the data's (``identities``, ``per_identity``) is a :class:`~resnet_arcface.learn.config.TrainConfig` field
#: (see :func:`train_config`).
RECIPE: Dict[str, Any] = dict(identities=2000, per_identity=12, seed=0, epochs=10, batch_size=64,
                              optimizer="adamw", lr=2e-3, augment="flip")
#: Scale and margin of each margin loss: one scale for both (InsightFace's s = 64, tuned for 85,000
#: identities, does not train with two thousand and this budget), each loss's usual margin.
MARGINS: Dict[str, Dict[str, float]] = {"arcface": dict(s=32.0, m=0.5), "cosface": dict(s=32.0, m=0.35)}
#: Open-set evaluation: identities of another seed (disjoint from training's), every pair of their images:
#: 1,619,100 pairs, 4,500 of them genuine, so about 1,615 false accepts set the threshold at FAR = 1e-3,
#: drawn from 44,850 pairs of people. Seed 2000 is also ``arcface-verify``'s default for networks trained on seed 0.
EVALUATION: Dict[str, Any] = dict(identities=300, per_identity=6, seed=2000)
#: The bar the shipped network must clear on the evaluation identities.
REQUIREMENT: Dict[str, float] = dict(far=1e-3, min_tar=0.90)
#: Losses trained side by side on the same budget; the first one is shipped.
LOSSES = ("arcface", "cosface", "softmax")
#: Training seeds: every loss is trained from each (initialisation, batch order, flips and dropout; the data and
#: the evaluation stay those of :data:`RECIPE` and :data:`EVALUATION`), so that a difference between losses can
#: be compared with the spread from seed to seed. The first is :data:`RECIPE`'s seed, whose network is shipped.
SEEDS = (0, 1, 2)


def train_config(loss: str, seed: int = RECIPE["seed"]) -> TrainConfig:
    """The :class:`TrainConfig` that trains ``loss``'s network from ``seed``: :data:`RECIPE` with ``loss``'s
    :data:`MARGINS`."""
    fields = {k: v for k, v in RECIPE.items() if k not in ("identities", "per_identity", "seed")}
    return TrainConfig(loss=loss, seed=seed, **fields, **MARGINS.get(loss, {}))


def build(out: Union[str, Path] = WEIGHTS_DIR, name: str = "synthetic", losses: Sequence[str] = LOSSES,
          seeds: Sequence[int] = SEEDS, progress: bool = False) -> Dict[str, Any]:
    """Train the shipped network (and its softmax/CosFace comparisons) and write ``out/<name>.{pt,json}``.

    Every loss gets the same data, epochs, optimizer and seed; only the head differs. The weights of
    ``losses[0]`` from ``seeds[0]`` are written and its results are the JSON's ``results``, next to raw-pixel
    verification; every seed's results go into its ``seeds``.

    Returns:
        The JSON written, as a dict.
    """
    from ..eval.verify import pixel_baseline

    tic = time.perf_counter()
    images, labels, test_images, test_labels = _data()
    results: Dict[str, Any] = {"pixels": _rounded(pixel_baseline(test_images, test_labels))}
    by_seed: Dict[str, Any] = {}
    shipped: Optional[ResNetArcFace] = None
    for seed in seeds:
        seed_results, first = _train_losses(images, labels, test_images, test_labels, losses, seed, progress)
        by_seed[str(seed)] = {loss: _headline(r) for loss, r in seed_results.items()}
        if shipped is None:
            results.update(seed_results)
            shipped = first
    assert shipped is not None, "losses and seeds must name at least one each"
    return write(out, name, losses[0], shipped, results, time.perf_counter() - tic, seeds=by_seed)


def add_seeds(out: Union[str, Path] = WEIGHTS_DIR, name: str = "synthetic", seeds: Sequence[int] = SEEDS[1:],
              progress: bool = False) -> Dict[str, Any]:
    """Train every loss of ``out/<name>.json`` from more ``seeds`` and add their results to its ``seeds``.

    The shipped weights (``<name>.pt``) are not touched: this records the seed-to-seed spread of a build that
    was already made, at the cost of the new seeds only. ``seeds_seconds`` adds up the training time of every
    such call, also of calls that ran side by side.
    """
    path = Path(out) / f"{name}.json"
    report = json.loads(path.read_text())
    losses = [loss for loss in LOSSES if loss in report["results"]]
    images, labels, test_images, test_labels = _data()
    added: Dict[str, Any] = {}
    tic = time.perf_counter()
    for seed in seeds:
        seed_results, _ = _train_losses(images, labels, test_images, test_labels, losses, seed, progress)
        added[str(seed)] = {loss: _headline(r) for loss, r in seed_results.items()}
    # Read the file again only now: another process adding other seeds may have written it meanwhile.
    report = json.loads(path.read_text())
    by_seed = report.get("seeds") or {str(report["recipe"]["seed"]): {
        loss: _headline(report["results"][loss]) for loss in losses}}
    report["seeds"] = dict(sorted({**by_seed, **added}.items(), key=lambda item: int(item[0])))
    report["seeds_seconds"] = round(report.get("seeds_seconds", 0.0) + time.perf_counter() - tic, 1)
    more = [seed for seed in report["seeds"] if seed != str(report["recipe"]["seed"])]
    report["seeds_command"] = f"arcface-weights --add-seeds {','.join(more)}"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _data():
    """The training images and labels of :data:`RECIPE`, and the test images and labels of :data:`EVALUATION`."""
    from ..data.synthetic import synthetic_faces

    size, r, ev = SMALL_CONFIG["input_size"], RECIPE, EVALUATION
    images, labels = synthetic_faces(r["identities"], r["per_identity"], size=size, seed=r["seed"])
    test_images, test_labels = synthetic_faces(ev["identities"], ev["per_identity"], size=size, seed=ev["seed"])
    return images, labels, test_images, test_labels


def _train_losses(images, labels, test_images, test_labels, losses: Sequence[str], seed: int,
                  progress: bool) -> Tuple[Dict[str, Any], ResNetArcFace]:
    """Train one network per loss from ``seed``; their results on the test identities, and the first network."""
    from ..nn.model import resnet_arcface_small
    from ..learn.training import fit
    from ..eval.verify import evaluate

    results: Dict[str, Any] = {}
    first: Optional[ResNetArcFace] = None
    for loss in losses:
        start = time.perf_counter()
        torch.manual_seed(seed)
        model = resnet_arcface_small()
        history = fit(model, images, labels, train_config(loss, seed), device="cpu", progress=progress)
        results[loss] = {**_rounded(evaluate(model, test_images, test_labels)),
                         "train_loss": [round(v, 4) for v in history["loss"]],
                         "train_accuracy": [round(v, 4) for v in history["train_accuracy"]],
                         "train_seconds": round(time.perf_counter() - start, 1)}
        tar, done = results[loss]["tar_at_far"], results[loss]["train_seconds"]
        print(f"{loss}, seed {seed}: AUC {results[loss]['auc']:.4f}, TAR {tar['0.01']:.4f} at FAR 1e-2, "
              f"{tar['0.001']:.4f} at 1e-3; trained in {done:.0f} s", flush=True)
        first = model if first is None else first
    assert first is not None, "losses must name at least one loss"
    return results, first


def _headline(result: Dict[str, Any]) -> Dict[str, Any]:
    """The verification numbers of one trained loss, without its training curve."""
    return {"auc": result["auc"], "tar_at_far": result["tar_at_far"], "train_seconds": result["train_seconds"]}


def write(out: Union[str, Path], name: str, loss: str, model: ResNetArcFace, results: Dict[str, Any],
          seconds: float, command: str = "make weights", seeds: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Write ``model``'s state_dict to ``out/<name>.pt`` and the report of ``results`` to ``out/<name>.json``.

    ``seconds`` is the wall time of the whole build and ``command`` says how it was run; ``seeds`` maps each
    training seed to its losses' results.
    """
    report = {
        "name": name, "weights": f"{name}.pt", "loss": loss,
        "model": {k: (v if isinstance(v, (int, bool, str)) else list(v)) for k, v in SMALL_CONFIG.items()},
        "recipe": {**RECIPE, "size": SMALL_CONFIG["input_size"], "margins": MARGINS,
                   "train_config": train_config(loss).to_dict()},
        "evaluation": {**EVALUATION, "size": SMALL_CONFIG["input_size"],
                       "protocol": "open set: identities of another seed than training's; every pair of their "
                                   "images, scored by the cosine of the embeddings"},
        "requirement": REQUIREMENT, "results": results, **({"seeds": seeds} if seeds else {}),
        "seconds": round(seconds, 1), "torch": torch.__version__, "command": command,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / f"{name}.pt")
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _rounded(result: Dict[str, Any]) -> Dict[str, Any]:
    """An :func:`~resnet_arcface.eval.verify.evaluate` dict with JSON-friendly keys ("0.001") and 4 decimals."""
    tar = {str(far): round(rate, 4) for far, rate in result["tar_at_far"].items()}
    return {"auc": round(result["auc"], 4), "tar_at_far": tar, "threshold": round(result["threshold"], 4),
            "accuracy": round(result["accuracy"], 4)}
