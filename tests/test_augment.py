"""Face augmentations: shapes, range, determinism, and that each transform does what its name says."""
import math

import pytest
import torch

from resnet_arcface.data import augment
from resnet_arcface.data.augment import AUGMENTATIONS

from single_thread import one_thread  # noqa: F401

OPS = [augment.random_flip, augment.rotate, augment.shift_scale, augment.brightness, augment.contrast, augment.gamma,
       augment.lighting, augment.blur, augment.faces, augment.no_augmentation]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(n: int = 6, c: int = 1, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=gen(seed))


def smooth(n: int = 4, size: int = 32) -> torch.Tensor:
    """Gray images with a smooth blob off-centre: resampling barely changes them, so motion is measurable."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    blob = torch.exp(-((x - 0.3) ** 2 + (y + 0.2) ** 2) / 0.1)
    return (0.1 + 0.8 * blob).expand(n, 1, size, size).clone()


def test_names():
    assert set(AUGMENTATIONS) == {"none", "flip", "faces"}
    assert AUGMENTATIONS["none"] is augment.no_augmentation and AUGMENTATIONS["flip"] is augment.random_flip


@pytest.mark.parametrize("op", OPS, ids=lambda f: f.__name__)
def test_shape_range_and_determinism(op):
    x = batch(c=3, size=20)
    a, b = op(x, gen(5)), op(x, gen(5))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    if op is not augment.no_augmentation:
        assert not torch.equal(op(x, gen(6)), a) or not torch.equal(op(x, gen(7)), a)  # the generator matters


@pytest.mark.parametrize("op", OPS, ids=lambda f: f.__name__)
def test_each_image_is_changed_on_its_own(op):
    x = batch(n=5)
    whole = op(x, gen(3))
    # The draws are per image and the transform image-wise: changing image 0 leaves the others' results alone.
    y = x.clone()
    y[0] = 1 - y[0]
    torch.testing.assert_close(op(y, gen(3))[1:], whole[1:], rtol=0, atol=1e-6)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"images must be a float tensor \(N, C, H, W\)"):
        augment.faces(torch.rand(3, 32, 32), gen())
    with pytest.raises(ValueError, match="CPU torch.Generator"):
        augment.faces(batch(), 0)  # type: ignore[arg-type]


def test_flip_mirrors_some_images_and_leaves_the_rest():
    x = batch(n=64)
    y = augment.random_flip(x, gen())
    mirrored = torch.tensor([torch.equal(a, b.flip(2)) for a, b in zip(x, y)])
    kept = torch.tensor([torch.equal(a, b) for a, b in zip(x, y)])
    assert bool((mirrored | kept).all()) and 10 < int(mirrored.sum()) < 54


def test_warp_by_nothing_is_the_identity():
    x = batch()
    n = len(x)
    out = augment.warp(x, torch.zeros(n), torch.ones(n), torch.zeros(n, 2))
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)
    torch.testing.assert_close(augment.rotate(x, gen(), degrees=0.0), x, rtol=0, atol=1e-5)
    torch.testing.assert_close(augment.shift_scale(x, gen(), scale=(1.0, 1.0), shift=0.0), x, rtol=0, atol=1e-5)


def centroid(images: torch.Tensor) -> torch.Tensor:
    """Centre of mass ``(x, y)`` of each image in pixels."""
    h, w = images.shape[2:]
    m = images.sum(dim=(1, 2, 3))
    ys = (images.sum(dim=(1, 3)) * torch.arange(h)).sum(1) / m
    xs = (images.sum(dim=(1, 2)) * torch.arange(w)).sum(1) / m
    return torch.stack([xs, ys], 1)


def test_warp_moves_rotates_and_zooms_the_way_its_arguments_say():
    x = smooth(n=1, size=64)
    c0 = centroid(x - 0.1)[0]
    # Shift right and down by 1/8 of the side: the blob moves by 8 pixels each way.
    moved = augment.warp(x, torch.zeros(1), torch.ones(1), torch.tensor([[0.125, 0.125]]))
    torch.testing.assert_close(centroid(moved - 0.1)[0] - c0, torch.tensor([8.0, 8.0]), rtol=0, atol=0.5)
    # Rotating 90 degrees counter-clockwise takes the blob from the right of centre (x - 31.5 > 0) to above it.
    turned = centroid(augment.warp(x, torch.tensor([90.0]), torch.ones(1), torch.zeros(1, 2)) - 0.1)[0] - 31.5
    before = c0 - 31.5
    torch.testing.assert_close(turned, torch.stack([before[1], -before[0]]), rtol=0, atol=0.5)
    # Zooming in by 2 doubles the peak's distance from the centre.
    def peak(image: torch.Tensor) -> torch.Tensor:
        k = int(image.flatten().argmax())
        return torch.tensor([k % 64, k // 64], dtype=torch.float32) - 31.5

    zoomed = augment.warp(x, torch.zeros(1), torch.full((1,), 2.0), torch.zeros(1, 2))[0]
    torch.testing.assert_close(peak(zoomed), 2 * peak(x[0]), rtol=0, atol=1.5)


def test_rotate_respects_its_range():
    x = smooth(n=200, size=64)
    c = centroid(augment.rotate(x, gen(), degrees=10.0) - 0.1) - 31.5
    c0 = centroid(x[:1] - 0.1)[0] - 31.5
    angles = torch.rad2deg(torch.atan2(-c[:, 1], c[:, 0]) - math.atan2(-float(c0[1]), float(c0[0])))
    assert float(angles.abs().max()) <= 10.5 and float(angles.abs().max()) > 8  # spans the range, never beyond


def test_brightness_shifts_the_mean_by_at_most_delta():
    x = torch.full((100, 1, 8, 8), 0.5)
    y = augment.brightness(x, gen(), delta=0.12)
    shift = y.mean(dim=(1, 2, 3)) - 0.5
    assert float(shift.abs().max()) <= 0.12 + 1e-6 and float(shift.std()) > 0.03
    torch.testing.assert_close(y, y[:, :, :1, :1].expand_as(y))  # the same offset on every pixel


def test_contrast_keeps_the_mean_and_scales_the_spread():
    x = 0.5 + 0.1 * (batch(n=50) - 0.5)  # spread small enough that nothing clips
    y = augment.contrast(x, gen(), factor=(0.7, 1.3))
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), rtol=0, atol=1e-5)
    ratio = y.std(dim=(1, 2, 3)) / x.std(dim=(1, 2, 3))
    assert 0.7 - 1e-4 <= float(ratio.min()) and float(ratio.max()) <= 1.3 + 1e-4 and float(ratio.std()) > 0.05


def test_gamma_keeps_black_and_white_and_is_a_power():
    x = torch.linspace(0, 1, 64).expand(10, 1, 8, 64).clone()
    y = augment.gamma(x, gen(), gammas=(0.7, 1.4))
    assert float(y[..., 0].max()) < 1e-3 and float(y[..., -1].min()) == pytest.approx(1.0)
    g = torch.log(y[:, 0, 0, 32]) / torch.log(x[:, 0, 0, 32])  # the exponent each image got
    torch.testing.assert_close(y[..., 1:], x[..., 1:] ** g[:, None, None, None], rtol=0, atol=1e-5)
    assert 0.7 - 1e-4 <= float(g.min()) and float(g.max()) <= 1.4 + 1e-4


def test_lighting_is_a_ramp_that_brightens_one_side():
    x = torch.full((50, 1, 16, 16), 0.5)
    y = augment.lighting(x, gen(), strength=0.4)
    factor = y / 0.5  # 1 + a (x cos phi + y sin phi)
    torch.testing.assert_close(factor.mean(dim=(1, 2, 3)), torch.ones(50), rtol=0, atol=1e-5)  # no net exposure
    spread = factor.amax(dim=(1, 2, 3)) - factor.amin(dim=(1, 2, 3))
    assert float(spread.max()) <= 2 * 0.4 * math.sqrt(2) + 1e-5 and float(spread.max()) > 0.4
    # A ramp: the second difference along both axes vanishes.
    torch.testing.assert_close(factor[..., 2:] - 2 * factor[..., 1:-1] + factor[..., :-2],
                               torch.zeros(50, 1, 16, 14), rtol=0, atol=1e-5)
    torch.testing.assert_close(augment.lighting(x, gen(), strength=0.0), x)


def test_blur_smooths_keeps_the_mean_and_sometimes_leaves_an_image_sharp():
    x = torch.zeros(40, 1, 17, 17)
    x[:, :, 8, 8] = 1.0  # a point: its blurred image is the kernel itself
    y = augment.blur(x, gen(), sigma=(0.5, 1.2), p=0.5)
    sharp = y[:, 0, 8, 8] > 0.999
    assert 5 < int(sharp.sum()) < 35  # about half are blurred
    torch.testing.assert_close(y.sum(dim=(1, 2, 3)), torch.ones(40), rtol=0, atol=1e-4)  # the light is kept
    assert float(y[~sharp][:, 0, 8, 8].max()) < 0.7  # blurred ones spread the point
    torch.testing.assert_close(augment.blur(x, gen(), p=0.0), x, rtol=0, atol=1e-6)
    tiny = torch.rand(2, 1, 3, 3, generator=gen())
    assert augment.blur(tiny, gen(), p=1.0).shape == tiny.shape  # the kernel radius adapts to small images


def test_faces_keeps_identity_features_roughly():
    # The whole chain changes images but not beyond recognition: correlation with the original stays high.
    x = smooth(n=32, size=64)
    y = augment.faces(x, gen())
    def corr(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        a, b = (u - u.mean((1, 2, 3), keepdim=True)).flatten(1), (v - v.mean((1, 2, 3), keepdim=True)).flatten(1)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))

    best = torch.maximum(corr(x, y), corr(x.flip(3), y))  # half the images are mirrored first
    assert float(best.min()) > 0.5 and float(best.median()) > 0.8 and not torch.allclose(x, y)


def test_runs_on_the_images_device_with_cpu_draws():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = batch(c=3)
    torch.testing.assert_close(augment.faces(x.cuda(), gen(2)).cpu(), augment.faces(x, gen(2)), rtol=0, atol=1e-4)
