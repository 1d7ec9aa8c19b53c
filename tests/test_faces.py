"""Synthetic identities: shapes, determinism, disjoint seeds, and the nuisances that make them hard."""
import pytest
import torch

from resnet_arcface import synthetic_faces
from resnet_arcface.data.synthetic import IDENTITY_RANGES, identity_parameters
from resnet_arcface.eval.verify import evaluate_embeddings


def test_shapes_dtypes_range_and_labels():
    images, labels = synthetic_faces(3, 4, size=32, seed=0)
    assert images.shape == (12, 1, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    assert synthetic_faces(1, 1, size=48)[0].shape == (1, 1, 48, 48)


def test_deterministic_per_seed():
    a, la = synthetic_faces(4, 3, size=32, seed=7)
    b, lb = synthetic_faces(4, 3, size=32, seed=7)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, synthetic_faces(4, 3, size=32, seed=8)[0])


def test_prefixes_are_stable():
    # Identity i and its first k photos do not depend on how many identities or photos were asked for.
    small, _ = synthetic_faces(2, 2, size=32, seed=3)
    large, _ = synthetic_faces(5, 3, size=32, seed=3)
    torch.testing.assert_close(small, large[[0, 1, 3, 4]], rtol=0, atol=1e-6)


@pytest.mark.parametrize("a,b", [(0, 1), (0, 1000), (0, 2000), (1000, 2000), (0, 2**32 - 1), (7, 2**31 + 7)])
def test_different_seeds_give_disjoint_identities(a, b):
    # Training (seed), validation (seed + 1000) and test (seed + 2000) identities must be different people: no
    # identity of one seed may reappear, at any index, in another (as seed 2**32 + k's did in seed k's).
    first, second = identity_parameters(50, seed=a), identity_parameters(50, seed=b)
    assert first.shape == (50, len(IDENTITY_RANGES))
    assert float(torch.cdist(first, second).min()) > 1e-3  # (50, 50): every identity against every other
    images_a = synthetic_faces(50, 1, size=8, seed=a)[0].flatten(1)
    images_b = synthetic_faces(50, 1, size=8, seed=b)[0].flatten(1)
    assert float(torch.cdist(images_a, images_b).min()) > 1e-3


@pytest.mark.parametrize("seed", [2**32, 2**32 + 1, 2**40])
def test_seeds_beyond_32_bits_are_refused(seed):
    # SeedSequence would split them into 32-bit words: seed 2**32 + k drew some of seed k's identities.
    with pytest.raises(ValueError, match=r"seed must be an int >= 0 and below 2\*\*32"):
        synthetic_faces(2, 1, size=8, seed=seed)
    with pytest.raises(ValueError, match="below 2"):
        identity_parameters(2, seed=seed)


def test_photos_of_one_identity_differ():
    images, _ = synthetic_faces(1, 6, size=32, seed=0)
    flat = images.flatten(1)
    assert float(torch.cdist(flat, flat).add(torch.eye(6) * 1e9).min()) > 1.0  # no two photos alike


def test_hard_in_pixel_space():
    # Raw-pixel cosine barely separates identities: nuisances move more pixels than identity does.
    images, labels = synthetic_faces(40, 5, size=32, seed=1)
    metrics = evaluate_embeddings(images.flatten(1), labels)
    assert metrics["auc"] < 0.7 and metrics["tar_at_far"][1e-2] < 0.2


@pytest.mark.parametrize("kwargs,message", [
    ({"num_identities": 0}, r"num_identities must be an int >= 1, got 0"),
    ({"per_identity": 2.5}, r"per_identity must be an int >= 1, got 2.5"),
    ({"size": 4}, r"size must be an int >= 8, got 4"),
    ({"seed": -1}, r"seed must be an int >= 0 and below 2\*\*32, got -1"),
    ({"seed": True}, r"seed must be an int >= 0 and below 2\*\*32, got True"),
])
def test_bad_arguments(kwargs, message):
    args = {"num_identities": 2, "per_identity": 2, "size": 32, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        synthetic_faces(**args)
