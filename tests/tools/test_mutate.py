"""tools/mutate.py makes the mutants it says it makes: one small edit each, at the line it reports,
never in docstrings, annotations or error messages; equivalent mutants listed with a
reason are left out of the score."""
import ast

import pytest
from repository import REPO, load_script

tool = load_script(REPO / "tools" / "mutate.py")

SOURCE = '''
def loss(z, k, temperature: float = 0.5):
    """Docstring 1 + 2."""
    require_in_range("temperature", temperature, 0, 1)
    if temperature <= 0:
        raise ValueError(f"temperature must be > {0}")
    u = F.normalize(z, dim=1).detach()
    return (u @ k.T / temperature).mean() + 1 + 1
'''


def test_each_mutant_is_one_edit_at_the_line_it_names(tmp_path):
    path = tmp_path / "module.py"
    path.write_text(SOURCE)
    found = {(m.line, m.description, m.code) for m in tool.mutants(path)}
    check = 'require_in_range("temperature", temperature, 0, 1)'
    ret = "return (u @ k.T / temperature).mean() + 1 + 1"
    assert found == {
        (2, "0.5 -> 1.0", "def loss(z, k, temperature: float = 0.5):"),      # a default value
        # the bounds of a check
        (4, "0 -> 1", check), (4, "1 -> 2", check),
        (5, "LtE -> Lt", "if temperature <= 0:"), (5, "0 -> 1", "if temperature <= 0:"),
        (7, "x.detach() -> x", "u = F.normalize(z, dim=1).detach()"),
        (7, "normalize(x, ...) -> x", "u = F.normalize(z, dim=1).detach()"),
        (7, "1 -> 2", "u = F.normalize(z, dim=1).detach()"),
        (8, "MatMult -> Mult", ret), (8, "Div -> Mult", ret), (8, "Add -> Sub", ret),
        (8, "Add -> Sub [2]", ret),
        # the same edit twice on a line
        (8, "1 -> 2", ret), (8, "1 -> 2 [2]", ret),
    }
    original = ast.dump(ast.parse(SOURCE))
    sources = [mutant.source for mutant in tool.mutants(path)]
    assert all(ast.dump(ast.parse(source)) != original for source in sources)
    assert len(set(sources)) == len(sources)


def test_equivalents_file_entries_are_read_as_the_survivors_print_them(tmp_path):
    path = tmp_path / "equivalents.txt"
    path.write_text("# a comment\n\n"
                    "clcourse/x.py:12  Lt -> LtE  in: if a < b:  # a == b never happens\n"
                    "clcourse/x.py  1 -> 2 [2]  in: y = f(1, 1)  "
                    "# the second argument is ignored\n")
    assert tool.read_equivalents(path) == {
        ("clcourse/x.py", "Lt -> LtE", "if a < b:"): "a == b never happens",
        ("clcourse/x.py", "1 -> 2 [2]", "y = f(1, 1)"): "the second argument is ignored",
    }
    path.write_text("clcourse/x.py:12  Lt -> LtE  in: if a < b:\n")       # no reason
    with pytest.raises(SystemExit, match="why it changes nothing"):
        tool.read_equivalents(path)
    assert tool.read_equivalents(tmp_path / "missing.txt") == {}


@pytest.mark.slow
def test_a_pass_kills_what_the_tests_notice_and_leaves_equivalents_out(
        tmp_path, monkeypatch, capsys):
    (tmp_path / "clcourse").mkdir()
    (tmp_path / "clcourse" / "__init__.py").write_text("")
    (tmp_path / "clcourse" / "small.py").write_text("def f(a, b):\n    return a + b\n\n\ndef "
                                                    "g(a):\n"
                                                   "    return a * 1\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_small.py").write_text("from clcourse.small import f, g\n\n\ndef "
                                                      "test_f():\n    assert f(2, 3) == 5\n")
    monkeypatch.setattr(tool, "REPO", tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    equivalents = {("clcourse/small.py", "1 -> 2", "return a * 1"): "g is never used"}
    score = tool.mutate("clcourse/small.py", ["tests/test_small.py"], jobs=1, sample=None, seed=0,
                        timeout=60, equivalents=equivalents)
    # Mutants: a + b -> a - b (killed), a * 1 -> a / 1 (survives: g is
    # untested), 1 -> 2 (equivalent).
    assert (score.mutants, score.equivalent, score.killed) == (3, 1, 1)
    assert score.percent == 50.0
    printed = capsys.readouterr().out
    assert "survived  clcourse/small.py:6  Mult -> Div  in: return a * 1" in printed
    assert "1/2 killed, score 50.0% (3 mutants, 1 equivalent)" in printed


def test_the_guarded_modules_have_test_files():
    for module, tests in tool.MODULES.items():
        assert (REPO / module).is_file() and all((REPO / test.split("::")[0]).is_file()
                                                 for test in tests)
        for test in tests:     # a single test (path::name) is defined in its file
            path, _, name = test.partition("::")
            assert not name or f"\ndef {name}(" in (REPO / path).read_text(), test
