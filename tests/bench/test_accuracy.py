"""bench/accuracy.py: its --smoke configuration trains each method on the CPU with the same budget,
compares many views on imbalanced data, and stops without the data."""
import pytest
from repository import load_bench


@pytest.mark.parametrize("method, options",
                         [("simclr", []), ("moco", ["--option", "queue_size=256"])])
def test_accuracy_smoke(method, options, capsys):
    result, = load_bench("accuracy").main(["--smoke", "--method", method, *options])
    assert result["method"] == method and [r["epoch"] for r in result["history"].epochs] == [1, 2]
    assert 0 <= result["knn"] <= 1 and result["median_epoch_seconds"] > 0
    assert "final kNN top-1" in capsys.readouterr().out


@pytest.mark.heavy     # make test-heavy; make test runs test_accuracy_smoke's two methods
def test_accuracy_runs_every_method_with_the_same_budget(capsys):
    results = load_bench("accuracy").main(["--smoke", "--method", "all"])
    assert [r["method"] for r in results] == ["simclr", "dcl", "hcl", "moco", "mochi", "sce",
                                              "clae", "simclr_multiview",
                                              "cacr", "supcon", "supervised", "adversarial"]
    assert all(len(r["history"].epochs) == 2 and 0 <= r["knn"] <= 1 for r in results)
    out = capsys.readouterr().out
    assert "lr 0.12/256" in out and "lr 0.03/256" in out           # each method's own default rate
    assert "MoCHi's extra time per epoch over MoCo v2" in out
    assert "SCE's extra time per epoch over MoCo v2" in out and "lr 0.06/256" in out
    assert "CLAE's time per epoch over SimCLR: " in out
    assert "Adversarial SimCLR's time per epoch over SimCLR: " in out
    with pytest.raises(SystemExit):
        load_bench("accuracy").main(["--smoke", "--method", "all", "--option", "queue_size=256"])
    with pytest.raises(SystemExit):
        load_bench("accuracy").main(["--smoke", "--method", "simclr,byol"])


def test_accuracy_compares_many_views_on_imbalanced_data(capsys):
    results = load_bench("accuracy").main(["--smoke", "--method", "simclr,cacr", "--imbalanced",
                                           "--linear-probe"])
    assert [r["method"] for r in results] == ["simclr", "cacr"]
    assert all(0 <= r["linear"] <= 1 and len(r["per_class"]) == 10 for r in results)
    out = capsys.readouterr().out
    # (c + 1)/10 of each class's 102 or 103 of 1,024
    assert "simclr {} on small_cnn, 558 images" in out
    assert "cacr's epoch over SimCLR's" in out and "linear probe per class" in out


def test_accuracy_stops_without_the_data(monkeypatch, tmp_path):
    # Random images would give ~10% "accuracy" that looks like a
    # result: the script must stop instead.
    monkeypatch.setenv("CLCOURSE_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="CIFAR-10 train split not found"):
        load_bench("accuracy").main(["--smoke", "--method", "simclr"])
