"""Synthetic identities: gray cartoon faces that vary like photos of the same person.

No face data set with several labelled photos per person ships inside an installable package, so
the book draws its own. An *identity* is a fixed set of geometry and appearance parameters (face
shape, eye spacing and size, nose, mouth, brows, hair line and style, skin and hair tone, ears, beard,
glasses); every *image* of it adds the nuisances a photograph has (expression, gaze, lighting
direction, in-plane rotation up to +-15 degrees, shift and scale, background, exposure, blur, noise,
and, in one photo in ten, an occluding patch). The nuisances move far more pixels than the identity
does, so raw-pixel similarity verifies identities barely better than chance, while a trained network
does well: that gap is what face-recognition training is for. The ranges are module constants
(:data:`IDENTITY_RANGES`, :data:`NUISANCE_RANGES`), chosen so that the small network learns them in
minutes on a CPU (see :mod:`resnet_arcface.pretrained`).

Identities are keyed by ``(seed, index)``: identity ``i`` of seed ``s`` is drawn from its own
random stream (numpy's ``SeedSequence([s, i])``), for seeds in [0, 2**32): a larger seed would alias a smaller
one's identities, so it is refused. Two consequences the training code relies on:

* *Disjoint across seeds.* Identities of different seeds are independent continuous draws, so
  no identity of seed 1 equals one of seed 0 (that has probability zero), and a held-out identity
  is no closer to the training ones than two training identities are to each other. Train on one
  seed, verify on another, and the test is open-set.
* *Stable prefixes.* Identity ``i`` and its first ``k`` images do not depend on how many identities
  or images were asked for.

Rendering is vectorised over the batch in torch: every part is a soft-edged (anti-aliased)
ellipse or band evaluated on an ``(N, size, size)`` coordinate grid.
"""
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

#: Identity parameters: name -> (low, high). Lengths are in face units (the head is about 1.2 wide).
IDENTITY_RANGES: Dict[str, Tuple[float, float]] = {
    "face_w": (0.44, 0.60), "face_h": (0.60, 0.76), "jaw": (0.0, 0.45),   # half-axes; jaw taper
    "skin": (0.3, 0.9), "hair": (0.0, 1.0),                            # gray tones
    "hairline": (-0.62, -0.30), "hair_curve": (-0.2, 0.6), "parting": (-0.35, 0.35),
    "hair_volume": (1.0, 1.35), "hair_length": (-0.25, 0.65),               # how far the sides reach down
    "eye_y": (-0.20, 0.02), "eye_dx": (0.15, 0.29), "eye_w": (0.07, 0.13), "eye_ratio": (0.4, 0.75),
    "iris": (0.0, 0.45),
    "brow_gap": (0.07, 0.16), "brow_thick": (0.018, 0.05), "brow_tilt": (-0.35, 0.35), "brow_len": (0.07, 0.15),
    "brow_tone": (0.0, 0.45),
    "nose_len": (0.12, 0.26), "nose_w": (0.035, 0.085),
    "mouth_gap": (0.10, 0.22), "mouth_w": (0.10, 0.24), "lip": (0.012, 0.04), "lip_tone": (0.45, 0.9),
    "ear": (0.05, 0.12), "beard": (0.0, 1.0),                              # beard shows above 0.6
    "glasses": (0.0, 1.0), "frame": (0.0, 0.5),                            # glasses above 0.7; frame tone
}
#: Per-image nuisances: name -> (low, high). Lengths in image units ([-1, 1] spans the image).
NUISANCE_RANGES: Dict[str, Tuple[float, float]] = {
    "angle": (-15.0, 15.0), "scale": (1.08, 1.18), "tx": (-0.03, 0.03), "ty": (-0.03, 0.03),  # angle: triangular
    "smile": (-1.0, 1.0), "open": (-0.6, 1.0), "raise": (-1.0, 1.0), "blink": (0.35, 1.0), "gaze": (-0.35, 0.35),
    "light_az": (0.0, 2 * np.pi), "light_el": (0.0, 1.05), "ambient": (0.5, 0.85),
    "bg": (0.0, 1.0), "bg_gx": (-0.3, 0.3), "bg_gy": (-0.3, 0.3),
    "contrast": (0.8, 1.15), "brightness": (-0.08, 0.08), "gamma": (0.85, 1.2),
    "blur": (0.0, 0.3), "noise": (0.0, 0.015),                              # blur sigma in 32-px pixels
    "occlude": (0.0, 1.0), "occ_x": (-0.65, 0.65), "occ_y": (-0.65, 0.65), "occ_w": (0.08, 0.22),
    "occ_h": (0.05, 0.15), "occ_tone": (0.0, 1.0),
}
#: Fraction of images with an occluding rectangle (a hand, a scarf, a sign in front of the face).
OCCLUSION_P = 0.1
_CHUNK_PIXELS = 1 << 16  # pixels rendered at once: small enough for the CPU cache, large enough for few ops


#: Seeds are 32-bit: ``SeedSequence([seed, i])`` splits a larger int into 32-bit words, so seed ``2**32 + k``
#: would draw some of seed ``k``'s identities, and "held-out" identities could be training ones.
SEED_LIMIT = 2**32


def _check_int(name: str, value: object, low: int, limit: Optional[int] = None) -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low
            or (limit is not None and value >= limit)):
        bound = "" if limit is None else " and below 2**32"
        raise ValueError(f"synthetic_faces: {name} must be an int >= {low}{bound}, got {value!r}.")
    return int(value)


def _streams(seed: int, index: int) -> Tuple[np.random.Generator, ...]:
    """Identity ``index``'s own random streams: its parameters, its images' nuisances, their pixel noise."""
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(3))


def identity_parameters(num_identities: int, seed: int = 0) -> torch.Tensor:
    """Each identity's parameters as uniform draws in [0, 1) (one column per :data:`IDENTITY_RANGES` key).

    Shape:
        - Output: ``(num_identities, len(IDENTITY_RANGES))``, float64.
    """
    num_identities = _check_int("num_identities", num_identities, 1)
    seed = _check_int("seed", seed, 0, SEED_LIMIT)
    k = len(IDENTITY_RANGES)
    return torch.from_numpy(np.stack([_streams(seed, i)[0].random(k) for i in range(num_identities)]))


def _scale(u: torch.Tensor, ranges: Dict[str, Tuple[float, float]]) -> Dict[str, torch.Tensor]:
    """Uniform draws ``(N, K)`` -> name -> values ``(N, 1, 1)`` in each range, ready to broadcast on a grid."""
    lo = torch.tensor([r[0] for r in ranges.values()], dtype=torch.float32)
    hi = torch.tensor([r[1] for r in ranges.values()], dtype=torch.float32)
    v = lo + (hi - lo) * u.float()
    return {name: v[:, j, None, None] for j, name in enumerate(ranges)}


def _soft(d: torch.Tensor, edge: Union[float, torch.Tensor]) -> torch.Tensor:
    """Anti-aliased inside-mask of a region whose signed distance (positive inside) is ``d``."""
    return torch.sigmoid(d / edge)


def _ellipse(x: torch.Tensor, y: torch.Tensor, cx, cy, a, b, edge: torch.Tensor) -> torch.Tensor:
    """Soft mask of the ellipse with centre (cx, cy) and half-axes (a, b).

    The signed distance to the rim is approximated by ``(1 - d^2) / 2 * min(a, b)`` with ``d`` the
    normalised radius: exact to first order at the rim, where the soft edge lives, and no square root.
    """
    dx, dy = (x - cx) / a, (y - cy) / b
    return _soft((1 - dx * dx - dy * dy) * (0.5 * torch.minimum(torch.as_tensor(a), torch.as_tensor(b))), edge)


