"""Fast-style training on a folder of photos, in one process or many (``torchrun``).

::

    python -m cs_utils.instructor.train_fast_style --images ~/coco/train2017 --style starry_night \\
        --out starry.pt
    torchrun --nproc_per_node=4 -m cs_utils.instructor.train_fast_style \\
        --images ~/coco/train2017 --style starry_night

The network, the perceptual loss and the checkpoints are those of
:func:`cs_utils.fast_style_training.train_fast_style`; what this adds is the data and the processes:

* :class:`PhotoFolder`: every image under a folder (or photos in memory), read by
  ``DataLoader`` worker processes, each item a random square crop (random scale, position
  and flip) resized to ``crop_size``. An item's crop depends only on (seed, epoch, index), so
  the crops are the same for any number of workers or processes.
* :class:`ResumableDistributedSampler`: a ``DistributedSampler`` (one shuffled order per epoch,
  each process takes every ``world``-th sample) that can start an epoch part-way, so a run
  resumes where it stopped with any number of processes.
* :func:`train_on_folder`: under ``torchrun`` (``WORLD_SIZE`` > 1) the network is wrapped in
  ``DistributedDataParallel`` (gloo on CPU, NCCL on GPUs); each process takes ``batch_size``
  crops per step and the gradients are averaged, so N processes with batch b take the step of one
  process with batch N*b. Rank 0 writes the checkpoint, the weights and the log.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .fast_style import NORMS, TransformerNet
from .fast_style_training import FastStyleHistory, named_styles, training_photos
from .hooks import evaluating, get_layer
from .image import load_image
from .models import STYLE_LAYERS
from .perceptual import perceptual_terms, random_square_crop, style_gram_targets, style_moment_targets
from .validation import validate_image

__all__ = [
    "IMAGE_SUFFIXES",
    "PhotoFolder",
    "ResumableDistributedSampler",
    "crop_seed",
    "train_on_folder",
]

#: The files :class:`PhotoFolder` reads (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def crop_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of photo ``index``'s crop in ``epoch``: the same in every process and worker."""
    return (seed * 1_000_003 + epoch * 999_983 + index * 7_919 + 12_345) % (2**62)


class PhotoFolder(Dataset):
    """Random square crops of photos: a folder (searched recursively for :data:`IMAGE_SUFFIXES`)
    or a list of (1, 3, H, W) images in [0, 1].

    ``dataset[(index, seed)]`` is ``(crop, style)``: the crop (3, crop_size, crop_size) of photo
    ``index`` drawn with a generator seeded by ``seed`` (see :func:`cs_utils.perceptual.random_square_crop`),
    and a random style index below ``num_styles``. Photos are read when needed, their longer
    side scaled down to ``max_side`` first (as :func:`cs_utils.training_photos` does)."""

    def __init__(self, images, crop_size: int = 128, *, num_styles: int = 1, max_side: int = 512):
        if crop_size < 16 or max_side < crop_size:
            raise ValueError(f"need crop_size >= 16 and max_side >= crop_size; got {crop_size}, {max_side}")
        self.crop_size, self.num_styles, self.max_side = crop_size, num_styles, max_side
        if isinstance(images, (str, Path)):
            folder = Path(images).expanduser()
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"--images {str(folder)!r} is not a folder; give a folder of photos "
                    "(searched recursively), e.g. COCO's train2017/"
                )
            self.paths = sorted(
                p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
            self.images = None
            if not self.paths:
                raise ValueError(
                    f"no photos in {str(folder)!r}: put files ending in {', '.join(IMAGE_SUFFIXES)} "
                    "there (in any subfolder)"
                )
        else:
            self.images = list(images)
            self.paths = None
            if not self.images:
                raise ValueError("images is empty: pass a folder or a list of (1, 3, H, W) photos")
            for i, image in enumerate(self.images):
                validate_image(image, f"images[{i}]")

    def __len__(self) -> int:
        return len(self.paths) if self.paths is not None else len(self.images)

    def photo(self, index: int) -> torch.Tensor:
        """Photo ``index`` as (1, 3, H, W), its longer side at most ``max_side``."""
        if self.images is not None:
            image = self.images[index]
        else:
            try:
                image = load_image(self.paths[index])
            except Exception as exc:  # noqa: BLE001 - name the file that cannot be read
                raise ValueError(
                    f"cannot read {str(self.paths[index])!r} ({exc}); remove it from the folder "
                    "or convert it to JPEG/PNG"
                ) from exc
        h, w = image.shape[-2:]
        if max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            image = F.interpolate(
                image,
                size=(max(1, round(h * scale)), max(1, round(w * scale))),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            ).clamp(0, 1)
        return image

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, crop_seed(0, 0, key))
        generator = torch.Generator().manual_seed(int(seed))
        crop = random_square_crop(self.photo(index), self.crop_size, generator)[0]
        style = int(torch.randint(self.num_styles, (1,), generator=generator))
        return crop, style


