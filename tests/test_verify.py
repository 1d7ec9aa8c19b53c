"""resnet_arcface.eval.verify against ROCs worked out by hand."""
import pytest
import torch
from torch import nn

from resnet_arcface import resnet_arcface_small
from resnet_arcface.eval.verify import embed, evaluate, evaluate_embeddings, pair_scores, roc, tar_at_far
from cli_run import run_main
from single_thread import one_thread  # noqa: F401  (autouse: these tests run on one CPU thread)

# Six pairs, three genuine: accepting at score >= t gives, from t = +inf down to 0.4,
# FAR 0, 0, 1/3, 1/3, 1/3, 2/3, 1 and TAR 0, 1/3, 1/3, 2/3, 1, 1, 1.
SCORES = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
SAME = torch.tensor([True, False, True, True, False, False])


def test_roc_by_hand():
    far, tar, thresholds = roc(SCORES, SAME)
    third = 1 / 3
    torch.testing.assert_close(far, torch.tensor([0, 0, third, third, third, 2 * third, 1], dtype=torch.float64))
    torch.testing.assert_close(tar, torch.tensor([0, third, third, 2 * third, 1, 1, 1], dtype=torch.float64))
    assert thresholds[0] == float("inf")
    torch.testing.assert_close(thresholds[1:].float(), SCORES)


def test_roc_groups_ties():
    far, tar, thresholds = roc(torch.tensor([0.5, 0.5, 0.2]), torch.tensor([True, False, False]))
    torch.testing.assert_close(far, torch.tensor([0, 0.5, 1], dtype=torch.float64))
    torch.testing.assert_close(tar, torch.tensor([0, 1, 1], dtype=torch.float64))


def test_tar_at_far_never_exceeds_the_far():
    assert tar_at_far(SCORES, SAME, 0.1) == pytest.approx(1 / 3)  # only FAR 0 qualifies: threshold 0.9
    assert tar_at_far(SCORES, SAME, 1 / 3) == pytest.approx(1.0)  # FAR exactly 1/3 qualifies: threshold 0.6
    assert tar_at_far(SCORES, SAME, 0.3) == pytest.approx(1 / 3)  # no interpolation towards 1/3
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        tar_at_far(SCORES, SAME, 0.0)


def test_evaluate_embeddings_by_hand():
    # Rows at 0, 45, 90 and 180 degrees: identity A = rows 0, 1 and B = rows 2, 3.
    e = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    scores, same = pair_scores(e, labels)
    r = 0.5 ** 0.5
    torch.testing.assert_close(scores, torch.tensor([r, 0.0, -1.0, r, -r, 0.0]))
    assert same.tolist() == [True, False, False, False, False, True]
    # Genuine {r, 0}, impostor {0, -1, r, -r}. Mann-Whitney: (3.5 + 2.5) / 8 (a tie counts half).
    out = evaluate_embeddings(e, labels)
    assert out["auc"] == pytest.approx(0.75)
    assert out["tar_at_far"] == {1e-2: 0.0, 1e-3: 0.0}  # 4 impostor pairs: only FAR 0 is below 1e-2
    # Balanced accuracy (TAR + 1 - FAR) / 2 is best at threshold 0: (1 + 1/2) / 2.
    assert out["threshold"] == pytest.approx(0.0) and out["accuracy"] == pytest.approx(0.75)


class _Pixels(nn.Module):
    """A "network" whose embedding is the first two pixels of its (preprocessed, [-1, 1]) input."""

    input_size = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :2]


def test_evaluate_runs_the_model_and_matches_the_hand_roc():
    e = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    images = torch.full((4, 1, 2, 2), 0.5)
    images.view(4, -1)[:, :2] = (e + 1) / 2  # preprocess maps [0, 1] back to [-1, 1] exactly for these values
    out = evaluate(_Pixels(), images, torch.tensor([0, 0, 1, 1]))
    assert out == evaluate_embeddings(e, torch.tensor([0, 0, 1, 1]))
    assert out["auc"] == pytest.approx(0.75)


