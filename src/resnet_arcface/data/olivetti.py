"""Real faces: the 40 people of the AT&T "Olivetti" face database, loaded through scikit-learn.

The photographs were taken between April 1992 and April 1994 at AT&T Laboratories Cambridge (formerly the
Olivetti Research Laboratory): ten 92x112 gray photos of each of 40 people, with varying lighting, facial
expression and details such as glasses, all upright and frontal against a dark background. scikit-learn's
:func:`sklearn.datasets.fetch_olivetti_faces` serves them cropped to 64x64 and scaled to [0, 1]; it owns the
download (1.4 MB, once), its checksum and the cache, so this project never redistributes the photos.
Credit: *AT&T Laboratories Cambridge* wherever they are shown, as the database's terms ask.
"""
from typing import Optional, Tuple
from urllib.error import URLError

import torch

#: Photos per person and people in the database (scikit-learn keeps each person's ten photos together).
PER_IDENTITY, IDENTITIES = 10, 40

#: The credit line to print under every figure of the photos.
CREDIT = "Photos: AT&T Laboratories Cambridge (the Olivetti faces, via scikit-learn)"


def olivetti_faces(data_home: Optional[str] = None, download: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """The 400 Olivetti faces (AT&T Laboratories Cambridge) as gray images in [0, 1] and identity labels.

    The photos come from scikit-learn's :func:`~sklearn.datasets.fetch_olivetti_faces`, which downloads
    1.4 MB once into its data folder (``data_home``, else the ``SCIKIT_LEARN_DATA`` environment variable,
    else ``~/scikit_learn_data``) and reads the cache afterwards. Offline, with no cache there, a
    ``FileNotFoundError`` says what is missing and how to provide it. The order is scikit-learn's, unshuffled:
    person ``k`` owns rows ``10 k`` to ``10 k + 9``.

    Please credit *AT&T Laboratories Cambridge* wherever the photos are shown (:data:`CREDIT`).

    Args:
        data_home: scikit-learn's data folder; ``None`` lets scikit-learn choose (see above).
        download: Whether to download the photos when the cache is missing.

    Returns:
        ``(images, labels)``: float32 images in [0, 1] and int64 labels 0..39.

    Raises:
        FileNotFoundError: The photos are not cached and could not (or may not) be downloaded.
        ImportError: scikit-learn is not installed.

    Shape:
        - images: ``(400, 1, 64, 64)``
        - labels: ``(400,)``
    """
    try:
        from sklearn.datasets import fetch_olivetti_faces, get_data_home
    except ImportError as err:  # a clear line rather than a traceback into this module
        raise ImportError("olivetti_faces needs scikit-learn, which downloads and caches the photos: "
                          "pip install scikit-learn") from err
    try:
        bunch = fetch_olivetti_faces(data_home=data_home, shuffle=False, download_if_missing=download)
    except (OSError, URLError) as err:  # OSError: not cached and download=False; URLError (an OSError): offline
        folder = get_data_home(data_home)
        raise FileNotFoundError(
            f"olivetti_faces: the Olivetti photos are not in scikit-learn's data folder {folder} (set by data_home, "
            f"else the SCIKIT_LEARN_DATA environment variable, else ~/scikit_learn_data) and "
            f"{'the download failed' if download else 'download=False'} ({err}); run it once on a connected machine "
            f"(1.4 MB) or point SCIKIT_LEARN_DATA at a folder holding olivetti_py3.pkz.") from None
    images = torch.from_numpy(bunch.images).float().unsqueeze(1)  # (400, 1, 64, 64), already scaled to [0, 1]
    labels = torch.from_numpy(bunch.target).long()
    return images, labels
