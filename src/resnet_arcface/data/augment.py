"""Training augmentations for faces, from plain batched torch operations: :data:`AUGMENTATIONS`.

An augmentation changes a photo in ways that do not change *who* it shows, so the network learns to ignore
them. With ten photos per person (the Olivetti faces) or a few hundred synthetic identities, a network
memorises its training images within a few epochs; augmentation makes every epoch show new ones.

Every function here takes a batch ``images`` of shape ``(N, C, H, W)``, float in [0, 1] on any device, and a
CPU :class:`torch.Generator`, and returns a batch of the same shape, still in [0, 1]. All the randomness is
drawn from the generator (on the CPU, then moved to the images' device), so the same generator state gives
the same batch on every device and a resumed training run sees the same images.
:func:`resnet_arcface.fit` seeds one generator per epoch. Nothing here uses torchvision: its wheels pin one
torch build, and each transform is a few lines of ``affine_grid``/``grid_sample`` or ``conv2d``.

The ranges are for aligned, upright, roughly frontal face crops (as in the Olivetti faces and the synthetic
identities); each transform is a separate function, so a learner can draw or test any one of them.
"""
import math
from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F

#: An augmentation: ``f(images, generator) -> images`` (see the module docstring).
Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _check(images: torch.Tensor, generator: torch.Generator, name: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name}: images must be a float tensor (N, C, H, W) in [0, 1], got {got}.")
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError(f"{name}: generator must be a CPU torch.Generator (the draws are made on the CPU so every "
                         f"device sees the same batch), got {generator!r}.")


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``n`` draws from U(low, high), made on the CPU from ``generator`` and moved to ``device``."""
    return (low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)).float().to(device)


def no_augmentation(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """No augmentation: the images as they are (the generator is not used).

    Shape:
        - images, Output: ``(N, C, H, W)``
    """
    _check(images, generator, "no_augmentation")
    return images


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch left-right.

    Faces are nearly symmetric and a mirrored face is the same person, so this doubles the photos for free.
    (Never flip upside down: an upright face is part of what the network is asked to recognise.)

    Shape:
        - images, Output: ``(N, C, H, W)``
    """
    _check(images, generator, "random_flip")
    mirror = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(mirror[:, None, None, None], images.flip(3), images)


