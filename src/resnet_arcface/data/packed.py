"""The packed format: a folder of photographs decoded once, at the training size, into one memory-mapped file.

Decoding a JPEG or PNG and resizing it costs about a millisecond of CPU per photograph, every epoch; a
GPU trains the small network faster than two CPU cores can decode. :func:`pack_faces` (the command
``arcface-pack``, :mod:`resnet_arcface.cli.pack`) pays that cost once and writes a folder::

    OUT/images.npy   (N, 1, size, size) uint8, NumPy's .npy format, read through a memory map
    OUT/labels.npy   (N,) int64, numbers into names
    OUT/meta.json    {"format": "resnet_arcface.packed", "version": 1, "size": ..., "count": ...,
                      "names": [identity folder names], "source": "the folder it came from"}

:class:`PackedFaces` reads it. Why a NumPy memmap rather than WebDataset tar shards or InsightFace's
RecordIO: the items are small and all the same shape, so a flat array is the whole format (no index, no
per-item header); any item is one slice away, so a shuffled epoch needs no shuffle buffer; pages are loaded
on demand and shared by every DataLoader worker through the operating system's page cache, so N workers do
not hold N copies; and NumPy, already a dependency, reads and writes it. Tar shards would win where files must
stream from object storage in sequence; that is not this package's use.

The pixels are :func:`~resnet_arcface.data.folders.load_face`'s, exactly: training from the packed folder
and from the photographs gives the same numbers.
"""
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .folders import FaceFolder

FORMAT, VERSION = "resnet_arcface.packed", 1


class PackedFaces(Dataset):
    """A packed folder written by :func:`pack_faces`: item ``i`` is ``(image, label)``, read from a memory map.

    The memory map is opened lazily, in the process that first reads an item, and left out when the data set
    is pickled: a NumPy memmap pickles as an in-memory copy of the whole array, which DataLoader workers
    started by ``spawn`` (macOS, Windows) would each receive.

    Args:
        path: The folder :func:`pack_faces` wrote.

    Attributes:
        labels: ``(N,)`` int64, numbers into :attr:`names`.
        names: Identity names, in label order.
        size: Side of the images.

    Raises:
        ValueError: ``path`` is not a packed folder, or its files disagree with each other.

    Shape:
        - Item: ``((1, size, size) uint8, int)``
    """

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        meta = read_meta(self.path)
        self.size, self.names, self.source = int(meta["size"]), list(meta["names"]), meta.get("source")
        self.labels = torch.from_numpy(np.load(self.path / "labels.npy"))
        images = self._open()
        if images.shape != (len(self.labels), 1, self.size, self.size) or images.dtype != np.uint8:
            raise ValueError(f"--data {self.path}: images.npy holds {images.dtype} {images.shape}, but labels.npy and "
                             f"meta.json describe {len(self.labels)} uint8 images of {self.size} px; pack it again.")
        if len(self.labels) != meta["count"] or int(self.labels.max()) >= len(self.names):
            raise ValueError(f"--data {self.path}: labels.npy does not match meta.json; pack it again.")
        self._images: Optional[np.ndarray] = None  # opened again, lazily, in each process that reads

    def _open(self) -> np.ndarray:
        return np.load(self.path / "images.npy", mmap_mode="r")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        if self._images is None:
            self._images = self._open()
        # np.array copies the slice out of the read-only map: torch refuses to wrap read-only memory.
        return torch.from_numpy(np.array(self._images[index])), int(self.labels[index])

    def __getstate__(self) -> Dict[str, Any]:
        state = dict(self.__dict__)
        state["_images"] = None  # each worker maps the file itself
        return state

    def __repr__(self) -> str:
        return f"PackedFaces({str(self.path)!r}): {len(self)} images of {len(self.names)} identities at {self.size} px"


def read_meta(path: Path) -> Dict[str, Any]:
    """``path/meta.json`` after checking it describes a packed folder this version reads."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"--data {path}: not a packed folder (meta.json: {type(err).__name__}); write one with "
                         f"arcface-pack.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"--data {path}: meta.json is not version {VERSION} of the {FORMAT} format; pack the "
                         f"photographs again with this version's arcface-pack.")
    return meta


def is_packed(path: Union[str, Path]) -> bool:
    """Whether ``path`` looks like a folder :func:`pack_faces` wrote (it holds ``meta.json``)."""
    return (Path(path) / "meta.json").is_file()


def open_faces(path: Union[str, Path], size: int, *, check: str = "header") -> Union[FaceFolder, PackedFaces]:
    """The data set at ``path``: :class:`PackedFaces` for a packed folder, else :class:`FaceFolder`.

    Raises:
        ValueError: The folder cannot be used (see both classes), or it was packed at another size.
    """
    if not is_packed(path):
        return FaceFolder(path, size, check=check)
    faces = PackedFaces(path)
    if faces.size != size:
        raise ValueError(f"--data {path}: packed at {faces.size} px, but training runs at {size} px; pack again with "
                         f"--size {size}, or train with --size {faces.size}.")
    return faces


def pack_faces(faces: FaceFolder, out: Union[str, Path], *, workers: int = 0, batch_size: int = 256,
               progress: bool = False) -> PackedFaces:
    """Decode every image of ``faces`` once and write them to the packed folder ``out``.

    The folder is written under a temporary name next to ``out`` and renamed when complete, so an interrupted
    run leaves nothing that looks like a packed folder. Memory stays at one batch: the images go straight into
    the memory-mapped file.

    Args:
        faces: The photographs (their ``size`` is the packed size).
        out: The folder to write; it must not exist.
        workers: DataLoader workers that decode (0: in this process).
        batch_size: Images decoded per worker task.
        progress: Show a tqdm bar.

    Returns:
        The packed folder, opened.

    Raises:
        FileExistsError: ``out`` exists.
        UnreadableImageError: A photograph cannot be decoded (nothing is left behind).
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose a new folder, or remove it first.")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.mkdir(parents=True)
    try:
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8,
                                           shape=(len(faces), 1, faces.size, faces.size))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(faces), desc="packing", unit="img", unit_scale=True, dynamic_ncols=True)
        start = 0
        for x, _ in DataLoader(faces, batch_size=batch_size, num_workers=workers, shuffle=False):
            images[start:start + len(x)] = x.numpy()
            start += len(x)
            if bar is not None:
                bar.update(len(x))
        if bar is not None:
            bar.close()
        images.flush()
        del images
        np.save(tmp / "labels.npy", faces.labels.numpy())
        meta = {"format": FORMAT, "version": VERSION, "size": faces.size, "count": len(faces),
                "names": list(faces.names), "source": str(faces.root)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PackedFaces(out)
