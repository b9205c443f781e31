"""Run a notebook's code cells top to bottom in one Python namespace, without
Jupyter, and time them.

    CLCOURSE_PRESET=colab python bench/notebook.py notebooks/00_setup_and_tour.ipynb

For timing a notebook where no Jupyter kernel is installed (a bare GPU image): shell and magic lines
(`!pip ...`, `%matplotlib ...`) become `pass`, figures go to matplotlib's Agg backend, and the last
line printed is `NOTEBOOK_RESULT {...}` (JSON: seconds, per-cell seconds, peak GPU memory) for
`bench/suite.py`. Checked outputs are not compared: the notebook tests (`make test-notebooks`,
nbval) do that. Exits with status 1, naming the cell, when a cell raises.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

RESULT_PREFIX = "NOTEBOOK_RESULT "


def code_cells(path: Path) -> list[str]:
    """The source of every code cell, with IPython's shell (`!`) and magic (`%`)
    lines made `pass`."""
    cells = []
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        lines = []
        for line in source.splitlines():
            stripped = line.lstrip()
            lines.append(line[:len(line) - len(stripped)] + "pass"
                         if stripped.startswith(("!", "%")) else line)
        cells.append("\n".join(lines))
    return cells


def run(path: Path) -> dict:
    """Execute the notebook at `path`; {"notebook", "seconds", "cell_seconds", "peak_memory_gb"}."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    namespace = {"__name__": "__main__"}
    cell_seconds = []
    start = time.perf_counter()
    for number, source in enumerate(code_cells(path), start=1):
        cell_start = time.perf_counter()
        try:
            exec(compile(source, f"<{path.name} code cell {number}>", "exec"), namespace)
        except Exception:
            traceback.print_exc()
            raise RuntimeError(f"code cell {number} of {path} raised (traceback above)") from None
        cell_seconds.append(round(time.perf_counter() - cell_start, 2))
    result = {"notebook": str(path), "seconds": round(time.perf_counter() - start, 2),
              "cell_seconds": cell_seconds, "peak_memory_gb": None}
    import torch
    if torch.cuda.is_available():
        result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    return result


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_file():
        print(f"usage: python bench/notebook.py NOTEBOOK.ipynb (got {argv})", file=sys.stderr)
        return 2
    try:
        result = run(Path(argv[0]))
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    print(RESULT_PREFIX + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
