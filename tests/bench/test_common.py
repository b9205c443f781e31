"""bench/common.py unpacks the CIFAR-10 JPEG pack into the official layout, and decodes the real
pack to the data root's images where both are there."""
from pathlib import Path

import pytest
import torch
from repository import load_bench


def make_pack(path, n_train, n_test):
    """A CIFAR-10 JPEG pack (`cifar10-jpeg.npz`: the class names and, per split, the JPEG bytes,
    their offsets and the labels), with smooth random images."""
    import io

    import numpy as np
    from PIL import Image
    generator = np.random.default_rng(0)
    pack, originals = {"classes": np.array(["airplane", "automobile", "bird", "cat", "deer", "dog",
                                            "frog", "horse", "ship", "truck"])}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        coarse = generator.integers(0, 256, (n, 4, 4, 3)).astype(np.uint8)
        images = np.stack([np.asarray(Image.fromarray(image).resize((32, 32), Image.BILINEAR))
                           for image in coarse])
        encoded = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG", quality=95)
            encoded.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
        pack[f"{split}_bytes"] = np.concatenate(encoded)
        pack[f"{split}_offsets"] = np.cumsum([0] + [len(e) for e in encoded])
        pack[f"{split}_labels"] = generator.integers(0, 10, n).astype(np.uint8)
        originals[split] = images
    np.savez(path, **pack)
    return pack, originals


def test_the_jpeg_pack_is_unpacked_in_the_official_layout(tmp_path):
    import numpy as np

    from clcourse.data import load_dataset
    common = load_bench("common")
    pack, originals = make_pack(tmp_path / "pack.npz", 13, 4)
    root = common.unpack_cifar10(tmp_path / "pack.npz", tmp_path / "ours")
    images, labels = load_dataset("cifar10", root=root, train=True, download=False)
    # the training images in a fixed shuffle, seed 0
    order = np.random.default_rng(0).permutation(13)
    assert labels.tolist() == pack["train_labels"][order].tolist()
    assert (images.permute(0, 2, 3, 1).float()
            - torch.from_numpy(originals["train"][order]).float()).abs().mean() < 4
    test_images, test_labels = load_dataset("cifar10", root=root, train=False, download=False)
    assert test_images.shape == (4, 3, 32, 32) and test_labels.tolist() == \
        pack["test_labels"].tolist()
    with pytest.raises(FileNotFoundError, match="pack"):
        common.unpack_cifar10(tmp_path / "absent.npz", tmp_path / "other")


def test_the_real_pack_decodes_to_the_data_roots_cifar10(tmp_path):
    # The data root's CIFAR-10 (CI unpacks it from the pack before the tests) against the pack named
    # by $CLCOURSE_JPEG_PACK decoded here: the first training images after the fixed shuffle, and
    # the first test images.
    import os

    import numpy as np

    from clcourse.data import load_dataset
    common = load_bench("common")
    if not os.environ.get("CLCOURSE_JPEG_PACK"):
        pytest.skip("CLCOURSE_JPEG_PACK (the CIFAR-10 JPEG pack) is not set")
    pack = Path(os.environ["CLCOURSE_JPEG_PACK"])
    try:
        train_images, train_labels = load_dataset("cifar10", train=True, download=False)
        test_images, _ = load_dataset("cifar10", train=False, subset=None, download=False)
    except FileNotFoundError:
        pytest.skip("no CIFAR-10 in the data root")
    if not pack.is_file():
        pytest.skip(f"no {pack}")
    with np.load(pack) as data:
        order = np.random.default_rng(0).permutation(len(data["train_offsets"]) - 1)[:32]
        raw, offsets = data["train_bytes"], data["train_offsets"]
        ours = common._decode_jpegs([raw[offsets[i]:offsets[i + 1]].tobytes() for i in order])
        assert data["train_labels"][order].tolist() == train_labels[:32].tolist()
        raw, offsets = data["test_bytes"], data["test_offsets"]
        ours_test = common._decode_jpegs([raw[offsets[i]:offsets[i + 1]].tobytes()
                                          for i in range(32)])
    assert torch.equal(torch.from_numpy(ours).permute(0, 3, 1, 2), train_images[:32])
    assert torch.equal(torch.from_numpy(ours_test).permute(0, 3, 1, 2), test_images[:32])
