"""Whole-dataset tensors for CIFAR-10, CIFAR-100 and STL-10.

The course keeps a dataset on the training device as one uint8 tensor [N, 3, H, W] and augments
batches there (see `augment.py`), so no DataLoader or worker processes are needed: a CIFAR-10
train split is 150 MB as uint8.

The files are read straight from the official on-disk formats with pickle/numpy, not through
torchvision's dataset classes, because those check md5 sums and reject a copy of CIFAR-10 whose
pixels were re-encoded (one unpacked from a JPEG pack, say: the sums differ). torchvision is only
used to download and extract the official archive when the files are missing.

Expected layout under the data root (see `data_root` and data/README.md):

    cifar-10-batches-py/   data_batch_1 ... data_batch_5, test_batch, batches.meta
    cifar-100-python/      train, test, meta
    stl10_binary/          train_X.bin, train_y.bin, test_X.bin, test_y.bin
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .presets import MAX_TRAIN_IMAGES_ENV_VAR, capped, course_root
from .validation import as_number, require_bool

__all__ = ["DATA_ENV_VAR", "CIFAR10_CLASSES", "STL10_CLASSES", "CIFAR100_CLASSES", "SUBSET_SEED",
           "data_root", "balanced_subset_indices", "imbalanced_subset_indices", "load_dataset",
           "class_names"]

DATA_ENV_VAR = "CLCOURSE_DATA"

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]

STL10_CLASSES = [
    "airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck",
]

CIFAR100_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup",
    "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house",
    "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman",
    "worm",
]

# The seed of the fixed permutation behind `subset`: changing it changes every course subset.
SUBSET_SEED = 0


@dataclass(frozen=True)
class _DatasetFiles:
    """Where one dataset lives on disk and where its official archive comes from."""
    title: str
    folder: str                  # created inside the data root by extracting the archive
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    url: str
    archive: str
    archive_md5: str


_DATASETS = {
    "cifar10": _DatasetFiles(
        "CIFAR-10", "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a"),
    "cifar100": _DatasetFiles(
        "CIFAR-100", "cifar-100-python", ("train",), ("test",),
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85"),
    "stl10": _DatasetFiles(
        "STL-10", "stl10_binary", ("train_X.bin", "train_y.bin"), ("test_X.bin", "test_y.bin"),
        "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz", "stl10_binary.tar.gz",
        "91f7769df0f17e558f3565bffb0c7dfb"),
}

# (resolved folder, name, train) -> (images uint8 [N, 3, H, W], labels int64 [N]) as numpy arrays.
# Callers always get fresh tensors built from these, so in-place edits cannot reach the cache.
_CACHE: dict[tuple[str, str, bool], tuple[np.ndarray, np.ndarray]] = {}


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder that holds the datasets: `root` if given, else $CLCOURSE_DATA,
    else <repo>/data."""
    if root is None:
        root = os.environ.get(DATA_ENV_VAR) or course_root() / "data"
    return Path(root).expanduser().resolve()


def _dataset_key(name: str) -> str:
    key = name.lower() if isinstance(name, str) else name
    if key not in _DATASETS:
        raise ValueError(f"name must be one of {sorted(_DATASETS)} (case-insensitive), "
                         f"got {name!r}")
    return key


def _split_files(key: str, train: bool) -> tuple[str, ...]:
    spec = _DATASETS[key]
    return spec.train_files if train else spec.test_files


def _missing_files(folder: Path, files: tuple[str, ...]) -> list[str]:
    return [f for f in files if not (folder / f).is_file()]


def _missing_data_message(key: str, root: Path, train: bool, missing: list[str],
                          reason: str) -> str:
    spec = _DATASETS[key]
    folder = root / spec.folder
    split = "train" if train else "test"
    return (
        f"{spec.title} {split} split not found: {folder}/ lacks {', '.join(missing)} ({reason}). "
        f"To fix: download {spec.url} and extract it into {root}/ "
        f"(the archive creates {spec.folder}/), "
        f"or call load_dataset({key!r}, download=True) on a machine with internet access, "
        f"or set {DATA_ENV_VAR} to a folder that contains {spec.folder}/."
    )


