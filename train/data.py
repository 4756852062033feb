"""Training data plumbing: the training split with its boxes, seeded loaders, the validation crops.

Order and augmentation are functions of (train.seed, epoch) only: the sampler shuffles with a
per-epoch seed and every face draws its augmentation from (seed, epoch, index) (see augment.py),
so one process, several DDP processes and a resumed run all see the same batches.
"""

from __future__ import annotations

import itertools
import random
import signal
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from facemark.config import Config
from facemark.data.boxes import read_split_boxes
from facemark.data.crops import CropSet, load_crop_set
from facemark.data.layout import Sample, list_split
from facemark.errors import ConfigError, DataError
from facemark.schemes import load_scheme
from facemark.train.augment import TrainFaces
from facemark.weights import Normalisation


def training_samples(root: Path, cfg: Config, log=print) -> list[Sample]:
    """The faces of ROOT/train: every one must pass the reader's checks, or with
    data.skip_bad_samples those that do (facemark.data.check.usable_samples), the rest counted."""
    if cfg.data.skip_bad_samples:
        from facemark.data.check import usable_samples

        samples, problems = usable_samples(root, "train", cfg.data.scheme, cfg.data.max_image_pixels)
        log(f"skipped {len(problems)} bad samples" + (f" (first: {problems[0]})" if problems else ""))
    else:
        samples = list_split(root, "train")
    samples = samples[: cfg.data.limit] if cfg.data.limit else samples
    if not samples:
        raise DataError(f"{Path(root) / 'train'}: no usable training faces")
    return samples


def training_dataset(root: Path, cfg: Config, norm: Normalisation, log=print) -> Dataset:
    """The training faces: TrainFaces over ROOT/train, or with data.sets the faces of every set
    (facemark.train.multiset.MixedFaces). `norm`: the model's input normalisation (facemark.weights)."""
    main = scheme_faces(root, cfg, norm, log)
    if not cfg.data.sets:
        return main
    from facemark.train.multiset import MixedFaces, set_config

    parts = [main]
    for item in cfg.data.sets:
        parts.append(scheme_faces(Path(item.root), set_config(cfg, item), norm, log))
        log(f"data.sets: {len(parts[-1])} {item.scheme} training faces from {item.root} (loss weight {item.weight:g})")
    return MixedFaces(parts)


def scheme_faces(root: Path, cfg: Config, norm: Normalisation, log=print) -> TrainFaces:
    """TrainFaces over ROOT/train in data.scheme with the cached detector boxes of data.detector
    (not needed when data.landmark_box_prob is 1); detector misses fall back to the landmark box, counted."""
    samples = training_samples(root, cfg, log)
    boxes = None
    if cfg.data.landmark_box_prob < 1.0:
        boxes = read_split_boxes(root, "train", cfg.data.detector, [s.stem for s in samples])
        misses = sum(1 for box in boxes.values() if box is None)
        if misses:
            log(f"{misses} of {len(samples)} training faces have no {cfg.data.detector!r} box: "
                f"they use their landmark box")
    num_points = load_scheme(cfg.data.scheme).num_points
    return TrainFaces(samples, num_points, cfg.data, cfg.augment, boxes, seed=cfg.train.seed, norm=norm)


def per_process_batch(batch_size: int, world_size: int) -> int:
    """train.batch_size is the global batch; each of the world_size processes takes an equal share."""
    if batch_size % world_size:
        raise ConfigError(f"train.batch_size: {batch_size} does not split evenly over {world_size} processes")
    return batch_size // world_size


WORKER_GRACE_S = 10   # a worker's life after a SIGTERM its main process did not act on


def _init_worker(worker_id: int) -> None:
    """DataLoader workers: numpy and random seeded from the worker's torch seed (itself derived
    from the loader's seeded generator), never inherited from the parent. Ctrl-C and SIGTERM sent
    to the whole process group are left to the main process, which saves and stops the workers: a
    worker killed first would make torch raise "DataLoader worker is killed" in the middle of
    that (a worker whose parent is gone exits by itself, torch checks every few seconds). Should a
    SIGTERM come from elsewhere and the main process not stop the worker, for instance
    multiprocessing's exit handler, which terminates daemonic children with SIGTERM and waits for
    them, the worker ends by itself WORKER_GRACE_S later."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.alarm(WORKER_GRACE_S))   # SIGALRM ends it


class EpochSampler(DistributedSampler):
    """DistributedSampler that yields (epoch, index): the epoch travels with each index to the
    workers, so persistent workers draw the augmentation of the right epoch (TrainFaces). The
    first `skip` indices of the epoch's order are left out (the steps an interrupted epoch did)."""

    skip = 0

    def __iter__(self):
        return ((self.epoch, index) for index in itertools.islice(super().__iter__(), self.skip, None))


class TrainLoader:
    """This process's loader over the training faces, for every epoch of a run: one DataLoader
    whose workers persist across epochs. With new workers forked each epoch, the first batch of
    every epoch took about 5 s on the demo instead of 1 (likely the trainer's heap copied on write
    after the fork)."""

    def __init__(self, dataset: TrainFaces, cfg: Config, rank: int, world_size: int, pin_memory: bool = False):
        self.sampler = EpochSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.train.seed)
        batch = per_process_batch(cfg.train.batch_size, world_size)
        workers = cfg.data.workers
        self.loader = DataLoader(dataset, batch_size=batch, sampler=self.sampler, num_workers=workers,
                                 worker_init_fn=_init_worker, generator=torch.Generator().manual_seed(cfg.train.seed),
                                 pin_memory=pin_memory, persistent_workers=workers > 0,
                                 # a ragged last batch only when there is no full one (BatchNorm needs > 1 face)
                                 drop_last=len(self.sampler) > batch)

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.loader)

    def close(self) -> None:
        """End the persistent workers now rather than when the loader is collected (a loader kept
        alive by a reference cycle until interpreter exit would delay it by WORKER_GRACE_S).
        torch has no public call for it: the DataLoader keeps them on its iterator."""
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None:
            iterator._shutdown_workers()
            self.loader._iterator = None

    def epoch(self, epoch: int, steps_done: int = 0) -> DataLoader:
        """The loader of `epoch`: this process's shard of a (seed, epoch)-shuffled order, without
        the batches of the first `steps_done` steps (an interrupted epoch resumed)."""
        self.sampler.set_epoch(epoch)
        self.sampler.skip = steps_done * self.loader.batch_size
        return self.loader


def validation_crops(root: Path, cfg: Config) -> CropSet:
    """ROOT/val decoded and cropped once with detector boxes (as `facemark eval` sees faces)."""
    return load_crop_set(root, "val", cfg.data, workers=max(1, cfg.data.workers))
