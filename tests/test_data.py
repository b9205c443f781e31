"""Tests for clcourse.data on tiny fake datasets written in the official on-disk formats.

Nothing here downloads: the torchvision downloader is replaced by fakes. Damaged files name
themselves and how to recreate them; booleans and integers of other types are accepted or refused
clearly.
"""
import importlib.util
import os
import pickle
import re
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.utils as tv_utils

import clcourse.data as data
from clcourse.data import balanced_subset_indices, class_names, data_root, load_dataset


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch):
    """Every test starts with an empty in-process cache and without $CLCOURSE_DATA."""
    monkeypatch.setattr(data, "_CACHE", {})
    monkeypatch.delenv("CLCOURSE_DATA", raising=False)


@pytest.fixture
def no_download(monkeypatch):
    """Fail loudly if anything tries to download."""
    def refuse(*args, **kwargs):
        raise AssertionError("the test tried to download")
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", refuse)


def image_pattern(n, size, seed):
    """Random uint8 images [n, 3, size, size] (the ground truth the loader must reproduce)."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)


def cifar_row(image):
    """Official CIFAR row layout, written out pixel by pixel: 1024 red values (row-major), then
    green, then blue."""
    return [int(image[c, h, w]) for c in range(3) for h in range(32) for w in range(32)]


def write_cifar_batch(path, images, labels, label_key="labels"):
    rows = np.array([cifar_row(im) for im in images], dtype=np.uint8)
    with open(path, "wb") as f:
        pickle.dump({"data": rows, label_key: [int(v) for v in labels], "batch_label": b"fake"}, f,
                    protocol=2)


def make_cifar10(root, per_batch=4, test_size=5):
    """cifar-10-batches-py with 5 x per_batch train and test_size test images; returns the truth."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    n_train = 5 * per_batch
    train_x, test_x = image_pattern(n_train, 32, 1), image_pattern(test_size, 32, 2)
    train_y, test_y = np.arange(n_train) % 10, (np.arange(test_size) * 3) % 10
    for b in range(5):
        s = slice(b * per_batch, (b + 1) * per_batch)
        write_cifar_batch(folder / f"data_batch_{b + 1}", train_x[s], train_y[s])
    write_cifar_batch(folder / "test_batch", test_x, test_y)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": data.CIFAR10_CLASSES}, f)
    return (train_x, train_y), (test_x, test_y)


def make_cifar100(root, n_train=6, n_test=3, meta_names=None):
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True)
    train_x, test_x = image_pattern(n_train, 32, 3), image_pattern(n_test, 32, 4)
    train_y, test_y = (np.arange(n_train) * 17) % 100, (np.arange(n_test) * 31) % 100
    write_cifar_batch(folder / "train", train_x, train_y, "fine_labels")
    write_cifar_batch(folder / "test", test_x, test_y, "fine_labels")
    if meta_names is not None:
        with open(folder / "meta", "wb") as f:
            pickle.dump({"fine_label_names": meta_names, "coarse_label_names": ["x"] * 20}, f)
    return (train_x, train_y), (test_x, test_y)


def write_stl_split(folder, split, images, labels):
    """STL-10 binary layout, written out byte by byte: for each image and channel, the pixels
    column by column (column-major), and labels 1..10 as uint8."""
    n = len(images)
    raw = [int(images[i, c, h, w]) for i in range(n) for c in range(3) for w in range(96)
           for h in range(96)]
    np.array(raw, dtype=np.uint8).tofile(folder / f"{split}_X.bin")
    np.array([int(v) + 1 for v in labels], dtype=np.uint8).tofile(folder / f"{split}_y.bin")


def make_stl10(root, n_train=3, n_test=2):
    folder = Path(root) / "stl10_binary"
    folder.mkdir(parents=True)
    train_x, test_x = image_pattern(n_train, 96, 5), image_pattern(n_test, 96, 6)
    train_y, test_y = np.array([0, 9, 4])[:n_train], np.array([7, 0])[:n_test]
    write_stl_split(folder, "train", train_x, train_y)
    write_stl_split(folder, "test", test_x, test_y)
    return (train_x, train_y), (test_x, test_y)


