"""The weights that ship inside the package: they load, and they verify identities they never saw."""
import importlib
import json

import pytest
import torch

import resnet_arcface
from resnet_arcface import pretrained, synthetic_faces
from resnet_arcface.cli.weights import main as weights_command
from resnet_arcface.learn.recipe import REQUIREMENT
from resnet_arcface.models.shipped import WEIGHTS_DIR, metrics
from resnet_arcface.eval.verify import evaluate, evaluate_embeddings


@pytest.fixture(scope="module")
def model():
    return pretrained("synthetic")


def test_loads_in_eval_mode_with_the_small_configuration(model):
    assert resnet_arcface.pretrained is pretrained  # the package attribute is the function
    assert not model.training
    assert (model.input_size, model.embedding_dim, model.widths) == (32, 128, (16, 32, 64, 128))
    assert model(torch.rand(1, 1, 32, 32) * 2 - 1).shape == (1, 128)  # a batch of one works in eval mode


def test_shipped_files_are_small_and_plain():
    weights = WEIGHTS_DIR / "synthetic.pt"
    assert weights.stat().st_size <= 5 * 2**20
    state = torch.load(weights, weights_only=True)  # a plain state_dict: tensors only
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_recorded_metrics_meet_the_stated_bar():
    report = metrics("synthetic")
    far = str(report["requirement"]["far"])
    results = report["results"]
    assert report["requirement"] == REQUIREMENT
    assert results[report["loss"]]["tar_at_far"][far] >= report["requirement"]["min_tar"]
    # The comparison is recorded, and raw pixels are far below the network.
    assert {"arcface", "cosface", "softmax", "pixels"} <= set(results)
    assert results["pixels"]["tar_at_far"][far] < 0.5 * results["arcface"]["tar_at_far"][far]
    # Evaluation identities are not training identities (different seeds give disjoint identities).
    assert report["evaluation"]["seed"] != report["recipe"]["seed"]


def test_verifies_fresh_unseen_identities(model):
    # Identities of a seed used neither in training nor in the recorded evaluation, held to the full bar.
    report = metrics("synthetic")
    seed = 4321
    assert seed not in (report["recipe"]["seed"], report["evaluation"]["seed"])
    images, labels = synthetic_faces(200, 6, size=model.input_size, seed=seed)  # 719,400 pairs, 3,000 genuine
    result = evaluate(model, images, labels)
    pixels = evaluate_embeddings(images.flatten(1), labels)
    assert result["tar_at_far"][1e-3] >= REQUIREMENT["min_tar"]
    assert result["auc"] > 0.99 and pixels["tar_at_far"][1e-3] < 0.2


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"Unknown pretrained weights 'gfpgan'; available: \['synthetic'\]"):
        pretrained("gfpgan")


@pytest.fixture
def tiny_recipe(monkeypatch):
    """The module behind make weights, with a recipe small enough for a test."""
    module = importlib.import_module("resnet_arcface.learn.recipe")
    monkeypatch.setitem(module.RECIPE, "identities", 6)
    monkeypatch.setitem(module.RECIPE, "per_identity", 4)
    monkeypatch.setitem(module.RECIPE, "epochs", 1)
    monkeypatch.setattr(module, "EVALUATION", dict(identities=4, per_identity=3, seed=2000))
    return module


def test_build_trains_every_loss_and_writes_what_pretrained_reads(tmp_path, tiny_recipe, capsys):
    module = tiny_recipe
    report = module.build(tmp_path, losses=("arcface", "softmax"))
    printed = capsys.readouterr().out
    assert "arcface, seed 0: AUC" in printed and "softmax, seed 2: AUC" in printed and "trained in" in printed
    assert report["loss"] == "arcface" and {"arcface", "softmax", "pixels"} <= set(report["results"])
    assert report["recipe"]["identities"] == 6 and report["command"] == "make weights"
    model = module.ResNetArcFace(**{k: tuple(v) if isinstance(v, list) else v for k, v in report["model"].items()})
    resnet_arcface.load_checkpoint(model, tmp_path / "synthetic.pt")  # strict: every key and shape


def test_the_weights_command_writes_the_first_loss(tmp_path, tiny_recipe, capsys):
    threads = torch.get_num_threads()
    try:
        weights_command(["--out", str(tmp_path), "--losses", "cosface", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)  # main sets the process's thread count, as a command may
    assert "wrote" in capsys.readouterr().out.splitlines()[-1]
    assert json.loads((tmp_path / "synthetic.json").read_text())["loss"] == "cosface"


def test_every_seed_is_recorded_and_added_seeds_leave_the_weights_alone(tmp_path, tiny_recipe, capsys):
    module = tiny_recipe
    report = module.build(tmp_path, losses=("arcface", "softmax"), seeds=(0, 1))
    assert set(report["seeds"]) == {"0", "1"} and set(report["seeds"]["1"]) == {"arcface", "softmax"}
    assert report["seeds"]["0"]["arcface"]["auc"] == report["results"]["arcface"]["auc"]
    weights = (tmp_path / "synthetic.pt").read_bytes()
    added = module.add_seeds(tmp_path, seeds=(2,))
    assert list(added["seeds"]) == ["0", "1", "2"] and added["seeds_command"] == "arcface-weights --add-seeds 1,2"
    assert json.loads((tmp_path / "synthetic.json").read_text())["seeds"] == added["seeds"]
    assert (tmp_path / "synthetic.pt").read_bytes() == weights
    # Seeds change the training, not the data: two seeds give two different networks.
    assert added["seeds"]["1"]["arcface"] != added["seeds"]["2"]["arcface"]
    assert "arcface, seed 2: AUC" in capsys.readouterr().out


def test_add_seeds_without_a_build_says_what_to_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as error:
        weights_command(["--out", str(tmp_path), "--add-seeds", "1"])
    assert error.value.code == 2 and "run without it first" in capsys.readouterr().err
