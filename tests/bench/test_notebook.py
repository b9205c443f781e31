"""bench/notebook.py runs a notebook's code cells without Jupyter and reports each cell's time."""
import json

from helpers import write_notebook
from repository import load_bench


def test_notebooks_run_without_jupyter(tmp_path, capsys):
    runner = load_bench("notebook")
    install = ('import sys\nif "google.colab" in sys.modules:\n    !pip install -q clcourse\n'
               '%matplotlib inline')
    notebook = write_notebook(tmp_path / "n.ipynb", install, "x = 6 * 7\nprint('answer', x)")
    assert runner.code_cells(notebook) == [
        'import sys\nif "google.colab" in sys.modules:\n    pass\npass',
        "x = 6 * 7\nprint('answer', x)"]
    assert runner.main([str(notebook)]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.splitlines()[-1].removeprefix(runner.RESULT_PREFIX))
    assert "answer 42" in out and len(result["cell_seconds"]) == 2 and \
        result["peak_memory_gb"] is None
    write_notebook(notebook, "x = 1", "raise KeyError('missing')", "x = 3")
    assert runner.main([str(notebook)]) == 1
    assert "code cell 2 of" in capsys.readouterr().err
    assert runner.main([str(tmp_path / "absent.ipynb")]) == 2
