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
from typing import Any, Dict, Optional, Sequence, Union

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


def train_config(loss: str) -> TrainConfig:
    """The :class:`TrainConfig` that trains ``loss``'s network: :data:`RECIPE` with ``loss``'s :data:`MARGINS`."""
    fields = {k: v for k, v in RECIPE.items() if k not in ("identities", "per_identity")}
    return TrainConfig(loss=loss, **fields, **MARGINS.get(loss, {}))


def build(out: Union[str, Path] = WEIGHTS_DIR, name: str = "synthetic", losses: Sequence[str] = LOSSES,
          progress: bool = False) -> Dict[str, Any]:
    """Train the shipped network (and its softmax/CosFace comparisons) and write ``out/<name>.{pt,json}``.

    Every loss gets the same data, epochs, optimizer and seed; only the head differs. The weights of
    ``losses[0]`` are written; all results, and raw-pixel verification, go into the JSON.

    Returns:
        The JSON written, as a dict.
    """
    from ..data.synthetic import synthetic_faces
    from ..nn.model import resnet_arcface_small
    from ..learn.training import fit
    from ..eval.verify import evaluate, evaluate_embeddings

    tic = time.perf_counter()
    size, r, ev = SMALL_CONFIG["input_size"], RECIPE, EVALUATION
    images, labels = synthetic_faces(r["identities"], r["per_identity"], size=size, seed=r["seed"])
    test_images, test_labels = synthetic_faces(ev["identities"], ev["per_identity"], size=size, seed=ev["seed"])
    results: Dict[str, Any] = {"pixels": _rounded(evaluate_embeddings(test_images.flatten(1), test_labels))}
    shipped: Optional[ResNetArcFace] = None
    for loss in losses:
        start = time.perf_counter()
        torch.manual_seed(r["seed"])
        model = resnet_arcface_small()
        history = fit(model, images, labels, train_config(loss), device="cpu", progress=progress)
        results[loss] = {**_rounded(evaluate(model, test_images, test_labels)),
                         "train_loss": [round(v, 4) for v in history["loss"]],
                         "train_accuracy": [round(v, 4) for v in history["train_accuracy"]],
                         "train_seconds": round(time.perf_counter() - start, 1)}
        tar, done = results[loss]["tar_at_far"], results[loss]["train_seconds"]
        print(f"{loss}: AUC {results[loss]['auc']:.4f}, TAR {tar['0.01']:.4f} at FAR 1e-2, {tar['0.001']:.4f} at 1e-3; "
              f"trained in {done:.0f} s", flush=True)
        shipped = model if shipped is None else shipped
    assert shipped is not None, "losses must name at least one loss"
    return write(out, name, losses[0], shipped, results, time.perf_counter() - tic)


def write(out: Union[str, Path], name: str, loss: str, model: ResNetArcFace, results: Dict[str, Any],
          seconds: float, command: str = "make weights") -> Dict[str, Any]:
    """Write ``model``'s state_dict to ``out/<name>.pt`` and the report of ``results`` to ``out/<name>.json``.

    ``seconds`` is the wall time of the whole build and ``command`` says how it was run.
    """
    report = {
        "name": name, "weights": f"{name}.pt", "loss": loss,
        "model": {k: (v if isinstance(v, (int, bool, str)) else list(v)) for k, v in SMALL_CONFIG.items()},
        "recipe": {**RECIPE, "size": SMALL_CONFIG["input_size"], "margins": MARGINS,
                   "train_config": train_config(loss).to_dict()},
        "evaluation": {**EVALUATION, "size": SMALL_CONFIG["input_size"],
                       "protocol": "open set: identities of another seed than training's; every pair of their "
                                   "images, scored by the cosine of the embeddings"},
        "requirement": REQUIREMENT, "results": results,
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
