"""tools/distributed_demo.py, the two-process demo that docs/distributed.md shows: its two processes
compute what one process computes on the whole batch, and say so."""
import re
import subprocess
import sys

import pytest
from repository import REPO


@pytest.mark.slow
@pytest.mark.heavy   # make test-heavy; tests/test_distributed.py checks the same equalities in CI
def test_the_demo_shows_the_gathered_loss_and_shuffle_bn_equal_to_one_process():
    done = subprocess.run([sys.executable, str(REPO / "tools" / "distributed_demo.py")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    alone = float(re.search(r"6 negatives, loss ([\d.]+)", out).group(1))
    gathered = re.search(r"14 negatives, loss ([\d.]+) in process 0, ([\d.]+) in process 1", out)
    one = float(re.search(r"one process on all 8 images: loss ([\d.]+)", out).group(1))
    assert float(gathered.group(1)) == float(gathered.group(2)) == one != alone
    differences = [float(x) for x in
                   re.findall(r"max difference (?:from one process's )?([\d.e+-]+)", out)]
    assert len(differences) == 2 and max(differences) < 1e-6
    assert "process 0 normalises images [0, 2, 4, 6] together" in out
