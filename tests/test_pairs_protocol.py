"""resnet_arcface.eval.pairs_protocol: LFW-style pairs files and 10-fold accuracy, with and without flips."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from resnet_arcface import resnet_arcface_small, synthetic_faces
from resnet_arcface.eval.readout import FlipSum
from resnet_arcface.eval.pairs_protocol import (evaluate_pairs, image_path, kfold_accuracy, pair_cosines,
                                                read_pair_images, read_pairs)
from resnet_arcface.eval.verify import embed
from cli_run import run_main
from single_thread import one_thread  # noqa: F401  (autouse: these tests run on one CPU thread)


def write_lfw(root, identities=6, per=4, folds=3, per_fold=4, seed=7, suffix=".jpg"):
    """A small LFW: ``root/faces/name/name_%04d.jpg`` from synthetic identities, and a pairs file.

    Returns ``(faces folder, pairs file, the pairs as (name1, n1, name2, n2, genuine) tuples)``.
    """
    images, labels = synthetic_faces(identities, per, size=32, seed=seed)
    faces = root / "faces"
    for i, (img, label) in enumerate(zip(images, labels)):
        name = f"Person_{int(label)}"
        (faces / name).mkdir(parents=True, exist_ok=True)
        pixels = (img[0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).convert("RGB").save(faces / name / f"{name}_{i % per + 1:04d}{suffix}", quality=95)
    rng = np.random.default_rng(seed)
    lines, listed = [f"{folds}\t{per_fold}"], []
    for _ in range(folds):
        for genuine in (True, False):
            for _ in range(per_fold):
                a, b = rng.choice(identities, 2, replace=False)
                n1, n2 = rng.choice(per, 2, replace=False) + 1
                if genuine:
                    lines.append(f"Person_{a}\t{n1}\t{n2}")
                    listed.append((f"Person_{a}", n1, f"Person_{a}", n2, True))
                else:
                    lines.append(f"Person_{a}\t{n1}\tPerson_{b}\t{n2}")
                    listed.append((f"Person_{a}", n1, f"Person_{b}", n2, False))
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return faces, root / "pairs.txt", listed


def test_read_pairs(tmp_path):
    _, path, listed = write_lfw(tmp_path)
    pairs = read_pairs(path)
    assert pairs.folds == 3 and pairs.fold.tolist() == [f for f in range(3) for _ in range(8)]
    assert pairs.same.tolist() == [g for *_, g in listed]
    for p, (a, n1, b, n2, _) in enumerate(listed):
        assert pairs.images[int(pairs.index[p, 0])] == (a, n1) and pairs.images[int(pairs.index[p, 1])] == (b, n2)
    assert len(set(pairs.images)) == len(pairs.images)  # each photo once, however often it is listed


@pytest.mark.parametrize("text, words", [
    ("", "empty"),
    ("10\n", "header"),
    ("1 1\nA 1 2\nA 1 B 1\n", "at least 2 folds"),
    ("2 1\nA 1 2\nA 1 B 1\nA 1 2\n", "4 lines, but 3"),
    ("2 1\nA 1 2\nA 1 B 1\nA 1 2 3 4 5\nA 1 B 2\n", "line 4"),
    ("2 1\nA 1 2\nA 1 B x\nA 1 2\nA 1 B 2\n", "line 3"),
    ("2 1\nA 0 2\nA 1 B 1\nA 1 2\nA 1 B 2\n", "photo numbers from 1"),
])
def test_read_pairs_refuses_bad_files(tmp_path, text, words):
    (tmp_path / "p.txt").write_text(text)
    with pytest.raises(ValueError, match=words):
        read_pairs(tmp_path / "p.txt")
    with pytest.raises(ValueError, match="no such file"):
        read_pairs(tmp_path / "missing.txt")


def test_images_are_found_and_read_as_the_folder_reader_does(tmp_path):
    faces, path, _ = write_lfw(tmp_path, suffix=".png")
    pairs = read_pairs(path)
    images = read_pair_images(faces, pairs, size=16)
    assert images.shape == (len(pairs.images), 1, 16, 16) and 0 <= images.min() and images.max() <= 1
    name, number = pairs.images[0]
    assert image_path(faces, name, number) == faces / name / f"{name}_{number:04d}.png"
    (faces / name / f"{name}_{number:04d}.png").unlink()
    with pytest.raises(ValueError, match=f"{name}_{number:04d}.jpg"):
        read_pair_images(faces, pairs, size=16)


def _brute_kfold(scores, same, fold):
    """For each fold: try every threshold, keep the (highest) best on the other folds, apply it to the fold."""
    out = []
    for k in range(int(fold.max()) + 1):
        train, test = fold != k, fold == k
        candidates = sorted(set(scores[train].tolist()) | {float("inf")}, reverse=True)
        accuracy = [float(((scores[train] >= t) == same[train]).double().mean()) for t in candidates]
        t = candidates[int(np.argmax(accuracy))]
        out.append(float(((scores[test] >= t) == same[test]).double().mean()))
    return out


@pytest.mark.parametrize("seed", range(4))
def test_kfold_accuracy_against_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    same = torch.rand(200, generator=g) < 0.5
    scores = (torch.randint(0, 10, (200,), generator=g) + 4 * same).float() / 10  # overlapping, tied
    fold = torch.arange(10).repeat_interleave(20)
    out = kfold_accuracy(scores, same, fold)
    expected = _brute_kfold(scores, same, fold)
    assert out["fold_accuracies"] == pytest.approx(expected)
    assert out["accuracy"] == pytest.approx(np.mean(expected)) and out["std"] == pytest.approx(np.std(expected))


def test_kfold_threshold_comes_from_the_other_folds():
    # Fold 0 alone would be separated perfectly at 0.5; folds 1 and 2 put the threshold at 0.7, which
    # rejects fold 0's genuine pair at 0.6: fold 0 scores 1/2, not 1.
    scores = torch.tensor([0.6, 0.4, 0.8, 0.65, 0.9, 0.1])
    same = torch.tensor([True, False, True, False, True, False])
    out = kfold_accuracy(scores, same, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert out["thresholds"][0] == pytest.approx(0.8) and out["fold_accuracies"][0] == 0.5
    with pytest.raises(ValueError, match="at least 2 folds"):
        kfold_accuracy(scores, same, torch.zeros(6, dtype=torch.long))


def test_pair_cosines_and_non_finite():
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    torch.testing.assert_close(pair_cosines(e, torch.tensor([[0, 1], [0, 2], [2, 2]])),
                               torch.tensor([0.0, 0.5 ** 0.5, 1.0]))
    e[1, 0] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        pair_cosines(e, torch.tensor([[0, 1]]))


def test_evaluate_pairs_end_to_end(tmp_path):
    faces, path, _ = write_lfw(tmp_path)
    pairs = read_pairs(path)
    torch.manual_seed(0)
    model = resnet_arcface_small()
    images = read_pair_images(faces, pairs, size=model.input_size)
    for flip in (False, True):
        out = evaluate_pairs(model, images, pairs, flip=flip, batch_size=5)
        e = embed(FlipSum(model) if flip else model, images, batch_size=5)
        assert out == kfold_accuracy(pair_cosines(e, pairs.index), pairs.same, pairs.fold)
        assert len(out["fold_accuracies"]) == 3 and 0 <= out["accuracy"] <= 1


def test_arcface_verify_pairs(tmp_path, capsys):
    import json

    from resnet_arcface.cli.verify import verify_main

    faces, path, _ = write_lfw(tmp_path)
    torch.save(resnet_arcface_small().state_dict(), tmp_path / "weights.pt")
    (tmp_path / "metrics.json").write_text(json.dumps({"config": {"arch": "small", "size": 32, "seed": 0}}))
    base = ["--weights", tmp_path / "weights.pt", "--data", faces, "--pairs", path, "--threads", "1", "--device", "cpu"]

    def run(*extra):
        return run_main(verify_main, base + list(extra), capsys)

    status, out, err = run()
    assert status == 0, err
    assert "3 folds, 12 genuine and 12 impostor pairs" in out and "+- std" in out and "raw pixels" in out
    status, out, err = run("--flip")
    assert status == 0 and "flip test-time augmentation" in out, err
    image_path(faces, *read_pairs(path).images[0]).unlink()
    status, out, err = run()
    assert status == 2 and err.count("\n") == 1 and "no image" in err and not out, err