class ResumableDistributedSampler(DistributedSampler):
    """A ``DistributedSampler`` that yields ``(index, crop seed)`` and can begin its first epoch late.

    Epoch ``e`` shuffles the dataset with seed ``seed + e``; each step consumes the next
    ``num_replicas * batch_size`` positions of that order, process ``rank`` taking every
    ``num_replicas``-th of them; an epoch stops before a step that would not be full. With
    ``start=(epoch, position)`` iteration in that epoch begins at ``position``: the positions
    already consumed by any number of processes are skipped."""

    def __init__(
        self,
        dataset,
        *,
        num_replicas: int,
        rank: int,
        batch_size: int,
        seed: int = 0,
        start: tuple[int, int] = (0, 0),
    ):
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.batch_size = batch_size
        self.global_batch = num_replicas * batch_size
        self.start = start
        if len(dataset) < self.global_batch:
            raise ValueError(
                f"{len(dataset)} photos but a step takes {num_replicas} x {batch_size} = "
                f"{self.global_batch}: add photos or lower --batch-size"
            )

    def first_position(self) -> int:
        return self.start[1] if self.epoch == self.start[0] else 0

    def steps_in_epoch(self) -> int:
        return (len(self.dataset) - self.first_position()) // self.global_batch

    def __iter__(self):
        order = torch.randperm(
            len(self.dataset), generator=torch.Generator().manual_seed(self.seed + self.epoch)
        )
        begin = self.first_position()
        end = begin + self.steps_in_epoch() * self.global_batch
        for index in order[begin + self.rank : end : self.num_replicas].tolist():
            yield index, crop_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return self.steps_in_epoch() * self.batch_size


