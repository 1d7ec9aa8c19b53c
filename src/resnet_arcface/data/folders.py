"""Photographs in folders, one sub-folder per identity: ``DIR/<identity>/<image>``.

:class:`FaceFolder` is the data set that training streams from: a fast scan at construction finds the files
(and the errors a data set of photographs has: a missing or empty folder, one identity, files that are not
images), and each item is decoded only when a :class:`torch.utils.data.DataLoader` worker asks for it, so
memory does not grow with the number of photographs. :func:`load_face` is the one decoding path, used by the
data set, by the packed format (:mod:`resnet_arcface.data.packed`) and by :func:`read_image_folder`.
"""
import os
from array import array
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .._optional import require
from .transforms import preprocess

#: File suffixes read as images from ``--data`` folders (anything else there is skipped).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"}

#: What :class:`FaceFolder`'s scan checks in each file: ``"none"`` (names only), ``"header"`` (Pillow identifies
#: the format and reads the size: catches files that are not images, empty files and cut-off headers) or
#: ``"decode"`` (every file fully decoded once: also catches truncated pixel data, at the cost of one epoch of
#: decoding).
CHECKS = ("none", "header", "decode")


class UnreadableImageError(ValueError):
    """A file in a ``--data`` folder that Pillow cannot decode; the message names it and says what to do.

    Raised inside a :class:`~torch.utils.data.DataLoader` worker, PyTorch re-raises the exception in the main
    process as ``type(err)("Caught ... in DataLoader worker process 0.\\nOriginal Traceback ...")``, a
    many-line message. The constructor recognises that form and keeps only the original message, its last
    line, so that a command-line front end still prints one line naming the file.
    """

    def __init__(self, message: str) -> None:
        marker = f"{type(self).__name__}: "
        if message.startswith("Caught ") and marker in message:
            message = message.rstrip().rsplit(marker, 1)[1]
        super().__init__(message)


def _unreadable(path: Path, err: BaseException) -> UnreadableImageError:
    return UnreadableImageError(f"--data: cannot read image {path} ({type(err).__name__}: {err}); "
                                f"replace or remove it.")


