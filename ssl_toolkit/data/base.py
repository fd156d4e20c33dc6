"""Shared LightningDataModule base and the in-memory image dataset.

Every dataset in the toolkit yields ``(image, label, index)``: ``image`` uint8 (3, S, S) of one fixed
size per dataset, ``label`` int64 (-1 if unknown), ``index`` the sample's position in its split.
The train loaders of image files yield whole images instead, ``(uint8 (3, h, w), label, index)``,
batched with their sizes (``whole_image.pad_collate``). Random augmentation never runs here; it
runs batched on the training device (``ssl_toolkit.augment``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from ssl_toolkit.checks import check_int
from ssl_toolkit.data.balanced_sampler import ClassBalancedBatchSampler
from ssl_toolkit.data.resumable import ResumableSampler, loader_position
from ssl_toolkit.data.worker_signals import ignore_stop_signals

Collate = Callable[[list[Any]], Any]  # a DataLoader collate_fn


def check_positive(**values: int | None) -> None:
    """Raise ``ValueError`` naming the first argument that is not a positive int (``None`` passes).

    Args:
        **values: argument name -> value, as the caller's constructor received them.
    """
    for name, value in values.items():
        check_int(name, value, optional=True)


class TensorImageDataset(Dataset):
    """Images already decoded and resized in memory.

    Args:
        images: uint8 (N, C, S, S) with C = 1 (replicated to 3 on access, so grayscale data costs a
            third of the memory) or C = 3.
        labels: int64 (N,).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images: expected uint8 (N, 1|3, S, S), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels: expected shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Return ``(uint8 (3, S, S), int64 scalar, index)``."""
        return self.images[index].expand(3, -1, -1), self.labels[index], index


class ImageDataModule(LightningDataModule, abc.ABC):
    """Base for every toolkit DataModule: split bookkeeping and the dataloaders.

    It offers splits, not evaluations: ``split_dataset(split, rows)`` (the un-augmented ``"train"``
    or ``"val"`` split, or some of its rows), ``eval_loader`` (a fixed-order loader over such a
    dataset), ``labelled_data()`` (the data with labels), ``heldout_dataloader()`` and
    ``train_eval_dataloader()`` (whole splits, for offline tools). ``val_dataloader()`` returns
    whatever loaders the evaluation planned above this layer attached to ``validation_loaders``;
    without any it is empty and Lightning runs no validation.

    Subclasses validate their arguments in ``__init__`` and implement ``_build`` (the heavy loading,
    run once by ``setup``), ``num_classes`` and ``num_train_samples``.

    Args:
        image_size: side S of every (3, S, S) image.
        batch_size: samples per batch, per process.
        num_workers: dataloader worker processes (0 = load in the main process).
        classes_per_batch: P for class-balanced train batches (``ClassBalancedBatchSampler``: P
            classes x batch_size / P samples each, for heads that use labels); None = plain shuffle.
    """

    def __init__(
        self, image_size: int, batch_size: int, num_workers: int, classes_per_batch: int | None = None
    ) -> None:
        super().__init__()
        check_positive(image_size=image_size, batch_size=batch_size, classes_per_batch=classes_per_batch)
        check_int("num_workers", num_workers, minimum=0)
        if classes_per_batch is not None and batch_size % classes_per_batch:
            raise ValueError(f"classes_per_batch: batch_size {batch_size} is not a multiple of {classes_per_batch}")
        self.classes_per_batch = classes_per_batch
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None  # stays None for data without a held-out split
        self.eval_data: ImageDataModule | None = None  # labelled data for evaluations (``eval_root``)
        # (path, reason) of every image file skipped as undecodable; data read from files adds to it.
        self.skipped: list[tuple[str, str]] = []
        self._built = False
        self._resume_at: dict | None = None  # the sampler state load_state_dict hands the next train_dataloader
        # The validation loop's loaders, attached by whoever plans the evaluation (None: none).
        self.validation_loaders: Callable[[], list[DataLoader]] | None = None

    @property
    @abc.abstractmethod
    def num_classes(self) -> int:
        """Number of label classes."""

    @property
    @abc.abstractmethod
    def num_train_samples(self) -> int:
        """Size of the train split (before any distributed sharding)."""

    @abc.abstractmethod
    def _build(self) -> tuple[Dataset, Dataset | None]:
        """Load the data; returns ``(train_set, val_set)`` (``val_set`` None: no held-out split)."""

    @property
    def has_labels(self) -> bool:
        """Whether any train sample has a class label (labels are -1 where unknown); loads the data."""
        return bool((self.train_labels() >= 0).any())

    @property
    def has_val(self) -> bool:
        """Whether the data has a held-out split; loads the data."""
        self.setup()
        return self.val_set is not None

    def labelled_data(self) -> ImageDataModule | None:
        """The data that label-needing evaluations read: ``eval_data`` when the
        recipe names one (``eval_root``), else this data when its train split has labels and it has
        a held-out split, else None (those evaluations are skipped)."""
        if self.eval_data is not None:
            return self.eval_data
        return self if self.has_labels and self.has_val else None

    def train_labels(self) -> torch.Tensor:
        """(N,) int64 labels of the train split, read without decoding images (the dataset's ``labels``)."""
        self.setup()
        labels = getattr(self.train_set, "labels", None)  # any Dataset: only ours declare labels
        if labels is None:
            raise TypeError(f"{type(self.train_set).__name__} has no `labels` array (needed for labels per class)")
        return torch.as_tensor(labels, dtype=torch.long)

    def split_size(self, split: str) -> int:
        """Samples in the ``"train"`` or ``"val"`` split (0 for a missing held-out split); loads the data."""
        self.setup()
        if split not in ("train", "val"):
            raise ValueError(f"split: expected 'train' or 'val', got {split!r}")
        dataset = self.train_set if split == "train" else self.val_set
        return 0 if dataset is None else len(dataset)  # type: ignore[arg-type]

    def setup(self, stage: str | None = None) -> None:
        """Load both splits once; later calls (every Lightning stage, every loader) are no-ops."""
        # Both splits are loaded whatever the stage: evaluations during validation read the train
        # split too, and loading twice would cost more than it saves.
        if not self._built:
            self.train_set, self.val_set = self._build()
            self._built = True
            if self.eval_data is not None:  # a bad eval_root fails here, before training
                self.eval_data.setup(stage)

    def train_source(self) -> tuple[Dataset, Collate | None]:
        """The dataset the train loader reads and its collate function (None: torch's default).

        Here the train split as it is; the data modules of image files return whole images and
        ``whole_image.pad_collate`` (batches ``[images, labels, index, sizes]``)."""
        return self.train_set, None

    def train_dataloader(self) -> DataLoader:
        """Shuffled train split with full batches only (SSL losses assume a fixed batch size); P x K
        class-balanced batches with ``classes_per_batch`` (rank-aware itself: under DDP set
        ``trainer.use_distributed_sampler: false``). Batches are ``[uint8 images, labels, index]``,
        plus ``sizes`` (B, 2) for whole images (``train_source``)."""
        self.setup()
        if len(self.train_set) < self.batch_size:
            raise ValueError(
                f"batch_size: {self.batch_size} is larger than the train split ({len(self.train_set)} samples)"
            )
        dataset, collate = self.train_source()
        if self.classes_per_batch is not None:
            sampler = ClassBalancedBatchSampler(
                self.train_labels(), self.classes_per_batch, self.batch_size // self.classes_per_batch
            )
            if self.trainer is not None:  # a resumed run goes on with its epoch's batches
                sampler.set_epoch(self.trainer.current_epoch)
            return DataLoader(
                dataset,
                batch_sampler=sampler,
                collate_fn=collate,
                num_workers=self.num_workers,
                worker_init_fn=ignore_stop_signals,
                persistent_workers=self.num_workers > 0,
                pin_memory=torch.cuda.is_available(),
            )
        # Order = f(seed, epoch); a resumed run starts where its checkpoint stopped (exact resume).
        sampler = ResumableSampler(dataset, self.batch_size, resume=self._resume_at)
        self._resume_at = None
        return self._loader(dataset, shuffle=False, drop_last=True, sampler=sampler, collate_fn=collate)

    def state_dict(self) -> dict[str, int]:
        """The train loader's position, stored in checkpoints by Lightning (see ``ResumableSampler``)."""
        return loader_position(self.trainer)

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume_at = dict(state_dict) or None  # used by the next train_dataloader()

    def val_dataloader(self) -> list[DataLoader]:
        """The validation loop's loaders: those ``validation_loaders()`` makes, or ``[]`` without it."""
        self.setup()
        return [] if self.validation_loaders is None else self.validation_loaders()

    def heldout_dataloader(self) -> DataLoader:
        """Held-out labelled split in a fixed order (e.g. the queries of a probe).

        Raises:
            ValueError: the data has no held-out split.
        """
        self.setup()
        if self.val_set is None:
            raise ValueError(f"val_dir: {type(self).__name__} has no held-out split")
        return self.split_dataloader("val")

    def train_eval_dataloader(self) -> DataLoader:
        """Labelled train split in a fixed order with every sample (e.g. what a probe is fit on)."""
        return self.split_dataloader("train")

    def split_dataloader(self, split: str, rows: Tensor | None = None) -> DataLoader:
        """Un-augmented ``"train"`` or ``"val"`` split in a fixed order, optionally only ``rows``:
        ``eval_loader(split_dataset(split, rows), batch_size)``."""
        return self.eval_loader(self.split_dataset(split, rows), self.batch_size)

    def split_dataset(self, split: str, rows: Tensor | None = None) -> Dataset:
        """The un-augmented ``"train"`` or ``"val"`` split, or only its ``rows``; loads the data.

        Args:
            split: which split.
            rows: (M,) positions to keep (a ``Subset``; each sample keeps its split index), or None.

        Raises:
            ValueError: an unknown split, or ``"val"`` for data without a held-out split.
        """
        self.setup()
        if split not in ("train", "val"):
            raise ValueError(f"split: expected 'train' or 'val', got {split!r}")
        dataset = self.train_set if split == "train" else self.val_set
        if dataset is None:
            raise ValueError(f"val_dir: {type(self).__name__} has no held-out split")
        return dataset if rows is None else Subset(dataset, rows.tolist())

    def eval_loader(self, dataset: Dataset, batch_size: int | None) -> DataLoader:
        """A loader over ``dataset`` in a fixed order, with every sample, for evaluation.

        Args:
            dataset: e.g. :meth:`split_dataset`.
            batch_size: samples per batch, or None when each item of ``dataset`` is a whole batch.

        The loader has its own seeded generator (iterating it never draws from the global RNG, so
        evaluating leaves the training run's augmentations unchanged) and no persistent workers
        (they exist only while an evaluation runs). Under DDP Lightning gives it a
        ``DistributedSampler(shuffle=False)`` itself.
        """
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            drop_last=False,
            generator=torch.Generator().manual_seed(0),
            num_workers=self.num_workers,
            worker_init_fn=ignore_stop_signals,
            pin_memory=torch.cuda.is_available(),
        )

    def _loader(
        self,
        dataset: Dataset,
        shuffle: bool,
        drop_last: bool,
        sampler: ResumableSampler | None = None,
        collate_fn: Collate | None = None,
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            collate_fn=collate_fn,
            # the train loader's own generator: worker seeds never draw from the global RNG
            generator=None if sampler is None else torch.Generator().manual_seed(sampler.seed),
            drop_last=drop_last,
            num_workers=self.num_workers,
            worker_init_fn=ignore_stop_signals,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )
