"""fit, arcface-train and arcface-verify on tiny data: one-epoch smoke tests, resume, and every bad input."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_arcface import load_checkpoint, resnet_arcface_small, synthetic_faces
from resnet_arcface.cli.train import train_main
from resnet_arcface.cli.verify import verify_main
from resnet_arcface.learn.config import TrainConfig, adacos_scale
from resnet_arcface.learn.training import fit
from single_thread import one_thread  # noqa: F401  (autouse: these tests run on one CPU thread)

TINY = ["--epochs", "1", "--batch-size", "8", "--threads", "1", "--device", "cpu", "--no-progress"]


def _run(main, argv, capsys):
    """``(exit status, stdout, stderr)`` of a command's main, whether it returns or exits."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def tiny():
    return synthetic_faces(4, 4, size=32, seed=0), synthetic_faces(3, 3, size=32, seed=1)


def test_fit_one_epoch(tiny):
    (x, y), val = tiny
    torch.manual_seed(0)
    model = resnet_arcface_small()
    history = fit(model, x, y, epochs=1, batch_size=8, device="cpu", val=val, progress=False)
    assert history["epoch"] == [1] and np.isfinite(history["loss"][0])
    assert 0 <= history["train_accuracy"][0] <= 1 and history["images_per_s"][0] > 0
    assert history["lr"] == [0.0]  # warm-up, then the cosine reaches zero on the last step
    assert set(history["verification"][0]) == {"auc", "tar_at_far", "threshold", "accuracy"}
    assert not model.training  # left in eval mode, ready to embed


@pytest.mark.parametrize("loss", ["softmax", "cosface"])
def test_fit_other_losses(tiny, loss):
    (x, y), _ = tiny
    history = fit(resnet_arcface_small(), x, y, loss=loss, optimizer="adamw", epochs=1, batch_size=8, device="cpu",
                  progress=False)
    assert np.isfinite(history["loss"][0]) and history["verification"] == [None]


def test_resume_continues_exactly(tiny):
    (x, y), _ = tiny
    kwargs = dict(epochs=2, batch_size=8, device="cpu", progress=False)
    torch.manual_seed(0)
    straight = resnet_arcface_small()
    states = []
    fit(straight, x, y, on_epoch_end=lambda s: states.append(copy.deepcopy(s)), **kwargs)
    torch.manual_seed(0)
    resumed = resnet_arcface_small()
    history = fit(resumed, x, y, resume=states[0], **kwargs)
    assert history["epoch"] == [1, 2]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_fit_refuses_bad_arguments(tiny):
    (x, y), _ = tiny
    with pytest.raises(ValueError, match="epochs"):
        fit(resnet_arcface_small(), x, y, epochs=0, progress=False)
    with pytest.raises(ValueError, match="two identities"):
        fit(resnet_arcface_small(), x, torch.zeros_like(y), epochs=1, progress=False)


def test_train_and_verify_commands(tmp_path, capsys):
    out = tmp_path / "run"
    status, stdout, err = _run(train_main, ["--synthetic", "4,4", "--val", "3,3", "--out", out, *TINY], capsys)
    assert status == 0, err
    assert "epoch 1/1" in stdout and "wrote" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.json", "weights.pt"]
    load_checkpoint(resnet_arcface_small(), out / "weights.pt")  # a plain state_dict for the small network
    metrics = json.loads((out / "metrics.json").read_text())
    config = metrics["config"]
    assert config["arch"] == "small" and metrics["epochs_done"] == 1
    # The resolved TrainConfig: AdaCos's scale for the 4 training identities, the flags' batch size.
    assert config["s"] == pytest.approx(adacos_scale(4)) and config["batch_size"] == 8 and config["lr"] == 2e-3
    assert TrainConfig.from_dict({k: config[k] for k in TrainConfig().to_dict()}).epochs == 1
    assert metrics["schedule"]["epochs"] == 1
    assert len(metrics["history"]["loss"]) == 1 and set(metrics["final"]["tar_at_far"]) == {"0.01", "0.001"}

    # Resuming with a longer --epochs would jump along the finished run's cosine: refused, nothing written...
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    resume = ["--synthetic", "4,4", "--val", "3,3", "--out", out, "--resume", *TINY, "--epochs", "2"]
    status, stdout, err = _run(train_main, resume, capsys)
    assert status == 2 and err.count("\n") == 1 and "--warm-restart" in err and "schedule over 1 epochs" in err, err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    # ... unless a warm restart is asked for: a new schedule over the remaining epoch, saved with the run.
    status, stdout, err = _run(train_main, [*resume, "--warm-restart"], capsys)
    assert status == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert "epoch 2/2" in stdout and metrics["epochs_done"] == 2
    assert metrics["schedule"]["epochs"] == 2 and metrics["schedule"]["first_epoch"] == 1

    status, stdout, err = _run(verify_main, ["--weights", out / "weights.pt", "--synthetic", "3,3", "--threads", "1"],
                               capsys)
    assert status == 0, err
    assert "TAR @ FAR 1e-03" in stdout and "raw pixels" in stdout and "(seed 2000)" in stdout


def _faces_folder(root: Path, identities: int = 3, per: int = 3) -> Path:
    images, labels = synthetic_faces(identities, per, size=24, seed=5)
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = root / f"person{int(label)}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img[0].numpy() * 255).astype(np.uint8)).convert("RGB").save(folder / f"{i}.png")
    (root / "person0" / "notes.txt").write_text("not an image, skipped")
    return root


def test_train_from_a_folder(tmp_path, capsys):
    data = _faces_folder(tmp_path / "faces", identities=5)
    status, stdout, err = _run(train_main, ["--data", data, "--val-fraction", "0.4", "--out", tmp_path / "run", *TINY],
                               capsys)
    assert status == 0, err
    assert "9 images of 3 identities" in stdout and "held out: 6 images of 2 identities" in stdout


def test_sixteen_bit_images_keep_their_range(tmp_path):
    # Pillow's convert("RGB") clips 16-bit gray at 255; read_image_folder scales by 65535 instead.
    from resnet_arcface.data.folders import read_image_folder
    gray = np.linspace(0, 1, 24 * 24, dtype=np.float64).reshape(24, 24)
    for bits, folder in ((8, "a"), (16, "b")):
        (tmp_path / folder).mkdir()
        pixels = (gray * (2**bits - 1)).round().astype(np.uint8 if bits == 8 else np.uint16)
        Image.fromarray(pixels).save(tmp_path / folder / "x.png")
    images, labels, names = read_image_folder(tmp_path, size=16)
    assert names == ["a", "b"] and labels.tolist() == [0, 1]
    torch.testing.assert_close(images[1], images[0], atol=2 / 255, rtol=0)
    assert images[1].max() > 0.9 and images[1].min() < 0.1


def _bad_inputs(tmp_path: Path):
    """``(argv, words the message must contain)`` for every bad input."""
    empty = tmp_path / "empty"
    (empty / "alice").mkdir(parents=True)
    one = _faces_folder(tmp_path / "one", identities=1)
    broken = _faces_folder(tmp_path / "broken")
    (broken / "person1" / "9.jpg").write_bytes(b"not a jpeg")
    done = tmp_path / "done"
    done.mkdir()
    (done / "weights.pt").write_bytes(b"")
    return [
        (["--data", tmp_path / "missing"], ["--data", "no such folder"]),
        (["--data", empty], ["--data", "no images"]),
        (["--data", one], ["only one identity", "at least two"]),
        (["--data", broken], ["9.jpg", "replace or remove"]),
        (["--synthetic", "4,4", "--epochs", "0"], ["--epochs", "positive"]),
        (["--synthetic", "4"], ["--synthetic", "IDS,PER_ID"]),
        (["--synthetic", "4,4", "--loss", "sphereface"], ["--loss", "arcface"]),
        (["--synthetic", "4,4", "--arch", "resnet50"], ["--arch", "small"]),
        (["--synthetic", "4,4", "--size", "40"], ["--size", "multiple of 16"]),
        (["--synthetic", "4,4", "--loss", "softmax", "--margin", "0.3"], ["--margin", "softmax"]),
        (["--synthetic", "4,4", "--val", "3,1"], ["--val", "2 images per"]),
        (["--synthetic", "4,4", "--out", done], ["already holds a run", "--resume"]),
        (["--synthetic", "4,4", "--resume"], ["--resume", "no run to resume"]),
    ] + ([] if torch.cuda.is_available() else [(["--synthetic", "4,4", "--device", "cuda"], ["--device cuda"])])


def test_every_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    for argv, words in _bad_inputs(tmp_path):
        out = tmp_path / "out"
        argv = argv if "--out" in argv else [*argv, "--out", out]
        status, stdout, err = _run(train_main, ["--threads", "1", "--device", "cpu", "--no-progress", *argv], capsys)
        assert status == 2, (argv, err)
        assert err.count("\n") == 1 and err.startswith("arcface-train: ") and "Traceback" not in err, err
        assert all(w in err for w in words), (words, err)
        assert not out.exists(), argv


def test_verify_bad_inputs(tmp_path, capsys):
    status, _, err = _run(verify_main, ["--weights", tmp_path / "nope.pt", "--synthetic", "3,3"], capsys)
    assert status == 2 and err.count("\n") == 1 and "--weights" in err and "no such file" in err
    weights = tmp_path / "w.pt"
    torch.save(resnet_arcface_small().state_dict(), weights)
    status, _, err = _run(verify_main, ["--weights", weights, "--synthetic", "3,3", "--arch", "resnet_arcface18"], capsys)
    assert status == 2 and err.count("\n") == 1 and "--arch and --size" in err
    status, _, err = _run(verify_main, ["--weights", weights, "--synthetic", "3,1"], capsys)
    assert status == 2 and err.count("\n") == 1 and "genuine" in err
