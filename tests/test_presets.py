"""Presets (clcourse/presets.py): the three budgets and the environment that picks one, the grading
caps on the training budget alone, and no autocast on the CPU."""
import pytest
import torch

from clcourse.presets import PRESETS, autocast_dtype, get_preset


def test_presets(monkeypatch):
    monkeypatch.delenv("CLCOURSE_PRESET", raising=False)
    expected_default = "colab" if torch.cuda.is_available() else "smoke"
    assert get_preset().name == expected_default
    monkeypatch.setenv("CLCOURSE_PRESET", "full")
    assert get_preset().name == "full"
    assert get_preset("smoke").name == "smoke"
    assert PRESETS["smoke"].backbone == "small_cnn" and PRESETS["colab"].backbone == "resnet18"
    assert get_preset("smoke").with_overrides(epochs=1).epochs == 1
    monkeypatch.setenv("CLCOURSE_PRESET", "huge")
    with pytest.raises(ValueError, match="CLCOURSE_PRESET.*huge"):
        get_preset()
    with pytest.raises(ValueError, match="name"):
        get_preset("tiny")


def test_max_epochs_and_max_train_images_cap_the_presets_training_budget_and_nothing_else(
        monkeypatch):
    monkeypatch.setenv("CLCOURSE_MAX_EPOCHS", "2")
    capped = get_preset("smoke")
    assert (capped.epochs, capped.sweep_epochs) == (2, 2)
    assert capped.with_overrides(epochs=12, sweep_epochs=6) == PRESETS["smoke"]
    monkeypatch.setenv("CLCOURSE_MAX_EPOCHS", "100")
    assert get_preset("full").epochs == 100 and get_preset("smoke") == PRESETS["smoke"]
    monkeypatch.setenv("CLCOURSE_MAX_TRAIN_IMAGES", "512")
    assert get_preset("smoke").train_subset == 512 and get_preset("colab").train_subset == 512
    assert get_preset("smoke").with_overrides(train_subset=2560) == PRESETS["smoke"]
    monkeypatch.setenv("CLCOURSE_MAX_TRAIN_IMAGES", "")
    monkeypatch.setenv("CLCOURSE_MAX_EPOCHS", "")
    assert get_preset("colab") == PRESETS["colab"]
    for wrong in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv("CLCOURSE_MAX_EPOCHS", wrong)
        with pytest.raises(ValueError,
                           match=f"CLCOURSE_MAX_EPOCHS must be an integer >= 1, got '?{wrong}"):
            get_preset("smoke")


def test_cpu_runs_in_float32():
    assert autocast_dtype(torch.device("cpu")) is None
