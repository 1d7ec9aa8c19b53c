"""Sample faces and GFPGAN's preprocessing."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from resnet_arcface import astronaut_face, lfw_faces, pick_device, preprocess, resnet_arcface18


def test_sample_faces_ship_with_scikit_image():
    face = astronaut_face()
    assert face.shape == (3, 200, 180) and face.dtype == torch.float32
    assert 0 <= face.min() and face.max() <= 1
    faces = lfw_faces(5)
    assert faces.shape == (5, 1, 25, 25)
    with pytest.raises(ValueError, match="between 1 and 100"):
        lfw_faces(101)


def test_preprocess_is_gfpgans_formula():
    rgb = torch.rand(2, 3, 60, 50)
    # GFPGAN normalises to [-1, 1], then applies gray_resize_for_identity (written out independently).
    normalised = (rgb - 0.5) / 0.5
    gray = (0.2989 * normalised[:, 0] + 0.5870 * normalised[:, 1] + 0.1140 * normalised[:, 2]).unsqueeze(1)
    expected = F.interpolate(gray, (128, 128), mode="bilinear", align_corners=False)
    torch.testing.assert_close(preprocess(rgb), expected)
    torch.testing.assert_close(preprocess(normalised, value_range=(-1, 1)), expected)
    with pytest.raises(ValueError, match="high > low"):
        preprocess(rgb, value_range=(1, 0))


@pytest.mark.parametrize("shape", [(3, 40, 40), (1, 25, 25), (4, 1, 25, 30), (2, 3, 128, 128)])
def test_preprocess_accepts_batched_or_single_rgb_or_gray(shape):
    out = preprocess(torch.rand(*shape))
    assert out.shape == ((shape[0] if len(shape) == 4 else 1), 1, 128, 128)


def test_preprocess_accepts_numpy():
    assert preprocess(np.random.rand(3, 20, 20).astype(np.float32)).shape == (1, 1, 128, 128)


@pytest.mark.parametrize("images,message", [
    (torch.randint(0, 255, (3, 20, 20), dtype=torch.uint8), r"float images in \[0, 1\].*/ 255"),
    (torch.rand(20, 20, 3), r"C = 1 \(gray\) or 3 \(RGB\).*permute\(2, 0, 1\)"),
    (torch.rand(20, 20), r"got shape \(20, 20\)"),
    ("face.png", "got str"),
])
def test_preprocess_errors(images, message):
    with pytest.raises(ValueError, match=message):
        preprocess(images)


def test_embedding_of_a_sample_face_end_to_end():
    torch.manual_seed(0)
    model = resnet_arcface18().eval()
    with torch.no_grad():
        emb = model(preprocess(astronaut_face()))
    assert emb.shape == (1, 512) and bool(torch.isfinite(emb).all())


def test_pick_device(monkeypatch):
    monkeypatch.delenv("RESNET_ARCFACE_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert pick_device().type == expected
    assert pick_device("cpu").type == "cpu"
    monkeypatch.setenv("RESNET_ARCFACE_DEVICE", "cpu")
    assert pick_device().type == "cpu"
    with pytest.raises(ValueError, match="prefer must be"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available here"):
            pick_device("cuda")


def test_preprocess_size_feeds_a_configured_network():
    rgb = torch.rand(2, 3, 60, 50)
    out = preprocess(rgb, size=32)
    assert out.shape == (2, 1, 32, 32)
    # The same steps as GFPGAN's, only the resize target differs.
    gray = 0.2989 * (rgb[:, 0] * 2 - 1) + 0.5870 * (rgb[:, 1] * 2 - 1) + 0.1140 * (rgb[:, 2] * 2 - 1)
    expected = F.interpolate(gray.unsqueeze(1), (32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(preprocess(rgb, size=128), preprocess(rgb))
    with pytest.raises(ValueError, match=r"size must be a positive int.*got 0"):
        preprocess(rgb, size=0)
