"""resnet_arcface.eval.verify against ROCs worked out by hand."""
import pytest
import torch
from torch import nn

from resnet_arcface import resnet_arcface_small
from resnet_arcface.eval.verify import embed, evaluate, evaluate_embeddings, pair_scores, roc, tar_at_far
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