def test_embed_normalises_and_restores_mode():
    torch.manual_seed(0)
    model = resnet_arcface_small().train()
    images = torch.rand(5, 1, 40, 40)
    e = embed(model, images, batch_size=2)
    assert e.shape == (5, model.embedding_dim) and model.training
    torch.testing.assert_close(e.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(e, embed(model, images, batch_size=256), rtol=1e-4, atol=1e-5)


def test_roc_needs_both_kinds_of_pairs():
    with pytest.raises(ValueError, match="genuine and impostor"):
        evaluate_embeddings(torch.randn(3, 4), torch.tensor([0, 1, 2]))


# --- non-finite inputs: refused, never turned into rates -----------------------------------------------------

def _six_with_a_nan():
    """Six embeddings of three identities, the fourth row NaN (a diverged network, or a NaN pixel)."""
    e = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0], [-0.9, -0.1]])
    e[3] = float("nan")
    return e, torch.tensor([0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_embeddings_are_refused(bad):
    e, labels = _six_with_a_nan()
    e[3] = bad
    for fn in (pair_scores, evaluate_embeddings):
        with pytest.raises(ValueError, match=r"1 of 6 rows are not finite .*index 3"):
            fn(e, labels)


def test_non_finite_scores_are_refused():
    # Before this was checked, argsort put the NaN first: the NaN pairs counted as accepted at every threshold.
    scores = SCORES.clone()
    scores[4] = float("nan")
    for fn in (lambda: roc(scores, SAME), lambda: tar_at_far(scores, SAME, 0.5)):
        with pytest.raises(ValueError, match=r"roc: scores: 1 of 6 values are not finite"):
            fn()


def test_evaluate_refuses_a_network_that_outputs_nan():
    class _Nan(_Pixels):
        def forward(self, x):
            out = super().forward(x).clone()
            out[1] = float("nan")
            return out

    with pytest.raises(ValueError, match="not finite"):
        evaluate(_Nan(), torch.rand(4, 1, 2, 2), torch.tensor([0, 0, 1, 1]))


# --- the ROC against brute force on heavily tied random scores ------------------------------------------------

def _tied_scores(seed: int, n: int = 300):
    """Scores from only 12 distinct values (ties everywhere), genuine pairs shifted upwards."""
    g = torch.Generator().manual_seed(seed)
    same = torch.rand(n, generator=g) < 0.3
    scores = (torch.randint(0, 9, (n,), generator=g) + 3 * same).float() / 12
    return scores, same


@pytest.mark.parametrize("seed", range(5))
def test_auc_is_the_mann_whitney_statistic(seed):
    from resnet_arcface.eval.verify import roc_auc

    scores, same = _tied_scores(seed)
    gen, imp = scores[same][:, None], scores[~same][None, :]
    mann_whitney = ((gen > imp).double() + 0.5 * (gen == imp).double()).mean()  # U / (n_genuine n_impostor)
    assert roc_auc(*roc(scores, same)[:2]) == pytest.approx(float(mann_whitney), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_roc_and_tar_at_far_against_brute_force(seed):
    scores, same = _tied_scores(seed)
    far, tar, thresholds = roc(scores, same)
    for k, t in enumerate(thresholds[1:].tolist(), start=1):  # each point: accept score >= t, counted directly
        accepted = scores.double() >= t
        assert far[k] == pytest.approx(float(accepted[~same].double().mean()))
        assert tar[k] == pytest.approx(float(accepted[same].double().mean()))
    for target in (0.01, 0.05, 0.2, 0.5):
        # The lowest of all candidate thresholds whose measured FAR is at most the target.
        best = min(t for t in set(scores.tolist()) | {float("inf")}
                   if (scores[~same] >= t).double().mean() <= target)
        assert tar_at_far(scores, same, target) == pytest.approx(float((scores[same] >= best).double().mean()))


def test_pixel_baseline_is_verification_of_flattened_pixels():
    from resnet_arcface.eval.verify import pixel_baseline

    torch.manual_seed(0)
    images, labels = torch.rand(8, 1, 4, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    assert pixel_baseline(images, labels) == evaluate_embeddings(images.reshape(8, 16), labels)


# --- arcface-verify: the held-out seed is known, never guessed --------------------------------------------------

def _verify(argv, capsys):
    from resnet_arcface.cli.verify import verify_main

    return run_main(verify_main, argv, capsys)


def _weights(folder, config=None):
    import json

    folder.mkdir(parents=True, exist_ok=True)
    torch.save(resnet_arcface_small().state_dict(), folder / "weights.pt")
    if config is not None:
        (folder / "metrics.json").write_text(json.dumps({"config": config}))
    return folder / "weights.pt"


def test_verify_refuses_to_guess_the_training_seed(tmp_path, capsys):
    # Without metrics.json, arcface-verify used to assume training seed 0: for a run trained on seed 2000,
    # its "held-out" identities (seed 0 + 2000) were the training identities.
    weights = _weights(tmp_path / "bare")
    fast = ["--threads", "1", "--device", "cpu"]
    status, out, err = _verify(["--weights", weights, "--synthetic", "3,3", *fast], capsys)
    assert status == 2 and err.count("\n") == 1 and "--seed" in err and "metrics.json" in err and not out
    status, out, err = _verify(["--weights", weights, "--synthetic", "3,3", "--seed", "77", *fast], capsys)
    assert status == 0 and "(seed 77)" in out, err
    (tmp_path / "bare" / "metrics.json").write_text("{not json")
    status, _, err = _verify(["--weights", weights, "--synthetic", "3,3", *fast], capsys)
    assert status == 2 and "--seed" in err

    weights = _weights(tmp_path / "trained", {"arch": "small", "size": 32, "seed": 3})
    status, out, err = _verify(["--weights", weights, "--synthetic", "3,3", *fast], capsys)
    assert status == 0 and "(seed 2003)" in out and "raw pixels" in out, err
    status, out, err = _verify(["--weights", weights, "--synthetic", "3,3", "--flip", *fast], capsys)
    assert status == 0 and "flip" in out, err
    status, layer3, err = _verify(["--weights", weights, "--synthetic", "3,3", "--features", "layer3", *fast], capsys)
    assert status == 0 and "layer3 output as its embedding" in layer3, err
    status, embedding, err = _verify(["--weights", weights, "--synthetic", "3,3", *fast], capsys)
    network_rows = lambda text: [line.split()[-2] for line in text.splitlines()[2:]]  # the network's column
    assert network_rows(layer3) != network_rows(embedding)  # another readout, other scores
    status, out, err = _verify(["--weights", weights, "--synthetic", "3,3", "--features", "fc5", *fast], capsys)
    assert status == 2 and "invalid choice" in err and not out


def test_verify_flags_that_do_not_apply(tmp_path, capsys):
    weights = _weights(tmp_path, {"arch": "small", "size": 32, "seed": 0})
    for argv, words in [(["--synthetic", "3,3", "--pairs", tmp_path / "p.txt"], "--pairs needs --data"),
                        (["--data", tmp_path, "--seed", "4"], "--seed chooses synthetic")]:
        status, out, err = _verify(["--weights", weights, *argv], capsys)
        assert status == 2 and err.count("\n") == 1 and words in err and not out, err