def load_face(path: Union[str, Path], size: int) -> torch.Tensor:
    """One photograph as the network's gray input at ``size``, in uint8: the decoding every data path shares.

    The steps are those of :func:`~resnet_arcface.data.transforms.preprocess` (GFPGAN's luma, then a bilinear
    resize) on the photograph in [0, 1], after turning it upright by its EXIF orientation (phone photos store
    their rotation there). 16-bit gray is scaled by 65535, not clipped at 255. The result is rounded to 8 bits:
    4 times smaller than float32 in memory, in worker-to-trainer transfers and on disk in the packed format,
    and within 0.5/255 of the unrounded value.

    Raises:
        UnreadableImageError: Pillow cannot read the file, or its pixels have no defined range (32-bit float,
            integers outside 16 bits); the message names the file.

    Shape:
        - Output: ``(1, size, size)``, uint8 (divide by 255 for [0, 1])
    """
    require("PIL", "data", "read_image_folder")  # Pillow reads the photographs
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = _rgb01(ImageOps.exif_transpose(img))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:  # SyntaxError: some broken headers
        raise _unreadable(Path(path), err) from None
    x = preprocess(torch.from_numpy(rgb).permute(2, 0, 1), size=size)[0]  # (1, size, size) in [-1, 1]
    # Bilinear weights are convex, so x stays in [-1, 1]; the clamp only guards rounding at the ends.
    return ((x + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


class FaceFolder(Dataset):
    """The photographs under ``root/<identity>/``, decoded one at a time: item ``i`` is ``(image, label)``.

    Construction scans the folder: sorted identity sub-folders (hidden ones, such as ``.git``, skipped), and in
    each the files whose suffix is in :data:`IMAGE_SUFFIXES` (hidden files, such as macOS's ``._photo.jpg``
    copies, skipped). Identities are numbered in sorted order; an identity folder without images is skipped.
    Nothing is decoded then: an item is decoded by :func:`load_face` when it is asked for, in whichever
    :class:`~torch.utils.data.DataLoader` worker asks. What the scan holds per file is its name, stored in one
    byte buffer with offsets rather than as Python strings, so that forked DataLoader workers do not copy it
    page by page as Python's reference counts touch each object.

    The scan's ``check`` (:data:`CHECKS`) finds bad files before training rather than an hour into it:

    * ``"header"`` (default): each file is opened with Pillow, which identifies the format and reads the image
      size from the first bytes, on ``threads`` threads (the work is file I/O). It catches what a folder of
      photographs usually holds by mistake: text files with an image suffix, empty or cut-off downloads, other
      formats renamed. Cost, measured on a 2-core machine with the files in the page cache: about 120 µs per
      file, a sixth of decoding it (``benchmarks/data_pipeline.md``). A file whose header is whole but whose
      pixel data is cut off passes, and fails when a worker decodes it, with the same message.
    * ``"decode"``: every file is fully decoded once, as in training: nothing can fail later, at the cost of
      one epoch of decoding.
    * ``"none"``: names only, for a folder already checked.

    Args:
        root: The folder; one sub-folder of images per identity.
        size: Side of the square gray images the items have (the network's ``input_size``).
        check: ``"header"``, ``"decode"`` or ``"none"``.
        threads: Threads for the check (default: ``min(8, CPU count)``).

    Attributes:
        labels: Identity of every item, ``(N,)`` int64, numbers into :attr:`names`.
        names: The identity folder names, in label order.

    Raises:
        ValueError: ``root`` is not a folder, holds no images, or holds one identity only.
        UnreadableImageError: The check found a file Pillow cannot read.

    Shape:
        - Item: ``((1, size, size) uint8, int)``
    """

    def __init__(self, root: Union[str, Path], size: int, *, check: str = "header",
                 threads: Optional[int] = None) -> None:
        if check not in CHECKS:
            raise ValueError(f"FaceFolder: check must be one of {CHECKS}, got {check!r}.")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"FaceFolder: size must be a positive int (the network's input_size), got {size!r}.")
        self.root, self.size = Path(root), size
        self.names, self._blob, self._offsets, self.labels = _scan(self.root)
        if check != "none":
            self._check(check, threads)

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, index: int) -> Path:
        """The file of item ``index``."""
        name = os.fsdecode(self._blob[self._offsets[index]:self._offsets[index + 1]])
        return self.root / self.names[int(self.labels[index])] / name

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        return load_face(self.path(index), self.size), int(self.labels[index])

    def __repr__(self) -> str:
        return f"FaceFolder({str(self.root)!r}, size={self.size}): {len(self)} images of {len(self.names)} identities"

    def _check(self, check: str, threads: Optional[int]) -> None:
        from PIL import Image, UnidentifiedImageError

        def header(i: int) -> None:
            path = self.path(i)
            try:
                with Image.open(path) as img:
                    img.size  # noqa: B018  (opening reads the header; the size is in it)
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
                raise _unreadable(path, err) from None

        work = header if check == "header" else (lambda i: load_face(self.path(i), self.size))
        threads = threads or min(8, os.cpu_count() or 1)
        if threads == 1:
            for i in range(len(self)):
                work(i)
            return
        def block(start: int) -> None:
            for i in range(start, min(start + 512, len(self))):
                work(i)

        with ThreadPoolExecutor(threads) as pool:
            # Blocks of 512 files: a thread pool's map makes one Future per item up front (its chunksize is for
            # process pools only), about 1.5 kB each, which at 200 k files held 300 MB. map raises the first
            # failure in block order, so the file named does not depend on timing.
            for _ in pool.map(block, range(0, len(self), 512)):
                pass


