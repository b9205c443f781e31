"""pytest setup for the notebooks (`make test-notebooks`): with pytest-xdist (`-n 2 --dist loadgroup`) the notebooks
run as two groups side by side. A notebook must stay in the group of the notebooks whose training runs it reuses,
so that it runs after them, in the same worker: 02-04 reuse the runs of 01 and 03, and 09 those of 08; 05-09 reuse
none of 00-04's."""
import re

import pytest

NOTEBOOK_NUMBER = re.compile(r"^(\d+)_")
FIRST_OF_SECOND_GROUP = 5


def notebook_group(name: str) -> str | None:
    """The group of the notebook file called `name` ("00-04" or "05-"), None for a file that is not a notebook."""
    match = NOTEBOOK_NUMBER.match(name)
    if not name.endswith(".ipynb") or match is None:
        return None
    return "00-04" if int(match.group(1)) < FIRST_OF_SECOND_GROUP else "05-"


def pytest_collection_modifyitems(config, items):
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        group = notebook_group(item.path.name)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
