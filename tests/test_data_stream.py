"""Streaming data: FaceFolder (scan, checks, lazy decoding), the packed format and arcface-pack."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from resnet_arcface import synthetic_faces
from resnet_arcface.cli.pack import main as pack_main
from resnet_arcface.data.folders import (FaceFolder, UnreadableImageError, load_face, read_image_folder,
                                        write_image_folder)
from resnet_arcface.data.packed import PackedFaces, open_faces, pack_faces
from single_thread import one_thread  # noqa: F401  (autouse: these tests run on one CPU thread)


def _folder(root: Path, identities: int = 3, per: int = 4) -> Path:
    """``root/person<k>/<i>.png``: synthetic faces at 24 px, plus files the scan must skip."""
    images, labels = synthetic_faces(identities, per, size=24, seed=3)
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = root / f"person{int(label)}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8)).save(folder / f"{i:02d}.png")
    (root / "person0" / "notes.txt").write_text("not an image")
    (root / "person0" / "._00.png").write_bytes(b"macOS resource fork, not an image")  # hidden: skipped
    (root / ".cache").mkdir()
    (root / ".cache" / "x.png").write_bytes(b"hidden folder: skipped")
    (root / "nobody").mkdir()  # a folder without images is no identity
    return root


def test_items_are_load_face_of_each_file_in_sorted_order(tmp_path):
    faces = FaceFolder(_folder(tmp_path), size=16)
    assert len(faces) == 12 and faces.names == ["person0", "person1", "person2"]
    assert faces.labels.dtype == torch.int64 and faces.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert [faces.path(i).name for i in range(4)] == ["00.png", "01.png", "02.png", "03.png"]
    image, label = faces[5]
    assert image.dtype == torch.uint8 and image.shape == (1, 16, 16) and label == 1
    assert torch.equal(image, load_face(tmp_path / "person1" / "05.png", 16))


def test_load_face_is_preprocess_rounded_to_8_bits(tmp_path):
    from resnet_arcface import preprocess

    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    exact = (preprocess(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, size=8)[0] + 1) / 2
    got = load_face(tmp_path / "x.png", 8).float() / 255
    assert (got - exact).abs().max() <= 0.5 / 255 + 1e-6


def test_read_image_folder_stacks_the_items(tmp_path):
    faces = FaceFolder(_folder(tmp_path), size=16)
    images, labels, names = read_image_folder(tmp_path, 16)
    assert images.dtype == torch.float32 and images.shape == (12, 1, 16, 16) and names == faces.names
    assert torch.equal(labels, faces.labels)
    assert torch.equal(images[7], faces[7][0].float() / 255)


def test_write_image_folder_round_trips_through_the_reader(tmp_path):
    images, labels = synthetic_faces(3, 4, size=32, seed=5)
    folders = write_image_folder(images, labels, tmp_path / "faces")
    assert [f.name for f in folders] == ["person_000", "person_001", "person_002"]
    back, back_labels, names = read_image_folder(tmp_path / "faces", 32)
    assert names == [f.name for f in folders] and torch.equal(back_labels, labels)
    torch.testing.assert_close(back, (images * 255).round() / 255)  # 8-bit PNGs: exact on the 8-bit grid
    with pytest.raises(ValueError, match="not empty"):
        write_image_folder(images, labels, tmp_path / "faces")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        write_image_folder(images * 2, labels, tmp_path / "other")
    with pytest.raises(ValueError, match=r"expected images \(N, 1 or 3, H, W\) and N labels"):
        write_image_folder(images[:, 0], labels, tmp_path / "other")


def test_the_data_set_holds_no_pixels(tmp_path):
    # What a DataLoader worker receives is the scan (file names and labels), not the images: its pickle stays
    # far below the 256 bytes per image that 16x16 uint8 pixels alone would take.
    faces = FaceFolder(_folder(tmp_path, identities=10, per=10), size=16)
    assert len(pickle.dumps(faces)) < 256 * len(faces) / 4


@pytest.mark.parametrize("setup, words", [
    (lambda root: None, ["no such folder"]),
    (lambda root: (root / "alice").mkdir(parents=True), ["no images found"]),
    (lambda root: _folder(root, identities=1), ["only one identity", "person0"]),
])
def test_unusable_folders_are_one_line_errors(tmp_path, setup, words):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(ValueError) as err:
        FaceFolder(root, 16)
    assert all(w in str(err.value) for w in words) and "\n" not in str(err.value)


def test_the_header_check_finds_a_file_that_is_not_an_image(tmp_path):
    (_folder(tmp_path) / "person2" / "99.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UnreadableImageError, match=r"99\.jpg.*replace or remove it"):
        FaceFolder(tmp_path, 16)
    with pytest.raises(UnreadableImageError, match=r"99\.jpg"):
        FaceFolder(tmp_path, 16, threads=1)
    assert len(FaceFolder(tmp_path, 16, check="none")) == 13  # not checked: found when decoded


def _truncated(tmp_path: Path) -> Path:
    """A folder with one PNG cut in the middle of its pixel data: the header is whole, the image is not."""
    bad = _folder(tmp_path) / "person1" / "04.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(bad)
    bad.write_bytes(bad.read_bytes()[:2000])
    return bad


def test_a_truncated_image_passes_the_header_check_and_fails_the_decode_check(tmp_path):
    _truncated(tmp_path)
    FaceFolder(tmp_path, 16, check="header")
    with pytest.raises(UnreadableImageError, match=r"04\.png"):
        FaceFolder(tmp_path, 16, check="decode")


def test_a_file_that_fails_in_a_worker_is_still_a_one_line_error(tmp_path):
    # PyTorch re-raises a worker's exception with the worker's whole traceback as the message; the command
    # line must still print one line naming the file.
    _truncated(tmp_path)
    faces = FaceFolder(tmp_path, 16)
    with pytest.raises(UnreadableImageError) as err:
        for _ in DataLoader(faces, batch_size=4, num_workers=1):
            pass
    message = str(err.value)
    assert "\n" not in message and "04.png" in message and message.endswith("replace or remove it.")


def test_packed_items_equal_the_folder_items_in_workers_too(tmp_path):
    faces = FaceFolder(_folder(tmp_path / "faces"), size=16)
    packed = pack_faces(faces, tmp_path / "packed", workers=1, batch_size=5)
    assert isinstance(packed, PackedFaces) and len(packed) == len(faces) and packed.names == faces.names
    assert torch.equal(packed.labels, faces.labels)
    for i in range(len(faces)):
        assert torch.equal(packed[i][0], faces[i][0]) and packed[i][1] == faces[i][1]
    assert len(pickle.dumps(packed)) < 256 * len(packed)  # the map is not pickled into workers
    (x_folder, y_folder), = DataLoader(faces, batch_size=len(faces), num_workers=0)
    (x_packed, y_packed), = DataLoader(packed, batch_size=len(faces), num_workers=2)
    assert torch.equal(x_folder, x_packed) and torch.equal(y_folder, y_packed)


def test_open_faces_picks_the_format_and_checks_the_size(tmp_path):
    faces = FaceFolder(_folder(tmp_path / "faces"), size=16)
    pack_faces(faces, tmp_path / "packed")
    assert isinstance(open_faces(tmp_path / "faces", 16), FaceFolder)
    assert isinstance(open_faces(tmp_path / "packed", 16), PackedFaces)
    with pytest.raises(ValueError, match=r"packed at 16 px.*--size 32"):
        open_faces(tmp_path / "packed", 32)
    (tmp_path / "packed" / "meta.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="arcface-pack"):
        PackedFaces(tmp_path / "packed")
    with pytest.raises(FileExistsError):
        pack_faces(faces, tmp_path / "packed")


def test_pack_command(tmp_path, capsys):
    data = _folder(tmp_path / "faces")
    assert pack_main([str(data), str(tmp_path / "packed"), "--size", "16", "--no-progress"]) == 0
    assert "12 images of 3 identities at 16 px" in capsys.readouterr().out
    assert len(PackedFaces(tmp_path / "packed")) == 12
    # Bad input: one line on stderr, status 2, nothing written (not even the temporary folder).
    bad = _truncated(tmp_path / "broken")
    for argv, words in ([str(data), str(tmp_path / "packed"), "--size", "16"], ["already exists"]), \
                       ([str(tmp_path / "missing"), str(tmp_path / "p2"), "--size", "16"], ["no such folder"]), \
                       ([str(bad.parent.parent), str(tmp_path / "p3"), "--size", "16", "--workers", "1"],
                        ["04.png", "replace or remove"]):
        status = pack_main(argv + ["--no-progress"])
        err = capsys.readouterr().err
        assert status == 2 and err.count("\n") == 1 and err.startswith("arcface-pack: "), err
        assert all(w in err for w in words), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "faces", "packed"]


def test_held_out_identities_are_capped_whole(tmp_path, monkeypatch):
    # arcface-train --data verifies held-out identities all-pairs in memory: whole identities are held out until
    # MAX_VAL_IMAGES, the rest train, so memory does not grow with the folder.
    import resnet_arcface.cli.train as cli

    data = _folder(tmp_path, identities=6, per=3)
    args = cli._train_parser().parse_args(["--data", str(data), "--val-fraction", "0.5", "--size", "16"])
    args.synthetic, args.seed = None, 0
    (train, _), (images, labels), described = cli._train_data(args)
    assert len(labels) == 9 and len(train) == 9 and "held out: 9 images of 3 identities" in described
    monkeypatch.setattr(cli, "MAX_VAL_IMAGES", 6)
    (train, _), (images, labels), described = cli._train_data(args)
    assert images.shape == (6, 1, 16, 16) and len(torch.unique(labels)) == 2 and len(train) == 12
    assert not set(labels.tolist()) & set(train.labels.tolist())  # open set: no held-out identity trains
    assert "held out: 6 images of 2 identities" in described


def test_arcface_train_reads_a_packed_folder(tmp_path, capsys):
    from resnet_arcface.cli.train import train_main

    pack_faces(FaceFolder(_folder(tmp_path / "faces", identities=5), size=32), tmp_path / "packed")
    argv = ["--data", tmp_path / "packed", "--size", "32", "--val-fraction", "0.4", "--epochs", "1", "--batch-size",
            "4", "--threads", "1", "--device", "cpu", "--no-progress", "--out", tmp_path / "run"]
    assert train_main([str(a) for a in argv]) == 0
    assert "12 images of 3 identities" in capsys.readouterr().out
    argv[3] = "16"  # packed at 32 px: training at 16 is refused, one line, nothing written
    assert train_main([str(a) for a in argv[:-1]] + [str(tmp_path / "run16")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "packed at 32 px" in err and not (tmp_path / "run16").exists()
