"""resnet_arcface.eval.chunked: the blocked histogram against the exact ROC of resnet_arcface.eval.verify."""
import pytest
import torch

from resnet_arcface.eval import verify
from resnet_arcface.eval.chunked import pair_histogram
from resnet_arcface.eval.verify import evaluate_embeddings, pair_scores, roc, summarize_roc
from single_thread import one_thread  # noqa: F401  (autouse: these tests run on one CPU thread)


def _dyadic_faces(seed: int, identities: int = 12, per: int = 15, dim: int = 64):
    """Unit embeddings with entries +-1/8, so every cosine is a multiple of 1/32 and exact in float32.

    Exact scores make the comparison with the exact ROC free of rounding (any order of summation gives the
    same cosine), and they tie a lot. Each image flips a fifth of its identity's signs; identities are
    shuffled so rows of one identity are not adjacent.
    """
    g = torch.Generator().manual_seed(seed)
    centres = torch.randint(0, 2, (identities, dim), generator=g) * 2 - 1
    labels = torch.arange(identities).repeat_interleave(per)[torch.randperm(identities * per, generator=g)]
    flips = torch.where(torch.rand(len(labels), dim, generator=g) < 0.2, -1, 1)
    return (centres[labels] * flips).float() / 8, labels


def _exact_counts_at(scores, same, threshold):
    accepted = scores.double() >= threshold
    return float(accepted[~same].double().mean()), float(accepted[same].double().mean())


@pytest.mark.parametrize("block_scores", [2 ** 24, 1000, 7])
def test_every_pair_is_counted_once_in_its_bin(block_scores):
    e, labels = _dyadic_faces(0)
    scores, same = pair_scores(e, labels)
    h = pair_histogram(e, labels, bins=128, block_scores=block_scores)  # blocks of 1 to 180 rows
    bins = ((scores.double() + 1) * 64).long().clamp(max=127)  # exact: scores are multiples of 1/32
    assert torch.equal(h.genuine, torch.bincount(bins[same], minlength=128))
    assert torch.equal(h.impostor, torch.bincount(bins[~same], minlength=128))


def test_fine_bins_reproduce_the_exact_roc():
    # With a bin edge at every score that occurs (multiples of 1/32), the histogram loses nothing.
    e, labels = _dyadic_faces(1)
    exact = roc(*pair_scores(e, labels))
    for bins in (128, 2 ** 16):
        approx = pair_histogram(e, labels, bins=bins).roc()
        for a, b in zip(exact, approx):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        assert summarize_roc(*approx) == summarize_roc(*exact)


@pytest.mark.parametrize("seed", range(3))
def test_coarse_bins_stay_within_their_stated_bounds(seed):
    # 8 bins of width 1/4 hold 8 distinct scores each: the bounds are wide, and the exact values must lie
    # inside them, each ROC point of the histogram must be a point of the exact ROC, and TAR and accuracy
    # must never be optimistic.
    e, labels = _dyadic_faces(seed)
    scores, same = pair_scores(e, labels)
    h = pair_histogram(e, labels, bins=8)
    far, tar, thresholds = h.roc()
    for k in range(1, len(far)):
        assert (far[k], tar[k]) == pytest.approx(_exact_counts_at(scores, same, float(thresholds[k])))
    exact, approx, bound = summarize_roc(*roc(scores, same)), summarize_roc(far, tar, thresholds), h.error_bounds()
    assert abs(exact["auc"] - approx["auc"]) <= bound["auc"] + 1e-12 and bound["auc"] > 0
    for f in verify.FARS + (0.05, 0.2):
        t, b = verify.tar_at_far(scores, same, f), h.error_bounds(fars=(f,))["tar_at_far"][f]
        read = verify._at_far(far, tar, thresholds, f)[0]
        assert read <= t + 1e-12 <= read + b + 2e-12
    assert approx["accuracy"] <= exact["accuracy"] + 1e-12 <= approx["accuracy"] + bound["accuracy"] + 2e-12
    assert bound["accuracy"] > 0


def test_default_bins_are_close_on_real_valued_embeddings():
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 40, (600,), generator=g)
    e = torch.randn(40, 32, generator=g)[labels] + 0.9 * torch.randn(600, 32, generator=g)
    exact, approx = evaluate_embeddings(e, labels, exact=True), evaluate_embeddings(e, labels, exact=False)
    bound = pair_histogram(e, labels).error_bounds()
    assert abs(exact["auc"] - approx["auc"]) <= bound["auc"] + 1e-6 and bound["auc"] < 1e-5
    for f in verify.FARS:
        t = approx["tar_at_far"][f]
        assert t <= exact["tar_at_far"][f] <= t + bound["tar_at_far"][f] + 1e-6
    assert abs(exact["threshold"] - approx["threshold"]) < 1e-3


def test_evaluate_embeddings_switches_to_the_histogram_above_the_size(monkeypatch):
    e, labels = _dyadic_faces(4)
    exact = evaluate_embeddings(e, labels)
    calls = []
    real = pair_histogram

    def spy(*args, **kwargs):
        calls.append(len(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr("resnet_arcface.eval.chunked.pair_histogram", spy)
    assert evaluate_embeddings(e, labels) == exact and calls == []  # 16,110 pairs: exact
    monkeypatch.setattr(verify, "EXACT_MAX_PAIRS", 1000)
    assert evaluate_embeddings(e, labels) == exact and calls == [180]  # same numbers: the scores are on edges


def test_pair_histogram_refuses_bad_input():
    e, labels = _dyadic_faces(5)
    e[7, 3] = float("nan")
    with pytest.raises(ValueError, match=r"pair_histogram: embeddings: 1 of 180 rows are not finite .*index 7"):
        pair_histogram(e, labels)
    with pytest.raises(ValueError, match=r"\(N, D\) and labels \(N,\)"):
        pair_histogram(e, labels[:-1])
    with pytest.raises(ValueError, match="positive"):
        pair_histogram(e[:5].nan_to_num(), labels[:5], bins=0)
    with pytest.raises(ValueError, match="genuine and impostor"):
        pair_histogram(torch.randn(3, 4), torch.tensor([0, 1, 2])).roc()
