"""The Olivetti faces (AT&T Laboratories Cambridge), loaded through scikit-learn; never downloaded by the tests."""
from urllib.error import URLError

import pytest
import torch

pytest.importorskip("sklearn")

from resnet_arcface.data import olivetti_faces  # noqa: E402


def test_offline_without_cache_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path))  # an empty folder: nothing cached
    with pytest.raises(FileNotFoundError) as err:
        olivetti_faces(download=False)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path) in message and "SCIKIT_LEARN_DATA" in message and "download=False" in message
    assert "connected machine" in message


def test_failed_download_is_one_clear_line(tmp_path, monkeypatch):
    import sklearn.datasets._olivetti_faces as sk

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(sk, "_fetch_remote", offline)  # what an offline machine sees, without any network
    with pytest.raises(FileNotFoundError, match="the download failed.*name resolution.*SCIKIT_LEARN_DATA") as err:
        olivetti_faces(data_home=str(tmp_path))
    assert "\n" not in str(err.value)


def test_the_photos_when_cached():
    try:
        images, labels = olivetti_faces(download=False)
    except FileNotFoundError:
        pytest.skip("the Olivetti faces are not in scikit-learn's cache (set SCIKIT_LEARN_DATA)")
    assert images.shape == (400, 1, 64, 64) and images.dtype == torch.float32
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    assert labels.dtype == torch.int64
    torch.testing.assert_close(labels, torch.arange(40).repeat_interleave(10))  # unshuffled: 10 photos a person
    assert len({tuple(x.flatten()[:64].tolist()) for x in images}) == 400  # 400 different photos