def _distributed_setup(device: str | None):
    """(rank, world size, local rank, device) from torchrun's variables; joins the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def train_on_folder(
    model,
    styles,
    images=None,
    *,
    steps: int = 1000,
    batch_size: int = 4,
    crop_size: int = 128,
    style_size: int = 256,
    norm: str | None = None,
    channels: Sequence[int] = (12, 24, 48),
    num_residual: int = 3,
    lr: float = 2e-3,
    style_layers: Sequence[str] = STYLE_LAYERS,
    content_layer: str = "blocks.4",
    style_weight: float = 0.6,
    content_weight: float = 1.0,
    tv_weight: float = 1.0,
    normalize: bool = True,
    moment_weight: float = 1.0,
    checkpoint=None,
    checkpoint_every: int = 100,
    resume: bool = True,
    seed: int = 0,
    workers: int = 2,
    max_side: int = 512,
    dtype: torch.dtype = torch.float32,
    device: str | None = None,
    log=None,
    log_every: int = 10,
):
    """Train a :class:`TransformerNet` on crops of ``images`` (a folder, photos, or None for the
    offline photos), in this process or, under ``torchrun``, in every process of the group.

    ``batch_size`` is per process. ``model`` is the frozen loss network (moved to the device
    and ``dtype``); the loss is :func:`cs_utils.perceptual.perceptual_terms` with the weights of
    :func:`cs_utils.train_fast_style`. ``checkpoint``: rank 0 saves the network, optimiser,
    history and data position there every ``checkpoint_every`` steps and at the end; with
    ``resume`` every process continues from it, with any number of processes. ``log``: a file
    object rank 0 writes progress lines to. Returns ``(net, history)`` (the unwrapped network in
    eval mode)."""
    rank, world, device = _distributed_setup(device)
    style_dict = named_styles(styles)
    names = tuple(style_dict)
    norm = norm or ("conditional" if len(names) > 1 else "instance")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if norm == "batch" and world > 1 and device.type != "cuda":
        raise ValueError(
            "batch norm over several processes needs SyncBatchNorm, which runs on GPUs only; "
            "train with --norm instance, or in one process"
        )
    if steps < 0 or batch_size < 1:
        raise ValueError(f"need steps >= 0 and batch_size >= 1; got {steps} and {batch_size}")
    style_layers = list(style_layers)
    for layer in dict.fromkeys(style_layers + [content_layer]):
        get_layer(model, layer)  # an unknown name fails here, listing close names
    data = PhotoFolder(
        training_photos() if images is None else images, crop_size, num_styles=len(names), max_side=max_side
    )
    net_config = {
        "norm": norm,
        "channels": list(channels),
        "num_residual": num_residual,
        "style_names": list(names) if norm == "conditional" else [],
    }
    config = {
        "net": net_config,
        "crop_size": crop_size,
        "style_size": style_size,
        "lr": lr,
        "style_layers": style_layers,
        "content_layer": content_layer,
        "style_weight": style_weight,
        "content_weight": content_weight,
        "tv_weight": tv_weight,
        "normalize": normalize,
        "moment_weight": moment_weight,
        "styles": list(names),
        "seed": seed,
        "photos": len(data),
        "max_side": max_side,
        "dtype": str(dtype),
    }

    saved = None
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and resume and checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if saved.get("config") != config:
            raise ValueError(
                f"checkpoint {str(checkpoint)!r} was written with other settings ({saved.get('config')}"
                f", now {config}); pass --no-resume to start afresh, or another --checkpoint"
            )
        if saved["step"] > steps:
            raise ValueError(
                f"checkpoint {str(checkpoint)!r} is already {saved['step']} steps on; ask for more "
                "--steps or pass --no-resume"
            )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the same initial network in every process
        net = TransformerNet(**net_config)
    history = FastStyleHistory()
    if saved is not None:
        net.load_state_dict(saved["net"])
        history = FastStyleHistory.from_state(saved["history"])
    net = net.to(device=device, dtype=dtype).train()
    model = model.to(device=device, dtype=dtype)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
    trained = net
    if world > 1:
        if norm == "batch":
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        trained = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device] if device.type == "cuda" else None
        )
    epoch, position = (saved["epoch"], saved["position"]) if saved is not None else (0, 0)
    sampler = ResumableDistributedSampler(
        data, num_replicas=world, rank=rank, batch_size=batch_size, seed=seed, start=(epoch, position)
    )
    loader = DataLoader(
        data,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )

    def write(line):
        if rank == 0 and log is not None:
            print(line, file=log, flush=True)

    def save():
        if rank != 0 or checkpoint is None:
            return
        state = {
            "config": config,
            "net": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history.state(),
            "step": history.steps,
            "epoch": epoch,
            "position": position,
            "processes": world,
            "batch_size": batch_size,
        }
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        partial = checkpoint.with_name(checkpoint.name + ".partial")
        torch.save(state, partial)
        partial.replace(checkpoint)

    write(
        f"{world} process(es) x batch {batch_size} = {world * batch_size} crops of {crop_size} px per step, "
        f"{len(data)} photos, device {device}, from step {history.steps}"
    )
    with evaluating(model):
        targets = style_gram_targets(model, style_dict, style_layers, style_size, device)
        moments = (style_moment_targets(model, style_dict, style_layers, style_size, device)
                   if moment_weight else None)
        start, seconds_before, first_step = time.perf_counter(), history.seconds, history.steps
        while history.steps < steps:
            sampler.set_epoch(epoch)
            for x, style_index in loader:
                x, style_index = x.to(device=device, dtype=dtype), style_index.to(device)
                style = F.one_hot(style_index, len(names)).to(dtype) if norm == "conditional" else None
                y = trained(x, style=style)
                terms = perceptual_terms(
                    model,
                    x,
                    y,
                    targets,
                    style_index,
                    style_layers=style_layers,
                    content_layer=content_layer,
                    style_weight=style_weight,
                    content_weight=content_weight,
                    tv_weight=tv_weight,
                    normalize=normalize,
                    moments=moments,
                    moment_weight=moment_weight,
                )
                optimizer.zero_grad(set_to_none=True)
                sum(terms).backward()  # DistributedDataParallel averages the gradients of the processes
                optimizer.step()
                values = torch.stack([t.detach() for t in terms]).double()
                if world > 1:  # the log shows the whole step's loss, not rank 0's share
                    dist.all_reduce(values)
                    values /= world
                history.record_step(*values.tolist())
                history.seconds = seconds_before + time.perf_counter() - start
                position += sampler.global_batch
                if history.steps % log_every == 0 or history.steps == steps:
                    per_step = (time.perf_counter() - start) / (history.steps - first_step)
                    write(
                        f"step {history.steps}/{steps} loss {history.loss[-1]:.4g} (content {values[0]:.3g}, "
                        f"style {values[1]:.3g}, tv {values[2]:.3g}) {per_step:.3f} s/step"
                    )
                if history.steps % checkpoint_every == 0:
                    save()
                if history.steps >= steps:
                    break
            else:
                epoch, position = epoch + 1, 0
                continue
            break
    save()
    if world > 1:
        dist.barrier()
    return net.eval(), history