def _download(key: str, root: Path) -> None:
    """Fetch and extract the official archive into `root` with torchvision's downloader.

    This is what torchvision.datasets.CIFAR10(root, download=True) does internally, without then
    loading (and md5-checking) the extracted files.
    """
    from torchvision.datasets import utils as tv_utils  # imported here: only needed to download

    spec = _DATASETS[key]
    root.mkdir(parents=True, exist_ok=True)
    tv_utils.download_and_extract_archive(spec.url, str(root), filename=spec.archive,
                                          md5=spec.archive_md5, remove_finished=True)


def _unpickle(path: Path) -> dict:
    # The official archives were pickled by Python 2: latin1 turns their byte-string keys into str.
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


class _DamagedFile(Exception):
    """A dataset file that cannot be read (truncated, overwritten, not the expected format)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(reason)
        self.path, self.reason = path, reason


def _read_cifar_file(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR file: `data` (N x 3072 uint8: 1024 red, then 1024 green, then 1024 blue values,
    each a 32 x 32 row-major image) and a list of N integer labels."""
    try:
        batch = _unpickle(path)
        images = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("numpy._core"):
            raise _DamagedFile(path, f"{type(error).__name__}: {error}") from error
        # NumPy 2 pickles its arrays as numpy._core.*, a module NumPy 1.x before 1.26 does not have.
        raise ValueError(
            f"{path} was written by NumPy 2, which NumPy {np.__version__} cannot read "
            f"(it has no {error.name}): the file is not damaged. Upgrade NumPy "
            "(pip install 'numpy>=1.26'), or write the file again with this NumPy "
            "(delete the folder and load the dataset with download=True).") from None
    except Exception as error:   # whatever a truncated or foreign file raises, the file is unusable
        raise _DamagedFile(path, f"{type(error).__name__}: {error}") from error
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or labels.shape != (len(images),):
        raise _DamagedFile(path, f"it holds data of shape {images.shape} and {labels.size} labels, "
                                 "not N rows of 3072 pixels and N labels")
    return images, labels