# ---------------------------------------------------------------- reading the official formats

@pytest.mark.usefixtures("no_download")
@pytest.mark.parametrize("train", [True, False])
def test_cifar10_pixels_and_labels(tmp_path, train):
    truth = make_cifar10(tmp_path)[0 if train else 1]
    images, labels = load_dataset("cifar10", root=tmp_path, train=train)
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert images.shape == (len(truth[0]), 3, 32, 32) and images.is_contiguous()
    assert torch.equal(images, torch.from_numpy(truth[0]))
    assert labels.tolist() == truth[1].tolist()


@pytest.mark.usefixtures("no_download")
def test_cifar_pixel_lands_at_channel_row_column(tmp_path):
    """A single bright pixel at (c=2, h=5, w=17), i.e. flat position 2*1024 + 5*32 + 17."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    row = np.zeros((1, 3072), dtype=np.uint8)
    row[0, 2 * 1024 + 5 * 32 + 17] = 255
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": row, "labels": [3]}, f)
    images, labels = load_dataset("cifar10", root=tmp_path, train=False)
    assert images.shape == (1, 3, 32, 32)
    assert torch.nonzero(images[0]).tolist() == [[2, 5, 17]]
    assert labels.tolist() == [3]


@pytest.mark.usefixtures("no_download")
def test_cifar100_fine_labels(tmp_path):
    (train_x, train_y), (test_x, test_y) = make_cifar100(tmp_path)
    images, labels = load_dataset("CIFAR100", root=tmp_path)
    assert torch.equal(images, torch.from_numpy(train_x)) and labels.tolist() == train_y.tolist()
    images, labels = load_dataset("cifar100", root=tmp_path, train=False)
    assert torch.equal(images, torch.from_numpy(test_x)) and labels.tolist() == test_y.tolist()


@pytest.mark.usefixtures("no_download")
def test_stl10_column_major_pixels_and_labels_from_zero(tmp_path):
    (train_x, train_y), (test_x, test_y) = make_stl10(tmp_path)
    images, labels = load_dataset("stl10", root=tmp_path)
    assert images.shape == (3, 3, 96, 96) and images.dtype == torch.uint8 and images.is_contiguous()
    assert torch.equal(images, torch.from_numpy(train_x))
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 9, 4]
    images, labels = load_dataset("STL10", root=tmp_path, train=False)
    assert torch.equal(images, torch.from_numpy(test_x)) and labels.tolist() == [7, 0]


@pytest.mark.usefixtures("no_download")
def test_stl10_single_pixel(tmp_path):
    """Byte (c * 96 + w) * 96 + h of an image is pixel [c, h, w] (column-major)."""
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    raw = np.zeros(3 * 96 * 96, dtype=np.uint8)
    raw[(1 * 96 + 40) * 96 + 7] = 200                    # c=1, w=40, h=7
    raw.tofile(folder / "test_X.bin")
    np.array([10], dtype=np.uint8).tofile(folder / "test_y.bin")
    images, labels = load_dataset("stl10", root=tmp_path, train=False)
    assert torch.nonzero(images[0]).tolist() == [[1, 7, 40]]
    assert labels.tolist() == [9]


@pytest.mark.usefixtures("no_download")
def test_device_argument(tmp_path):
    make_cifar10(tmp_path)
    images, labels = load_dataset("cifar10", root=tmp_path, device="cpu")
    assert images.device.type == "cpu" and labels.device.type == "cpu"
    images, labels = load_dataset("cifar10", root=tmp_path, device=torch.device("meta"))
    assert images.device.type == "meta" and images.shape == (20, 3, 32, 32)


# ---------------------------------------------------------------- cache

@pytest.mark.usefixtures("no_download")
def test_cache_avoids_rereading_and_cannot_be_corrupted(tmp_path, monkeypatch):
    make_cifar10(tmp_path)
    first_images, first_labels = load_dataset("cifar10", root=tmp_path)
    expected = first_images.clone()
    first_images.zero_()                      # the caller edits its copy in place
    first_labels.fill_(-1)

    def no_reading(path):
        raise AssertionError(f"re-read {path}")
    monkeypatch.setattr(data, "_unpickle", no_reading)
    # same folder, other spelling
    images, labels = load_dataset("cifar10", root=str(tmp_path) + "/.")
    assert torch.equal(images, expected)
    assert labels.tolist() == [i % 10 for i in range(20)]
    subset_images, _ = load_dataset("cifar10", root=tmp_path, subset=10)
    subset_images.zero_()
    assert torch.equal(load_dataset("cifar10", root=tmp_path)[0], expected)


# ---------------------------------------------------------------- root resolution

def test_data_root_order(tmp_path, monkeypatch):
    repo_data = Path(data.__file__).resolve().parent.parent / "data"
    assert data_root() == repo_data
    monkeypatch.setenv("CLCOURSE_DATA", str(tmp_path / "from_env"))
    assert data_root() == tmp_path / "from_env"
    assert data_root(tmp_path / "argument") == tmp_path / "argument"
    assert data_root(str(tmp_path / "argument")) == tmp_path / "argument"


@pytest.mark.usefixtures("no_download")
def test_load_dataset_uses_env_var_unless_root_given(tmp_path, monkeypatch):
    env_root, arg_root = tmp_path / "env", tmp_path / "arg"
    make_cifar100(env_root, n_train=4)
    make_cifar100(arg_root, n_train=2)
    monkeypatch.setenv("CLCOURSE_DATA", str(env_root))
    assert len(load_dataset("cifar100")[1]) == 4
    assert len(load_dataset("cifar100", root=arg_root)[1]) == 2


# ---------------------------------------------------------------- subsets

def test_balanced_subset_matches_per_class_loop():
    """Reference: class c's examples ordered by their position in the seeded permutation; take
    floor(n/C) from each class, plus one more for classes 0 .. (n mod C) - 1."""
    labels = np.random.default_rng(7).permutation(np.arange(300) % 6)
    permutation = np.random.default_rng(data.SUBSET_SEED).permutation(len(labels))
    for n in [1, 5, 6, 7, 100, 299, 300]:
        expected = []
        for c in range(6):
            quota = n // 6 + (1 if c < n % 6 else 0)
            expected += [int(i) for i in permutation if labels[i] == c][:quota]
        assert balanced_subset_indices(labels, n).tolist() == sorted(expected)


@pytest.mark.usefixtures("no_download")
def test_subset_is_balanced_deterministic_ordered_and_nested(tmp_path):
    make_cifar10(tmp_path, per_batch=20)                 # 100 train images, 10 per class
    all_images, all_labels = load_dataset("cifar10", root=tmp_path)
    images, labels = load_dataset("cifar10", root=tmp_path, subset=23)
    assert images.shape == (23, 3, 32, 32) and images.is_contiguous()
    assert torch.bincount(labels, minlength=10).tolist() == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    index = balanced_subset_indices(all_labels.numpy(), 23)
    assert (np.diff(index) > 0).all()                    # original order kept
    assert torch.equal(images, all_images[index]) and torch.equal(labels, all_labels[index])
    data._CACHE.clear()                                  # a fresh read picks the same images
    again, _ = load_dataset("cifar10", root=tmp_path, subset=23, device="meta")
    assert again.shape == images.shape
    assert torch.equal(load_dataset("cifar10", root=tmp_path, subset=23)[0], images)
    smaller = set(balanced_subset_indices(all_labels.numpy(), 11).tolist())
    assert smaller < set(index.tolist())
    assert torch.equal(load_dataset("cifar10", root=tmp_path, subset=100)[0], all_images)


@pytest.mark.usefixtures("no_download")
def test_max_train_images_caps_the_train_split_alone(tmp_path, monkeypatch):
    make_cifar10(tmp_path, per_batch=20, test_size=30)   # 100 train images, 30 test images
    monkeypatch.setenv("CLCOURSE_MAX_TRAIN_IMAGES", "23")
    # "all", equal to the cap, above it: the same 23 images
    for subset in (None, 23, 50):
        images, labels = load_dataset("cifar10", root=tmp_path, subset=subset)
        assert (torch.equal(images, load_dataset("cifar10", root=tmp_path, subset=23)[0])
                and len(labels) == 23)
    assert len(load_dataset("cifar10", root=tmp_path, subset=11)[1]) == 11
    assert len(load_dataset("cifar10", root=tmp_path, train=False)[1]) == 30
    with pytest.raises(ValueError, match=r"subset must be an integer in \[1, 100\]"):
        # checked against the split, not the cap
        load_dataset("cifar10", root=tmp_path, subset=101)
    monkeypatch.setenv("CLCOURSE_MAX_TRAIN_IMAGES", "many")
    with pytest.raises(ValueError,
                       match="CLCOURSE_MAX_TRAIN_IMAGES must be an integer >= 1, got 'many'"):
        load_dataset("cifar10", root=tmp_path)


def test_subset_when_a_class_runs_out():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 10)
    counts = np.bincount(labels[balanced_subset_indices(labels, 12)], minlength=3)
    assert counts.tolist() == [5, 2, 5]


@pytest.mark.usefixtures("no_download")
@pytest.mark.parametrize("bad", [0, -3, 21, 2.5, True, "5"])
def test_subset_out_of_range(tmp_path, bad):
    make_cifar10(tmp_path)
    with pytest.raises(ValueError, match=r"subset must be an integer in \[1, 20\]"):
        load_dataset("cifar10", root=tmp_path, subset=bad)


# ---------------------------------------------------------------- names

def test_unknown_name_lists_known_names(tmp_path):
    with pytest.raises(ValueError,
                       match="name must be one of.*cifar10.*cifar100.*stl10.*got 'mnist'"):
        load_dataset("mnist", root=tmp_path)
    with pytest.raises(ValueError, match="name"):
        class_names("imagenet")


def test_class_names(tmp_path):
    assert class_names("cifar10")[:3] == ["airplane", "automobile", "bird"]
    assert len(class_names("CIFAR10")) == 10
    assert class_names("stl10") == ["airplane", "bird", "car", "cat", "deer", "dog", "horse",
                                    "monkey", "ship", "truck"]
    names = class_names("cifar100", root=tmp_path)       # no meta file: the built-in list
    assert len(names) == len(set(names)) == 100
    assert names[:3] == ["apple", "aquarium_fish", "baby"] and names[-1] == "worm"
    assert names == sorted(names)                       # CIFAR-100 fine labels are alphabetical
    make_cifar100(tmp_path, meta_names=[f"class_{i}" for i in range(100)])
    assert class_names("cifar100", root=tmp_path)[42] == "class_42"


# ---------------------------------------------------------------- missing files and downloads

@pytest.mark.usefixtures("no_download")
def test_missing_files_without_download(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("cifar10", root=tmp_path, download=False)
    message = str(err.value)
    folder = str(tmp_path / "cifar-10-batches-py")
    assert folder in message and "data_batch_1" in message and "data_batch_5" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert "CLCOURSE_DATA" in message and "download=False" in message


@pytest.mark.usefixtures("no_download")
def test_missing_names_only_the_missing_files(tmp_path):
    make_stl10(tmp_path)
    os.remove(tmp_path / "stl10_binary" / "test_y.bin")
    load_dataset("stl10", root=tmp_path, download=False)          # the train split is complete
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("stl10", root=tmp_path, train=False, download=False)
    assert f"{tmp_path / 'stl10_binary'}/ lacks test_y.bin (download=False)" in str(err.value)
    assert "stl10_binary.tar.gz" in str(err.value)


@pytest.mark.parametrize("error", [urllib.error.URLError("no network"), OSError("unreachable"),
                                   RuntimeError("File not found or corrupted.")])
def test_failed_download_becomes_file_not_found(tmp_path, monkeypatch, error):
    calls = []

    def offline(url, download_root, **kwargs):
        calls.append(url)
        raise error
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(FileNotFoundError, match="download failed") as err:
        load_dataset("cifar100", root=tmp_path)
    assert calls == ["https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"]
    assert "cifar-100-python" in str(err.value) and err.value.__cause__ is error


def test_a_copy_pickled_by_numpy_2_read_by_an_older_numpy_names_the_numpy_version_not_damage(
        tmp_path, monkeypatch):
    _, (test_x, test_y) = make_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    rows = np.stack([np.asarray(cifar_row(image), np.uint8) for image in test_x])
    # As NumPy 2 writes an array, whichever NumPy runs the test:
    # numpy._core.multiarray._reconstruct.
    pickled = pickle.dumps({"data": rows, "labels": [int(v) for v in test_y]}, protocol=2)
    batch.write_bytes(pickled.replace(b"cnumpy.core.multiarray\n", b"cnumpy._core.multiarray\n"))
    assert b"cnumpy._core.multiarray\n" in batch.read_bytes()
    if importlib.util.find_spec("numpy._core") is not None:   # NumPy 2 (and 1.26) read it ...
        _, labels = load_dataset("cifar10", root=tmp_path, train=False, download=False)
        assert labels.tolist() == test_y.tolist()
        data._CACHE.clear()
        # ... NumPy 1.x before 1.26 has no numpy._core: importing it fails as below.
        monkeypatch.setitem(sys.modules, "numpy._core.multiarray", None)
        monkeypatch.setattr(np, "__version__", "1.25.2")
    with pytest.raises(ValueError,
                       match=f"{batch} was written by NumPy 2, which NumPy "
                             f"{re.escape(np.__version__)} cannot read .*not damaged"
                             r".*pip install 'numpy>=1.26'") as raised:
        load_dataset("cifar10", root=tmp_path, train=False, download=False)
    assert "damaged (" not in str(raised.value)


def test_download_then_read(tmp_path, monkeypatch):
    """A successful download extracts the archive into root; the files are then read as usual."""
    def fake_download(url, download_root, filename=None, md5=None, **kwargs):
        assert (url, Path(download_root), filename) == (
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", tmp_path,
            "cifar-10-python.tar.gz")
        make_cifar10(download_root)
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    images, labels = load_dataset("cifar10", root=tmp_path, train=False)
    assert images.shape == (5, 3, 32, 32) and labels.tolist() == [0, 3, 6, 9, 2]


def test_download_without_the_expected_files(tmp_path, monkeypatch):
    monkeypatch.setattr(tv_utils, "download_and_extract_archive", lambda *args, **kwargs: None)
    with pytest.raises(FileNotFoundError, match="did not contain"):
        load_dataset("stl10", root=tmp_path)


# ---------------------------------------------------------------- a real copy, when there is one

def real_cifar10_root():
    root = os.environ.get("CLCOURSE_DATA")
    if root and (Path(root) / "cifar-10-batches-py" / "test_batch").is_file():
        return root
    return None


REAL_CIFAR10 = real_cifar10_root()


@pytest.mark.skipif(REAL_CIFAR10 is None, reason="CLCOURSE_DATA does not point to a CIFAR-10 copy")
@pytest.mark.usefixtures("no_download")
def test_real_cifar10_sizes():
    train_images, train_labels = load_dataset("cifar10", root=REAL_CIFAR10)
    test_images, test_labels = load_dataset("cifar10", root=REAL_CIFAR10, train=False)
    assert train_images.shape == (50000, 3, 32, 32) and test_images.shape == (10000, 3, 32, 32)
    assert torch.bincount(train_labels).tolist() == [5000] * 10
    assert torch.bincount(test_labels).tolist() == [1000] * 10


# ---------------------------------------------------------------- class-imbalanced subsets (CACR)

def test_imbalanced_subset_keeps_c_plus_1_over_c_of_each_class():
    labels = np.random.default_rng(3).permutation(
        np.repeat(np.arange(10), [50, 40, 50, 33, 50, 50, 7, 50, 50, 20]))
    sizes = np.bincount(labels)
    index = data.imbalanced_subset_indices(labels)
    counts = np.bincount(labels[index], minlength=10)
    assert counts.tolist() == [(c + 1) * sizes[c] // 10 for c in range(10)]
    assert counts.tolist() == [5, 8, 15, 13, 25, 30, 4, 40, 45, 20]
    assert (np.diff(index) > 0).all()                                    # sorted, no repeats


def test_imbalanced_subset_takes_each_class_in_the_order_of_the_seeded_permutation():
    labels = np.random.default_rng(4).permutation(np.arange(120) % 4)
    for seed in (0, 5):
        permutation = np.random.default_rng(seed).permutation(len(labels))
        expected = []
        for c in range(4):
            members = [int(i) for i in permutation if labels[i] == c]
            expected += members[:(c + 1) * 30 // 4]
        assert data.imbalanced_subset_indices(labels, seed=seed).tolist() == sorted(expected)
    assert (data.imbalanced_subset_indices(labels).tolist()
            == data.imbalanced_subset_indices(labels).tolist())
    assert (data.imbalanced_subset_indices(labels, seed=1).tolist() !=
            data.imbalanced_subset_indices(labels).tolist())


def test_imbalanced_subset_counts_classes_up_to_num_classes():
    labels = np.repeat(np.arange(3), 20)                               # classes 3 and 4 absent
    counts = np.bincount(labels[data.imbalanced_subset_indices(labels, num_classes=5)], minlength=5)
    assert counts.tolist() == [4, 8, 12, 0, 0]
    with pytest.raises(ValueError,
                       match=r"class 0 has 3 examples, of which the imbalanced subset would keep "
                             r"floor\(1 \* 3 / 5\) = 0"):
        data.imbalanced_subset_indices(np.repeat(np.arange(5), 3))
    with pytest.raises(ValueError,
                       match=r"num_classes must be an integer larger than every label \(> 2\), "
                             r"got 2"):
        data.imbalanced_subset_indices(labels, num_classes=2)
    with pytest.raises(ValueError, match="labels must be a non-empty 1-D array of class indices"):
        data.imbalanced_subset_indices(np.zeros((3, 2), dtype=np.int64))


@pytest.mark.usefixtures("no_download")
def test_load_dataset_imbalanced_after_the_balanced_subset(tmp_path):
    # 100 train images, 10 per class
    make_cifar10(tmp_path, per_batch=20)
    all_images, all_labels = load_dataset("cifar10", root=tmp_path)
    images, labels = load_dataset("cifar10", root=tmp_path, imbalanced=True)
    assert torch.bincount(labels, minlength=10).tolist() == list(range(1, 11))
    index = data.imbalanced_subset_indices(all_labels.numpy(), num_classes=10)
    assert torch.equal(images, all_images[index]) and torch.equal(labels, all_labels[index])
    # 5 per class, of which class 0 would keep floor(5 / 10) = 0: a class dropped is refused
    with pytest.raises(ValueError,
                       match=r"class 0 has 5 examples, of which the imbalanced subset would keep "
                             r"floor\(1 \* 5 / 10\) = 0: every class c needs at least "
                             r"10 / \(c \+ 1\) examples \(for load_dataset, a subset of at least "
                             r"100 images"):
        load_dataset("cifar10", root=tmp_path, subset=50, imbalanced=True)
    with pytest.raises(ValueError, match="class 0 has 1 examples"):
        load_dataset("cifar10", root=tmp_path, subset=10, imbalanced=True)
    with pytest.raises(ValueError, match="imbalanced must be True or False, got 'yes'"):
        load_dataset("cifar10", root=tmp_path, imbalanced="yes")


@pytest.mark.usefixtures("no_download")
def test_load_dataset_imbalanced_cifar100_uses_its_100_classes(tmp_path):
    # labels 0, 17, 34, 51, 68, 85
    make_cifar100(tmp_path, n_train=6)
    # floor((c + 1) / 100) = 0 images of class 0 (with C = 86, the largest label + 1, class 85 would
    # keep its one)
    with pytest.raises(ValueError,
                       match=r"class 0 has 1 examples, of which the imbalanced subset would keep "
                             r"floor\(1 \* 1 / 100\) = 0"):
        load_dataset("cifar100", root=tmp_path, imbalanced=True)


@pytest.mark.skipif(REAL_CIFAR10 is None, reason="CLCOURSE_DATA does not point to a CIFAR-10 copy")
@pytest.mark.usefixtures("no_download")
def test_real_imbalanced_cifar10_has_27500_images():
    _, labels = load_dataset("cifar10", root=REAL_CIFAR10, imbalanced=True)
    assert torch.bincount(labels).tolist() == [500 * (c + 1) for c in range(10)]


# ---------------------------------------------------------------- damaged files

def test_a_truncated_cifar_batch_names_the_file_and_how_to_recreate_it(cifar_root):
    batch = cifar_root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:1000])
    with pytest.raises(ValueError,
                       match=f"{batch} is damaged .*delete .*load_dataset\\('cifar10', "
                             f"download=True\\)"):
        load_dataset("cifar10", root=cifar_root)
    # the other split still loads
    assert len(load_dataset("cifar10", root=cifar_root, train=False)[0]) == 4


def test_a_cifar_batch_of_the_wrong_shape_names_the_file(cifar_root):
    batch = cifar_root / "cifar-10-batches-py" / "test_batch"
    with open(batch, "wb") as f:
        pickle.dump({"data": np.zeros((4, 100), dtype=np.uint8), "labels": [0, 1, 2, 3]}, f)
    with pytest.raises(ValueError, match=f"{batch} is damaged .*not N rows of 3072 pixels"):
        load_dataset("cifar10", root=cifar_root, train=False)


def test_a_truncated_stl10_file_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_CACHE", {})
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    (folder / "test_X.bin").write_bytes(bytes(3 * 96 * 96 + 10))
    (folder / "test_y.bin").write_bytes(bytes([1]))
    with pytest.raises(ValueError,
                       match=f"{folder / 'test_X.bin'} is damaged .*not a whole number"):
        load_dataset("stl10", root=tmp_path, train=False, download=False)


# ---------------------------------------------------------------- arguments of other types

@pytest.mark.parametrize("argument", ["train", "download"])
def test_load_dataset_takes_booleans_only(cifar_root, argument):
    with pytest.raises(ValueError, match=f"{argument} must be True or False, got 'no'"):
        load_dataset("cifar10", root=cifar_root, **{argument: "no"})
    # the test split
    assert len(load_dataset("cifar10", root=cifar_root, train=np.bool_(False))[0]) == 4


def test_numpy_and_tensor_subsets_are_integers(cifar_root):
    expected, _ = load_dataset("cifar10", root=cifar_root, subset=10)
    for subset in (np.int64(10), torch.tensor(10), np.array(10)):
        assert torch.equal(load_dataset("cifar10", root=cifar_root, subset=subset)[0], expected)
    for bad in (np.float64(2.5), torch.tensor([10]), np.bool_(True)):
        with pytest.raises(ValueError, match=r"subset must be an integer in \[1, 20\]"):
            load_dataset("cifar10", root=cifar_root, subset=bad)
