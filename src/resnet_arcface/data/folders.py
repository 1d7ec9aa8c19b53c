"""Photographs in folders, one sub-folder per identity: ``DIR/<identity>/<image>``."""
from pathlib import Path
from typing import Any, List, Tuple

import numpy as np
import torch

from .._optional import require
from .transforms import preprocess

#: File suffixes read as images from ``--data`` folders (anything else there is skipped).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"}


def read_image_folder(root: Path, size: int) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """Every image under ``root/<identity>/``, gray, resized to ``size`` as :func:`preprocess` does, in [0, 1].

    Returns:
        ``(images (N, 1, size, size), labels (N,), identity folder names)``.
    """
    require("PIL", "data", "read_image_folder")  # Pillow reads the photographs
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not root.is_dir():
        raise ValueError(f"--data {root}: no such folder; give a folder with one sub-folder of images per identity.")
    names, images, labels = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            continue
        for path in files:
            try:
                with Image.open(path) as img:
                    upright = ImageOps.exif_transpose(img)  # phone photos store their rotation in EXIF
                    rgb = _rgb01(upright)
            except (UnidentifiedImageError, OSError, ValueError) as err:
                raise ValueError(f"--data: cannot read image {path} ({type(err).__name__}: {err}); "
                                 f"replace or remove it.") from None
            x = preprocess(torch.from_numpy(rgb).permute(2, 0, 1), size=size)  # (1, 1, size, size) in [-1, 1]
            images.append((x[0] + 1) / 2)
            labels.append(len(names))
        names.append(folder.name)
    if not images:
        raise ValueError(f"--data {root}: no images found; expected {root}/<identity>/<image> files with suffix "
                         f"{', '.join(sorted(IMAGE_SUFFIXES))}.")
    if len(names) < 2:
        raise ValueError(f"--data {root}: only one identity ({names[0]}); a recognition network needs at least two "
                         f"sub-folders of images (one per person).")
    return torch.stack(images), torch.tensor(labels), names


def _rgb01(img: Any) -> np.ndarray:
    """A Pillow image as float32 RGB in [0, 1], (H, W, 3).

    16-bit gray images are scaled by 65535: Pillow's ``convert("RGB")`` clips them at 255, which would turn
    nearly every pixel white. Pillow opens them as mode ``I;16`` (or ``I``, in older versions and for TIFFs).
    """
    if img.mode.startswith("I;16") or img.mode == "I":
        gray = np.asarray(img, dtype=np.float32)
        if gray.min() < 0 or gray.max() > 65535:
            raise ValueError("integer pixels outside 0..65535 have no defined range; save as 8- or 16-bit")
        return np.repeat((gray / 65535.0)[..., None], 3, axis=2)
    if img.mode == "F":
        raise ValueError("32-bit float images have no defined range; save them as 8- or 16-bit")
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255