def _read_cifar(folder: Path, files: tuple[str, ...],
                label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batches = [_read_cifar_file(folder / f, label_key) for f in files]
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    return np.ascontiguousarray(images.reshape(-1, 3, 32, 32)), labels


def _read_stl10(folder: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """STL-10 binaries: images are raw uint8 [N, 3, 96, 96] stored column-major (each channel is
    written column by column, so a plain reshape gives [N, 3, W, H]); labels are uint8 in 1..10."""
    split = "train" if train else "test"
    image_file, label_file = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    raw = np.fromfile(image_file, dtype=np.uint8)
    image_bytes = 3 * 96 * 96
    if raw.size % image_bytes:
        raise _DamagedFile(image_file, f"its {raw.size} bytes are not a whole number of "
                                       f"{image_bytes}-byte images")
    images = np.ascontiguousarray(raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2))
    labels = np.fromfile(label_file, dtype=np.uint8).astype(np.int64) - 1
    if len(labels) != len(images):
        raise _DamagedFile(label_file, f"it holds {len(labels)} labels for the {len(images)} "
                                       f"images of {image_file.name}")
    return images, labels


def _read_split(key: str, folder: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Read one split; a damaged file raises a ValueError that names it and says how to get
    it again."""
    try:
        if key == "stl10":
            return _read_stl10(folder, train)
        label_key = "fine_labels" if key == "cifar100" else "labels"
        return _read_cifar(folder, _split_files(key, train), label_key)
    except _DamagedFile as damaged:
        spec = _DATASETS[key]
        raise ValueError(
            f"{damaged.path} is damaged ({damaged.reason}): a download or copy was probably cut "
            f"short. Re-create it: delete {folder}/ and call load_dataset({key!r}, download=True) "
            f"on a machine with internet access, or extract {spec.url} into "
            f"{folder.parent}/ again.") from None


def balanced_subset_indices(labels: np.ndarray, subset: int,
                            seed: int = SUBSET_SEED) -> np.ndarray:
    """Indices of a deterministic, class-balanced subset of `subset` examples, sorted ascending.

    Every class gets floor(subset / C) examples and the remainder goes to classes 0, 1, 2, ... .
    Within a class, examples are taken in the order of one fixed permutation of the whole split
    (seeded by `seed`), so the same `subset` always picks the same images, and a smaller subset
    is contained in a larger one. If a class runs out, the next classes make up the difference.

    How: rank each example within its class by its position in the permutation, then take the
    `subset` examples with the smallest (rank, class) pairs: first every class's rank-0 example,
    then every class's rank-1 example, and so on.
    """
    permutation = np.random.default_rng(seed).permutation(len(labels))
    permuted_labels = labels[permutation]
    # Permutation positions, grouped by class.
    by_class = np.argsort(permuted_labels, kind="stable")
    class_sizes = np.bincount(permuted_labels)
    class_starts = np.cumsum(class_sizes) - class_sizes
    rank = np.empty(len(labels), dtype=np.int64)
    rank[by_class] = np.arange(len(labels)) - np.repeat(class_starts, class_sizes)
    chosen = np.lexsort((permuted_labels, rank))[:subset]      # sort by rank, ties by class
    return np.sort(permutation[chosen])


def imbalanced_subset_indices(labels: np.ndarray, num_classes: int | None = None,
                               seed: int = SUBSET_SEED) -> np.ndarray:
    """Indices of a class-imbalanced subset, sorted ascending: class c keeps floor((c + 1) n_c / C)
    of its n_c examples, from 10% of class 0 to all of class 9 on CIFAR-10 (27,500 of 50,000
    images), 1% to 100% on CIFAR-100. This is how CACR builds its imbalanced CIFAR (Zheng et al.,
    TMLR 2023, `--imbalanced`).

    Within a class, examples are taken in the order of one fixed permutation of the whole split
    (seeded by `seed`), so the same labels and seed always give the same subset. `num_classes` (C)
    defaults to the largest label + 1. A class that would keep none of its examples (fewer than
    C / (c + 1)) is refused.
    """
    labels = np.asarray(labels)
    if (labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or len(labels) == 0
            or labels.min() < 0):
        raise ValueError("labels must be a non-empty 1-D array of class indices >= 0, "
                         f"got {labels.dtype} of shape {labels.shape}")
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    if (isinstance(num_classes, bool) or not isinstance(num_classes, int)
            or num_classes <= labels.max()):
        raise ValueError("num_classes must be an integer larger than every label "
                         f"(> {labels.max()}), got {num_classes!r}")
    permutation = np.random.default_rng(seed).permutation(len(labels))
    permuted_labels = labels[permutation]
    kept = []
    for c in range(num_classes):
        members = permutation[permuted_labels == c]
        kept.append(members[:(c + 1) * len(members) // num_classes])
        if len(members) and not len(kept[-1]):
            raise ValueError(f"class {c} has {len(members)} examples, of which the imbalanced "
                             f"subset would keep floor({c + 1} * {len(members)} / {num_classes}) = "
                             f"0: every class c needs at least {num_classes} / (c + 1) examples "
                             f"(for load_dataset, a subset of at least {num_classes ** 2} images, "
                             f"{num_classes} per class, or none)")
    return np.sort(np.concatenate(kept))


def _load_arrays(key: str, root: Path, train: bool,
                 download: bool) -> tuple[np.ndarray, np.ndarray]:
    folder = root / _DATASETS[key].folder
    cache_key = (str(folder), key, train)
    if cache_key in _CACHE:
        return _CACHE[cache_key]
    missing = _missing_files(folder, _split_files(key, train))
    if missing and not download:
        raise FileNotFoundError(_missing_data_message(key, root, train, missing, "download=False"))
    if missing:
        try:
            _download(key, root)
        # Any failure (no network, HTTP error, bad checksum, broken archive) ends the same way:
        # the user has to put the files there by hand, so say how.
        except Exception as err:
            reason = f"the download failed: {type(err).__name__}: {err}"
            raise FileNotFoundError(
                _missing_data_message(key, root, train, missing, reason)) from err
        missing = _missing_files(folder, _split_files(key, train))
        if missing:
            reason = "the downloaded archive did not contain them"
            raise FileNotFoundError(_missing_data_message(key, root, train, missing, reason))
    _CACHE[cache_key] = _read_split(key, folder, train)
    return _CACHE[cache_key]


def load_dataset(name: str, root: str | os.PathLike | None = None, train: bool = True,
                 subset: int | None = None, device: torch.device | str | None = None,
                 download: bool = True,
                 imbalanced: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of CIFAR-10, CIFAR-100 (fine labels) or STL-10 as two tensors on `device`.

    Args:
        name: "cifar10", "cifar100" or "stl10" (case-insensitive).
        root: data folder; see `data_root` (argument, else $CLCOURSE_DATA, else <repo>/data).
        train: the train split (CIFAR 50,000 images, STL-10 5,000 labelled) or the test split
            (CIFAR 10,000, STL-10 8,000). STL-10's unlabelled split is not used.
        subset: if given, a deterministic class-balanced subset of this many examples, kept in the
            split's original order (see `balanced_subset_indices`); 1 <= subset <= split size. A
            train split has at most ``$CLCOURSE_MAX_TRAIN_IMAGES`` examples when that is set
            (nbgrader's grading sets it).
        device: where the tensors go (one copy); None means CPU.
        download: fetch the official archive with torchvision if the files are missing.
        imbalanced: keep only a fraction (c + 1) / C of class c (of the subset, when one is
            given), as CACR's class-imbalanced CIFAR; see `imbalanced_subset_indices`.

    Returns:
        images: uint8 [N, 3, H, W], contiguous (H = W = 32 for CIFAR, 96 for STL-10).
        labels: int64 [N], class indices from 0.

    Splits are cached in this process, so loading the same split again does not re-read the files;
    every call returns new tensors, which the caller may modify freely.
    Raises FileNotFoundError, naming the missing files and how to get them, when the files are
    absent and cannot be downloaded, and ValueError, naming the file and how to re-create it, when a
    file is damaged (truncated, say).
    """
    key = _dataset_key(name)
    train = require_bool("train", train)
    download = require_bool("download", download)
    imbalanced = require_bool("imbalanced", imbalanced)
    images, labels = _load_arrays(key, data_root(root), train, download)
    # A numpy or 0-d tensor integer is an integer.
    size = None if subset is None else as_number(subset)
    if subset is not None and (not isinstance(size, int) or not 1 <= size <= len(labels)):
        split = "train" if train else "test"
        raise ValueError(f"subset must be an integer in [1, {len(labels)}] (the size of the {key} "
                         f"{split} split) or None, got {subset!r}")
    if train:
        size = capped(size, MAX_TRAIN_IMAGES_ENV_VAR)
    if size is not None and size < len(labels):
        index = balanced_subset_indices(labels, size)
        images, labels = images[index], labels[index]
    if imbalanced:
        index = imbalanced_subset_indices(labels, num_classes=len(class_names(key, root)))
        images, labels = images[index], labels[index]
    device = torch.device("cpu") if device is None else torch.device(device)
    # copy=True: the tensors never share memory with the cached arrays, even on the CPU.
    return (torch.from_numpy(images).to(device, copy=True),
            torch.from_numpy(labels).to(device, copy=True))


def class_names(name: str, root: str | os.PathLike | None = None) -> list[str]:
    """Class names in label order. CIFAR-100 (fine labels) reads them from cifar-100-python/meta
    when the file is there, and falls back to the official list otherwise."""
    key = _dataset_key(name)
    if key == "cifar10":
        return list(CIFAR10_CLASSES)
    if key == "stl10":
        return list(STL10_CLASSES)
    meta = data_root(root) / _DATASETS[key].folder / "meta"
    if meta.is_file():
        return [str(c) for c in _unpickle(meta)["fine_label_names"]]
    return list(CIFAR100_CLASSES)