def _scan(root: Path) -> Tuple[List[str], bytes, np.ndarray, torch.Tensor]:
    """``(identity names, file names as one byte string, their offsets in it (N + 1,), labels (N,))`` under
    ``root``, with the one-line errors of an unusable folder.

    Built folder by folder, so that the Python strings of only one folder exist at a time: a list of 200 k
    file names would hold about 25 MB while the scan runs; the byte string and offsets hold about 25 bytes
    per file.
    """
    if not root.is_dir():
        raise ValueError(f"--data {root}: no such folder; give a folder with one sub-folder of images per identity.")
    with os.scandir(root) as entries:
        folders = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    names: List[str] = []
    blob, ends, labels = bytearray(), array("q", [0]), array("q")
    for folder in folders:
        with os.scandir(root / folder) as entries:
            found = sorted(e.name for e in entries if not e.name.startswith(".")
                           and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file())
        for name in found:
            blob += os.fsencode(name)
            ends.append(len(blob))
        if found:
            labels.extend([len(names)] * len(found))
            names.append(folder)
    if not labels:
        raise ValueError(f"--data {root}: no images found; expected {root}/<identity>/<image> files with suffix "
                         f"{', '.join(sorted(IMAGE_SUFFIXES))}.")
    if len(names) < 2:
        raise ValueError(f"--data {root}: only one identity ({names[0]}); a recognition network needs at least two "
                         f"sub-folders of images (one per person).")
    return (names, bytes(blob), np.frombuffer(ends, dtype=np.int64).copy(),
            torch.from_numpy(np.frombuffer(labels, dtype=np.int64).copy()))


def read_image_folder(root: Path, size: int) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """Every image under ``root/<identity>/``, decoded at once into one float tensor in [0, 1].

    The items of :class:`FaceFolder` (checked with ``check="none"``: decoding them all is the full check),
    stacked. Memory grows with the number of images (4 bytes per pixel): for a folder larger than a few
    thousand photographs, train from a :class:`FaceFolder` and a DataLoader instead.

    Returns:
        ``(images, labels, identity folder names)``.

    Shape:
        - images: ``(N, 1, size, size)``, float32 in [0, 1], on the 8-bit grid of :func:`load_face`
        - labels: ``(N,)`` int64
    """
    faces = FaceFolder(root, size, check="none")
    images = torch.empty(len(faces), 1, size, size)
    for i in range(len(faces)):
        images[i] = faces[i][0].float() / 255
    return images, faces.labels.clone(), list(faces.names)


def write_image_folder(images: torch.Tensor, labels: torch.Tensor, root: Union[str, Path],
                       prefix: str = "person") -> List[Path]:
    """Write a labelled data set as ``root/<prefix>_<label>/<index>.png``: what ``arcface-train --data`` reads.

    8-bit PNGs, gray for one channel and RGB for three, rounded to the nearest of 256 levels. Refuses a
    ``root`` that already holds files, so two data sets are never mixed in one folder.

    Returns:
        The identity folders written, in label order.

    Shape:
        - images: ``(N, 1 or 3, H, W)`` in [0, 1]
        - labels: ``(N,)`` integers
    """
    Image = require("PIL.Image", "data", "write_image_folder")
    images, labels, root = torch.as_tensor(images), torch.as_tensor(labels), Path(root)
    if images.dim() != 4 or images.shape[1] not in (1, 3) or len(images) != len(labels):
        raise ValueError(f"write_image_folder: expected images (N, 1 or 3, H, W) and N labels, got "
                         f"{tuple(images.shape)} and {tuple(labels.shape)}.")
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ValueError("write_image_folder: images must be finite and in [0, 1]; scale them first.")
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"write_image_folder: {root} is not empty; choose a new folder.")
    pixels = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    folders = {}
    for index, (array_, label) in enumerate(zip(pixels, labels.tolist())):
        folder = folders.setdefault(label, root / f"{prefix}_{label:03d}")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array_[..., 0] if array_.shape[-1] == 1 else array_).save(folder / f"{index:05d}.png")
    return [folders[label] for label in sorted(folders)]


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


class LabelledSubset(Subset):
    """The items ``indices`` of a data set with a ``labels`` attribute, with their ``labels`` (what
    :func:`~resnet_arcface.fit` needs), e.g. the training identities of a folder whose others are held out.

    Shape:
        - labels: ``(len(indices),)`` int64
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        super().__init__(dataset, indices)
        self.labels = dataset.labels[torch.as_tensor(indices, dtype=torch.int64)]  # type: ignore[attr-defined]