def warp(images: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate, zoom and shift each image about its centre (bilinear; the border pixels extend outwards).

    ``scale > 1`` zooms in (a smaller crop of the face fills the image), ``shift`` moves the content by a
    fraction of the side (``(dx, dy)``, +x right, +y down). Outside the photo the nearest border pixel is
    repeated rather than black, so no artificial edge appears that the network could key on.

    Args:
        images: Images in [0, 1].
        angle: Counter-clockwise rotation of each image's content, in degrees.
        scale: Zoom of each image (1: unchanged).
        shift: Translation of each image's content, as a fraction of its width and height.

    Shape:
        - images, Output: ``(N, C, H, W)``; angle, scale: ``(N,)``; shift: ``(N, 2)``
    """
    a = torch.deg2rad(angle.to(images.dtype))
    cos, sin = torch.cos(a) / scale, torch.sin(a) / scale
    # affine_grid maps *output* coordinates in [-1, 1] to where they are sampled in the input, so the matrix is
    # the inverse of the motion: rotate by -angle (the y axis points down), shrink by 1/scale, move by -2*shift.
    theta = torch.stack([torch.stack([cos, -sin, -2 * shift[:, 0]], 1),
                         torch.stack([sin, cos, -2 * shift[:, 1]], 1)], 1)  # (N, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False).clamp(0, 1)


def rotate(images: torch.Tensor, generator: torch.Generator, degrees: float = 10.0) -> torch.Tensor:
    """Rotate each image by a random angle in ``[-degrees, degrees]``.

    Why: people tilt their heads and cropping is never perfectly level; real face crops are aligned only to a
    few degrees. 10 degrees covers that without turning the face into a pose the test set never has.

    Shape:
        - images, Output: ``(N, C, H, W)``
    """
    _check(images, generator, "rotate")
    n, dev = len(images), images.device
    return warp(images, _uniform(n, -degrees, degrees, generator, dev), torch.ones(n, device=dev),
                torch.zeros(n, 2, device=dev))


def shift_scale(images: torch.Tensor, generator: torch.Generator, scale: Tuple[float, float] = (0.9, 1.15),
                shift: float = 0.06) -> torch.Tensor:
    """A random resized crop: zoom each image by a factor in ``scale`` and shift it by up to ``shift`` of its side.

    Why: a face detector's box wobbles in size and position from photo to photo; with ``scale`` up to 1.15 the
    crop loses a little of the chin and forehead, with 0.9 it shows a little more around the face, and a 6 %
    shift is a few pixels, about a detector's error. Identity must not depend on exact framing.

    Shape:
        - images, Output: ``(N, C, H, W)``
    """
    _check(images, generator, "shift_scale")
    n, dev = len(images), images.device
    zoom = torch.exp(_uniform(n, math.log(scale[0]), math.log(scale[1]), generator, dev))  # symmetric in/out
    offset = _uniform(2 * n, -shift, shift, generator, dev).view(n, 2)
    return warp(images, torch.zeros(n, device=dev), zoom, offset)


def brightness(images: torch.Tensor, generator: torch.Generator, delta: float = 0.12) -> torch.Tensor:
    """Add a random offset in ``[-delta, delta]`` to every pixel of each image (then clip to [0, 1]).

    Why: exposure changes from photo to photo (camera, time of day); 0.12 is about 30 gray levels of 255.

    Shape:
        - images, Output: ``(N, C, H, W)``
    """
    _check(images, generator, "brightness")
    b = _uniform(len(images), -delta, delta, generator, images.device)
    return (images + b[:, None, None, None]).clamp(0, 1)


def contrast(images: torch.Tensor, generator: torch.Generator, factor: Tuple[float, float] = (0.7, 1.3)) -> torch.Tensor:
    """Stretch each image's values about its own mean by a random factor in ``factor`` (then clip).

    Why: flat versus harsh light, and cameras' different tone curves; identity lives in the face's shape and
    shading pattern, not in how strong the shading is.

    Shape:
        - images, Output: ``(N, C, H, W)``
    """
    _check(images, generator, "contrast")
    c = _uniform(len(images), *factor, generator, images.device)[:, None, None, None]
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return ((images - mean) * c + mean).clamp(0, 1)


def gamma(images: torch.Tensor, generator: torch.Generator, gammas: Tuple[float, float] = (0.7, 1.4)) -> torch.Tensor:
    """Raise each image to a random power in ``gammas`` (log-uniform, so brightening and darkening are as likely).

    Why: gamma brightens or darkens the mid-tones while black stays black and white stays white, as different
    camera responses and JPEG pipelines do; unlike :func:`brightness` it never clips.

    Shape:
        - images, Output: ``(N, C, H, W)``
    """
    _check(images, generator, "gamma")
    g = torch.exp(_uniform(len(images), math.log(gammas[0]), math.log(gammas[1]), generator, images.device))
    # clamp_min: 0 ** g has an infinite gradient for g < 1; the value changes by at most 1e-6 ** 0.7 = 6e-5.
    return images.clamp_min(1e-6).pow(g[:, None, None, None]).clamp(0, 1)


def lighting(images: torch.Tensor, generator: torch.Generator, strength: float = 0.4) -> torch.Tensor:
    """Multiply each image by a linear ramp of light from a random direction: ``1 + a (x cos phi + y sin phi)``.

    ``a`` is uniform in ``[0, strength]`` and ``phi`` uniform in all directions; ``x`` and ``y`` run from -1 to 1
    across the image, so one side is ``1 + a`` times brighter and the other ``1 - a`` times darker.

    Why: the commonest difference between two photos of one person is where the light comes from. A ramp is
    the simplest model of a lamp to one side (a Lambertian face lit off-axis gets brighter towards the light);
    the Olivetti photos vary exactly so, while synthetic faces lit from the front do not.

    Shape:
        - images, Output: ``(N, C, H, W)``
    """
    _check(images, generator, "lighting")
    n, (h, w), dev = len(images), images.shape[2:], images.device
    a = _uniform(n, 0.0, strength, generator, dev)[:, None, None, None]
    phi = _uniform(n, 0.0, 2 * math.pi, generator, dev)[:, None, None, None]
    y = torch.linspace(-1, 1, h, device=dev, dtype=images.dtype)[:, None]
    x = torch.linspace(-1, 1, w, device=dev, dtype=images.dtype)[None, :]
    ramp = 1 + a * (x * torch.cos(phi) + y * torch.sin(phi))  # (N, 1, H, W)
    return (images * ramp).clamp(0, 1)


def blur(images: torch.Tensor, generator: torch.Generator, sigma: Tuple[float, float] = (0.0, 1.2),
         p: float = 0.5) -> torch.Tensor:
    """Gaussian-blur a random fraction ``p`` of the images, each with a standard deviation (in pixels) in ``sigma``.

    Why: focus, motion and upsampling from a small detection all soften a face; the network must not rely on
    fine texture that a slightly blurred photo of the same person lacks. The blur is separable (one 1-D kernel
    along each axis) and per image (a grouped convolution), with reflected borders so the edges keep their level.

    Shape:
        - images, Output: ``(N, C, H, W)``
    """
    _check(images, generator, "blur")
    n, c, h, w = images.shape
    dev = images.device
    s = _uniform(n, *sigma, generator, dev) * (_uniform(n, 0, 1, generator, dev) < p)  # 0: this image stays sharp
    radius = max(1, math.ceil(3 * sigma[1]))
    radius = min(radius, (min(h, w) - 1))  # reflect padding needs the pad to be smaller than the side
    t = torch.arange(-radius, radius + 1, device=dev, dtype=images.dtype)
    # sigma 0 is the identity (a delta kernel); the small floor keeps exp from dividing by zero.
    kernel = torch.exp(-t[None, :] ** 2 / (2 * s[:, None].clamp_min(1e-3) ** 2))  # (N, K)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N*C, K): one kernel per channel
    x = images.reshape(1, n * c, h, w)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=n * c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=n * c)
    return x.reshape(n, c, h, w).clamp(0, 1)


def faces(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The face augmentation: :func:`random_flip`, one warp (:func:`rotate` and :func:`shift_scale` together), then
    :func:`lighting`, :func:`brightness`, :func:`contrast`, :func:`gamma` and :func:`blur`, each with its defaults.

    Rotation, zoom and shift are composed into one resampling (two would blur twice). The photometric steps
    come after the geometric ones, as the light falls on the face where it ends up in the crop.

    Shape:
        - images, Output: ``(N, C, H, W)``
    """
    _check(images, generator, "faces")
    n, dev = len(images), images.device
    x = random_flip(images, generator)
    angle = _uniform(n, -10.0, 10.0, generator, dev)
    zoom = torch.exp(_uniform(n, math.log(0.9), math.log(1.15), generator, dev))
    offset = _uniform(2 * n, -0.06, 0.06, generator, dev).view(n, 2)
    x = warp(x, angle, zoom, offset)
    for step in (lighting, brightness, contrast, gamma, blur):
        x = step(x, generator)
    return x


#: Augmentations by name, as ``fit``'s ``augment`` and ``arcface-train --augment`` accept them.
AUGMENTATIONS: Dict[str, Augmentation] = {"none": no_augmentation, "flip": random_flip, "faces": faces}
