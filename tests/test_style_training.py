"""Fast-style training on a folder of photos: data, sampler, and torchrun with 1 and 2 CPU processes."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

import cs_utils
from cs_utils.fast_style import TransformerNet
from cs_utils.style_training import PhotoFolder, ResumableDistributedSampler, crop_seed

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """Eight small photos (different sizes) as PNG files in a folder with a subfolder."""
    folder = tmp_path_factory.mktemp("photos")
    (folder / "more").mkdir()
    for i, sample in enumerate(cs_utils.sample_images("photo")[:8]):
        image = cs_utils.load_image(sample.path, 48 + 8 * (i % 3))
        cs_utils.image.save_image(image, folder / ("more" if i % 2 else ".") / f"photo_{i}.png")
    (folder / "notes.txt").write_text("not a photo")
    return folder


# --------------------------------------------------------------------------- data


def test_photo_folder_reads_every_photo_in_subfolders_and_crops_repeatably(photo_dir):
    data = PhotoFolder(photo_dir, crop_size=32, num_styles=3)
    assert len(data) == 8
    crop, style = data[(5, 123)]
    again, style_again = data[(5, 123)]
    other, _ = data[(5, 124)]
    assert crop.shape == (3, 32, 32) and 0 <= crop.min() and crop.max() <= 1
    assert torch.equal(crop, again) and style == style_again and 0 <= style < 3
    assert (crop - other).abs().max() > 0.05


def test_crops_are_the_same_with_any_number_of_workers(photo_dir):
    data = PhotoFolder(photo_dir, crop_size=32)
    sampler = ResumableDistributedSampler(data, num_replicas=1, rank=0, batch_size=4, seed=3)
    # Workers hand tensors over through shared-memory files, not file descriptors sent over a Unix socket
    # (which the tests' socket guard refuses); the command line uses the default.
    strategy = torch.multiprocessing.get_sharing_strategy()
    torch.multiprocessing.set_sharing_strategy("file_system")
    try:
        batches = [torch.cat([x for x, _ in DataLoader(data, batch_size=4, sampler=sampler, num_workers=n)])
                   for n in (0, 2)]
    finally:
        torch.multiprocessing.set_sharing_strategy(strategy)
    assert batches[0].shape == (8, 3, 32, 32)
    assert torch.equal(batches[0], batches[1])


def test_photo_folder_says_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        PhotoFolder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no photos in .*ending in .jpg"):
        PhotoFolder(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot read .*broken.jpg"):
        PhotoFolder(tmp_path, crop_size=16)[0]


def test_two_ranks_share_each_global_batch_and_a_resumed_sampler_skips_what_was_seen():
    data = list(range(11))
    one = ResumableDistributedSampler(data, num_replicas=1, rank=0, batch_size=4, seed=7)
    two = [ResumableDistributedSampler(data, num_replicas=2, rank=r, batch_size=2, seed=7) for r in (0, 1)]
    for epoch in (0, 1):
        for s in [one, *two]:
            s.set_epoch(epoch)
        whole = [i for i, _ in one]
        parts = [[i for i, _ in s] for s in two]
        assert len(whole) == 8 and len(one) == 8 and len(two[0]) == 4  # 11 // 4 = 2 steps, 3 dropped
        for step in range(2):
            union = sorted(parts[0][2 * step : 2 * step + 2] + parts[1][2 * step : 2 * step + 2])
            assert union == sorted(whole[4 * step : 4 * step + 4])
        seeds = dict(one)
        assert all(seeds[i] == crop_seed(7, epoch, i) for i in whole)
    assert whole != [
        i for i, _ in ResumableDistributedSampler(data, num_replicas=1, rank=0, batch_size=4, seed=20)
    ]
    # after one step of 4 (two processes), one process resumes at position 4 of epoch 0
    resumed = ResumableDistributedSampler(data, num_replicas=1, rank=0, batch_size=4, seed=7, start=(0, 4))
    one.set_epoch(0)
    assert [i for i, _ in resumed] == [i for i, _ in one][4:8]
    resumed.set_epoch(1)
    assert len(list(resumed)) == 8  # later epochs start at 0


def test_a_step_larger_than_the_folder_is_refused():
    with pytest.raises(
        ValueError, match="5 photos but a step takes 2 x 4 = 8: add photos or lower --batch-size"
    ):
        ResumableDistributedSampler(list(range(5)), num_replicas=2, rank=0, batch_size=4)


def test_the_command_line_leaves_the_training_function_in_place():
    import cs_utils.instructor.train_fast_style as command_line
    from cs_utils import fast_style_training

    assert cs_utils.train_fast_style is fast_style_training.train_fast_style and callable(command_line.main)
    with pytest.raises(ValueError, match="need steps >= 0"):
        cs_utils.train_fast_style(
            cs_utils.SmallCNN(), torch.rand(1, 3, 32, 32), [torch.rand(1, 3, 32, 32)], steps=-1
        )


# --------------------------------------------------------------------------- one and two processes


def train(out: Path, processes: int, batch: int, steps: int, photos: Path, *extra: str) -> str:
    """Run the command line (under torchrun for 2 processes); return its log."""
    command = [
        "-m",
        "cs_utils.instructor.train_fast_style",
        "--images",
        str(photos),
        "--style",
        "starry_night",
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--batch-size",
        str(batch),
        "--crop-size",
        "32",
        "--style-size",
        "32",
        "--max-side",
        "64",
        "--workers",
        "1",
        "--dtype",
        "float64",
        "--log-every",
        "1",
        "--checkpoint-every",
        "1",
        *extra,
    ]
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *command]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if sys.platform == "linux":
        env["GLOO_SOCKET_IFNAME"] = "lo"  # the process group talks over the loopback interface only
    done = subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"training failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return out.with_suffix(".log").read_text()


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def loss_lines(log: str) -> list[str]:
    return [
        line.split(" s/step")[0].rsplit(")", 1)[0] for line in log.splitlines() if line.startswith("step ")
    ]


@pytest.fixture(scope="module")
def runs(photo_dir, tmp_path_factory):
    """1 process x batch 4 and 2 processes x batch 2, 3 steps each; a 2-process run stopped after 1
    (8 photos: 2 steps per epoch, so resuming starts mid-epoch and crosses into the next)."""
    folder = tmp_path_factory.mktemp("runs")
    logs = {
        "one": train(folder / "one.pt", 1, 4, 3, photo_dir),
        "two": train(folder / "two.pt", 2, 2, 3, photo_dir),
        "stopped": train(folder / "stopped.pt", 2, 2, 1, photo_dir),
    }
    return folder, logs


def test_two_processes_take_the_step_of_one_process_with_twice_the_batch(runs):
    folder, logs = runs
    one, two = weights(folder / "one.pt"), weights(folder / "two.pt")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        initial = TransformerNet(norm="instance").state_dict()
    assert max_difference(one, initial) > 1e-3  # training moved the weights
    assert max_difference(one, two) < 1e-5
    assert "2 process(es) x batch 2 = 4 crops" in logs["two"]
    assert loss_lines(logs["one"]) == loss_lines(logs["two"])  # rank 0 logs the loss of the whole step
    assert len(loss_lines(logs["two"])) == 3


def test_an_interrupted_two_process_run_resumes_with_two_or_one_processes(runs, photo_dir):
    folder, logs = runs
    checkpoint = folder / "stopped.pt.ckpt"
    saved = torch.load(checkpoint, weights_only=True)
    assert (saved["step"], saved["epoch"], saved["position"]) == (1, 0, 4)
    shutil.copy(checkpoint, folder / "again.pt.ckpt")
    log = train(folder / "stopped.pt", 2, 2, 3, photo_dir)
    assert "from step 1" in log
    assert max_difference(weights(folder / "stopped.pt"), weights(folder / "two.pt")) < 1e-5
    log = train(folder / "again.pt", 1, 4, 3, photo_dir)  # the same checkpoint, one process
    assert "1 process(es) x batch 4 = 4 crops" in log and "from step 1" in log
    assert max_difference(weights(folder / "again.pt"), weights(folder / "one.pt")) < 1e-5
    assert loss_lines(log)[-1] == loss_lines(logs["one"])[-1]


def test_resuming_with_other_settings_says_how_to_start_afresh(runs, photo_dir):
    folder, _ = runs
    command = [
        sys.executable,
        "-m",
        "cs_utils.instructor.train_fast_style",
        "--images",
        str(photo_dir),
        "--style",
        "starry_night",
        "--out",
        str(folder / "two.pt"),
        "--steps",
        "4",
        "--crop-size",
        "48",
    ]
    done = subprocess.run(
        command, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0
    assert "was written with other settings" in done.stderr and "--no-resume" in done.stderr