def _paint(img: torch.Tensor, mask: torch.Tensor, tone) -> torch.Tensor:
    """Paint ``tone`` over ``img`` where ``mask`` (in [0, 1]) is on: painter's algorithm with alpha."""
    return img + mask * (tone - img)


def _render(p: Dict[str, torch.Tensor], n: Dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Draw one chunk: identity parameters ``p`` and nuisances ``n`` (each ``(B, 1, 1)``) -> ``(B, size, size)``."""
    edge_img = 1.0 / size  # half a pixel in image units ([-1, 1] spans size pixels)
    r = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    v, u = torch.meshgrid(r, r, indexing="ij")  # image coordinates, (size, size): u right, v down
    # Inverse similarity transform: image -> face coordinates (the face is rotated, scaled and shifted).
    # In-plane rotation: triangular on the angle's range, so most photos are nearly upright, a few at +-15 deg.
    a = n["angle"] / NUISANCE_RANGES["angle"][1]
    th = torch.deg2rad(NUISANCE_RANGES["angle"][1] * torch.sign(a) * (1 - torch.sqrt(1 - a.abs())))
    cu, cv = u - n["tx"], v - n["ty"]
    x = (torch.cos(th) * cu + torch.sin(th) * cv) / n["scale"]   # (B, size, size)
    y = (-torch.sin(th) * cu + torch.cos(th) * cv) / n["scale"]
    e = edge_img / n["scale"]  # half a pixel in face units, (B, 1, 1)

    # Background: a tone with a linear gradient (a wall, lit from somewhere).
    img = (n["bg"] + n["bg_gx"] * u + n["bg_gy"] * v).expand(-1, size, size)

    # Head: an ellipse whose width tapers towards the chin by `jaw`.
    yc = y - 0.05
    taper = 1 - p["jaw"] * torch.clamp(yc / p["face_h"], 0, 1) ** 2
    face = _ellipse(x / taper, yc, 0, 0, p["face_w"], p["face_h"], e)
    # Hair behind the head (top and sides, down to hair_length), and ears.
    hair_back = _ellipse(x, yc, 0, -0.06, p["face_w"] * p["hair_volume"], p["face_h"] * p["hair_volume"], e)
    hair_back = hair_back * _soft(p["hair_length"] - yc, e)
    img = _paint(img, hair_back, p["hair"])
    ears = (_ellipse(x, y, p["face_w"] * 0.98, p["eye_y"] + 0.1, p["ear"] * 0.6, p["ear"], e)
            + _ellipse(x, y, -p["face_w"] * 0.98, p["eye_y"] + 0.1, p["ear"] * 0.6, p["ear"], e)).clamp(max=1)
    img = _paint(img, ears, p["skin"] * 0.92)
    img = _paint(img, face, p["skin"])
    head = torch.maximum(torch.maximum(face, hair_back), ears)

    # Fringe: hair over the forehead above a curved, tilted hair line.
    line = p["hairline"] + p["hair_curve"] * x ** 2 + p["parting"] * x * 0.3
    line = torch.minimum(line, p["eye_y"] - p["brow_gap"] - 0.09)  # a fringe stops above the brows
    img = _paint(img, face * _soft(line - y, e), p["hair"])
    # Beard (only identities with beard > 0.6): the lower face below the nose, hair-toned.
    beard_alpha = torch.clamp((p["beard"] - 0.6) / 0.4, 0, 1) * 0.85
    tip = p["eye_y"] + p["nose_len"]
    img = _paint(img, face * _soft(y - (tip + 0.06), e) * beard_alpha, p["hair"])

    # Brows: tilted bars above the eyes, raised by expression.
    for side in (-1.0, 1.0):
        bx, by = side * p["eye_dx"], p["eye_y"] - p["brow_gap"] - 0.03 * n["raise"]
        c, s = torch.cos(p["brow_tilt"] * side), torch.sin(p["brow_tilt"] * side)
        lx, ly = c * (x - bx) + s * (y - by), -s * (x - bx) + c * (y - by)
        img = _paint(img, _ellipse(lx, ly, 0, 0, p["brow_len"], p["brow_thick"], e), p["brow_tone"])
    # Eyes: a white, an iris that follows the gaze, both closed partly by blinking.
    for side in (-1.0, 1.0):
        ex = side * p["eye_dx"]
        eye = _ellipse(x, y, ex, p["eye_y"], p["eye_w"], p["eye_w"] * p["eye_ratio"] * n["blink"], e)
        img = _paint(img, eye, 0.92)
        iris = _ellipse(x, y, ex + n["gaze"] * p["eye_w"], p["eye_y"], p["eye_w"] * 0.45, p["eye_w"] * 0.45, e)
        img = _paint(img, eye * iris, p["iris"])
    # Glasses (only identities with glasses > 0.7): a round frame about each eye and a bridge.
    worn = (p["glasses"] > 0.7).float()
    for side in (-1.0, 1.0):
        ex, r = side * p["eye_dx"], p["eye_w"] * 1.45
        ring = _soft(0.028 - ((x - ex) ** 2 + (y - p["eye_y"]) ** 2).sqrt().sub(r).abs(), e)
        img = _paint(img, ring * worn, p["frame"])
    bridge = _soft(0.015 - (y - p["eye_y"] + 0.02).abs(), e) * _soft(p["eye_dx"] - p["eye_w"] * 1.45 - x.abs(), e)
    img = _paint(img, bridge * worn, p["frame"])
    # Nose: a shadow on the side away from the light, and two nostrils.
    light_x = torch.cos(n["light_az"]) * torch.sin(n["light_el"])
    nose_cy = (p["eye_y"] + tip) / 2
    shadow = _ellipse(x, y, -torch.sign(light_x) * p["nose_w"] * 0.7, nose_cy + 0.02, p["nose_w"] * 0.35,
                      p["nose_len"] / 2, e) * light_x.abs()
    img = _paint(img, shadow, p["skin"] * 0.6)
    for side in (-1.0, 1.0):
        img = _paint(img, _ellipse(x, y, side * p["nose_w"] * 0.55, tip, p["nose_w"] * 0.4, p["nose_w"] * 0.25, e),
                     p["skin"] * 0.35)
    # Mouth: lips along a curve (smile lifts the corners), dark inside when open.
    mouth_y = tip + p["mouth_gap"]
    xm = x / p["mouth_w"]
    across = torch.clamp(1 - xm ** 2, min=0)
    dy = (y - (mouth_y - n["smile"] * 0.05 * xm ** 2)).abs()
    opening = torch.clamp(n["open"], min=0) * 0.045 * torch.sqrt(across)
    inside_width = _soft((1 - xm.abs()) * p["mouth_w"], e)
    img = _paint(img, inside_width * _soft(p["lip"] * torch.sqrt(across) + opening - dy, e), p["skin"] * p["lip_tone"])
    img = _paint(img, inside_width * _soft(opening - dy, e), 0.08)

    # Lighting: Lambertian shading of the head as an ellipsoid, from this photo's light direction.
    nx, ny = x / p["face_w"], yc / p["face_h"]
    nz = torch.sqrt(torch.clamp(1 - nx ** 2 - ny ** 2, min=0.05))
    norm = torch.sqrt(nx ** 2 + ny ** 2 + nz ** 2)
    lx, ly, lz = light_x, torch.sin(n["light_az"]) * torch.sin(n["light_el"]), torch.cos(n["light_el"])
    lambert = torch.clamp((nx * lx + ny * ly + nz * lz) / norm, min=0)
    img = img * (1 - head + head * (n["ambient"] + (1 - n["ambient"]) * lambert * 1.15))

    # Occlusion: a rectangle in front of the face, in image coordinates.
    occ = (_soft(n["occ_w"] - (u - n["occ_x"]).abs(), edge_img) * _soft(n["occ_h"] - (v - n["occ_y"]).abs(), edge_img))
    img = _paint(img, occ * (n["occlude"] < OCCLUSION_P), n["occ_tone"])
    # Exposure: contrast about mid-gray, brightness, gamma.
    img = ((img - 0.5) * n["contrast"] + 0.5 + n["brightness"]).clamp(0, 1) ** n["gamma"]
    return img


def _blur(img: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Gaussian blur with a different sigma (in pixels) per image: one separable grouped convolution.

    The kernel's radius follows ``max_sigma``, not the batch, so an image does not depend on its neighbours.

    Shape:
        - Input: ``(B, H, W)`` and sigma ``(B,)``; output ``(B, H, W)``.
    """
    radius = max(1, int(np.ceil(3 * max_sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma.clamp(min=1e-3)[:, None]) ** 2)
    k = k / k.sum(1, keepdim=True)  # (B, 2r+1); sigma -> 0 gives the identity kernel
    x = F.pad(img[None], (radius, radius, radius, radius), mode="replicate")  # (1, B, H+2r, W+2r)
    x = F.conv2d(x, k[:, None, None, :], groups=img.shape[0])  # along rows
    x = F.conv2d(x, k[:, None, :, None], groups=img.shape[0])  # along columns
    return x[0]


def synthetic_faces(num_identities: int, per_identity: int, size: int = 128,
                    seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Render ``per_identity`` photos of each of ``num_identities`` synthetic identities.

    Deterministic: the same arguments give the same images. Different seeds give disjoint
    identities (see the module docstring), so ``seed=0`` for training and ``seed=1`` for
    held-out verification is an open-set split.

    Args:
        num_identities: How many identities (labels ``0 .. num_identities - 1``).
        per_identity: Images per identity.
        size: Side of the square images, in pixels (at least 8). The drawing scales with it.
        seed: Int in [0, 2**32) that selects the identities and their images (:data:`SEED_LIMIT`).

    Returns:
        ``(images, labels)``: gray images in [0, 1], grouped by identity, and their identity labels.

    Shape:
        - images: ``(num_identities * per_identity, 1, size, size)``, float32 in [0, 1].
        - labels: ``(num_identities * per_identity,)``, int64.
    """
    num_identities = _check_int("num_identities", num_identities, 1)
    per_identity = _check_int("per_identity", per_identity, 1)
    size = _check_int("size", size, 8)
    seed = _check_int("seed", seed, 0, SEED_LIMIT)
    ids, nuis, noise = [], [], []
    for i in range(num_identities):
        id_rng, img_rng, noise_rng = _streams(seed, i)
        ids.append(id_rng.random(len(IDENTITY_RANGES)))
        nuis.append(img_rng.random((per_identity, len(NUISANCE_RANGES))))
        noise.append(noise_rng.standard_normal((per_identity, size, size), dtype=np.float32))
    id_u = torch.from_numpy(np.repeat(np.stack(ids), per_identity, axis=0))  # (N, K_id)
    nuis_u = torch.from_numpy(np.concatenate(nuis))  # (N, K_nuisance): image j of identity i is row i*per+j
    unit_noise = torch.from_numpy(np.concatenate(noise))  # (N, size, size)
    out, step = [], max(1, _CHUNK_PIXELS // (size * size))
    for start in range(0, id_u.shape[0], step):
        chunk = slice(start, start + step)
        p, n = _scale(id_u[chunk], IDENTITY_RANGES), _scale(nuis_u[chunk], NUISANCE_RANGES)
        px = size / 32  # blur is given in pixels of a 32-px image, so it looks alike at every size
        img = _blur(_render(p, n, size), n["blur"].flatten() * px, NUISANCE_RANGES["blur"][1] * px)
        out.append((img + unit_noise[chunk] * n["noise"]).clamp(0, 1))
    images = torch.cat(out)[:, None]  # (N, 1, size, size)
    labels = torch.arange(num_identities).repeat_interleave(per_identity)
    return images, labels
