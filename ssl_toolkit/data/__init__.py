"""Datasets and LightningDataModules; every batch is ``(uint8 [B, 3, S, S], int64 [B], int64 [B])``,
except the train batches of image files: whole images plus their sizes (``whole_image``)."""

from __future__ import annotations

from ssl_toolkit.data.base import ImageDataModule, TensorImageDataset
from ssl_toolkit.data.fashion_mnist import FashionMNISTData
from ssl_toolkit.data.file_list import FileListData
from ssl_toolkit.data.image_folder import ImageFileDataset, ImageFolderData
from ssl_toolkit.data.imagenet100 import imagenet100_classes, make_imagenet100
from ssl_toolkit.data.shards import WebDatasetData
from ssl_toolkit.data.synthetic import SyntheticData

# Recipe `data.name` -> DataModule class; every other `data` key is a constructor keyword.
DATAMODULES = {
    "image_folder": ImageFolderData,
    "file_list": FileListData,
    "webdataset": WebDatasetData,
    "fashion_mnist": FashionMNISTData,
    "synthetic": SyntheticData,
}

__all__ = [
    "DATAMODULES",
    "FashionMNISTData",
    "FileListData",
    "ImageDataModule",
    "ImageFileDataset",
    "ImageFolderData",
    "SyntheticData",
    "TensorImageDataset",
    "WebDatasetData",
    "imagenet100_classes",
    "make_imagenet100",
]
