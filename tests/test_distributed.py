"""arcface-train on 2 CPU processes through torchrun (gloo): the same result as 1 process, files written once, and
a failure on one process ends the whole run with its message."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import resnet_arcface
from resnet_arcface import synthetic_faces
from resnet_arcface.cli.common import FILES
from resnet_arcface.cli.train import train_main
from resnet_arcface.data.folders import FaceFolder
from resnet_arcface.learn.training import EpochShuffle
from single_thread import one_thread  # noqa: F401  (autouse: these tests run on one CPU thread)

SRC = Path(resnet_arcface.__file__).resolve().parents[1]
# The network is frozen (--freeze-stages 6: its weights and BatchNorm statistics fixed, eval mode) so that each
# process computes exactly its half of the 1-process batch; only the head trains. With the network training,
# each process's BatchNorm normalises with the statistics of its own 4 images instead of the batch's 8, and the
# runs differ by far more than rounding (benchmarks/data_pipeline.md measures by how much); SyncBatchNorm,
# which would remove that, is implemented by PyTorch for CUDA only.
FROZEN = ["--synthetic", "8,4", "--val", "3,3", "--size", "32", "--epochs", "2", "--batch-size", "8",
          "--augment", "none", "--optimizer", "sgd", "--lr", "0.05", "--freeze-stages", "6",
          "--threads", "1", "--device", "cpu", "--no-progress"]


def _torchrun(args, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 -m resnet_arcface.cli.train ARGS``, output captured."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "resnet_arcface.cli.train", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=240)


def test_two_processes_match_one_and_write_once(tmp_path, capsys):
    done = _torchrun([*FROZEN, "--out", tmp_path / "two"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # Rank 0 alone prints and writes: each line once, and only the run's files in --out.
    assert done.stdout.count("epoch 2/2") == 1 and done.stdout.count("wrote ") == 1, done.stdout
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(FILES)

    assert train_main([*FROZEN, "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    one, two = (torch.load(tmp_path / run / "checkpoint.pt", weights_only=True) for run in ("one", "two"))
    # Same global batches (the shared shuffled order), gradients averaged over the processes: the same steps,
    # up to the order in which float32 sums are added (observed: 3e-8 relative; without the gradient
    # all-reduce the head is 9e-2 away).
    for name, weight in one["head"].items():
        torch.testing.assert_close(two["head"][name], weight, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two["history"]["loss"], one["history"]["loss"], rtol=1e-5)
    assert all(torch.equal(two["model"][k], v) for k, v in one["model"].items())  # frozen: untouched

    # The checkpoint is the unwrapped model's and --batch-size the global batch (the steps per epoch do not
    # depend on the number of processes), so one process resumes what two trained.
    assert train_main([*FROZEN, "--out", str(tmp_path / "two"), "--resume", "--epochs", "3", "--warm-restart"]) == 0
    assert "epoch 3/3" in capsys.readouterr().out


def test_a_failure_on_one_process_ends_the_run_with_its_message(tmp_path):
    # A PNG whose pixel data is cut off passes the folder's header check and fails when decoded, in the
    # process whose share of the batch holds it: rank 1, first batch (global position 1 of epoch 1's order).
    images, labels = synthetic_faces(4, 4, size=24, seed=5)
    for i, (img, label) in enumerate(zip(images, labels)):
        folder = tmp_path / "faces" / f"p{int(label)}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img[0].numpy() * 255).astype(np.uint8)).save(folder / f"{i}.png")
    faces = FaceFolder(tmp_path / "faces", 32)
    sampler = EpochShuffle(len(faces), seed=0)
    sampler.set_epoch(1)
    bad = faces.path(list(sampler)[1])
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(bad)
    bad.write_bytes(bad.read_bytes()[:1500])

    done = _torchrun(["--data", tmp_path / "faces", "--val-fraction", "0", "--size", "32", "--epochs", "1",
                      "--batch-size", "8", "--threads", "1", "--device", "cpu", "--no-progress",
                      "--out", tmp_path / "run"], tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert f"arcface-train: --data: cannot read image {bad}" in output, output
    # torchrun names the process that failed first; rank 0, blocked in the gradient all-reduce, is ended.
    assert "local_rank: 1" in output, output
    assert not (tmp_path / "run").exists()  # no epoch finished: nothing written


def test_the_shares_of_two_processes_interleave_one_order():
    from resnet_arcface.learn.distributed import ShardedSampler

    order = EpochShuffle(11, seed=3)
    shares = [ShardedSampler(EpochShuffle(11, seed=3), num_replicas=2, rank=r) for r in (0, 1)]
    for epoch in (1, 2):
        order.set_epoch(epoch)
        for share in shares:
            share.set_epoch(epoch)
        expected = list(order)
        # 11 items on 2 processes: the 11th is dropped, as an incomplete batch is.
        assert list(shares[0]) == expected[0:10:2] and list(shares[1]) == expected[1:10:2]
    assert expected != list(EpochShuffle(11, seed=3))  # set_epoch reached the order (epoch 0 differs)
