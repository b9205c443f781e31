"""tools/mutate.py makes the mutants it says it makes: one small edit each, at the line it reports, and never
in docstrings, annotations, error messages or argument checks."""
import ast

from repository import REPO, load_script

tool = load_script(REPO / "tools" / "mutate.py")

SOURCE = '''
def loss(z, k, temperature: float = 0.5):
    """Docstring 1 + 2."""
    require_positive("temperature", temperature)
    if temperature <= 0:
        raise ValueError(f"temperature must be > {0}")
    u = F.normalize(z, dim=1).detach()
    return (u @ k.T / temperature).mean() + 1
'''


def test_each_mutant_is_one_edit_at_the_line_it_names(tmp_path):
    path = tmp_path / "module.py"
    path.write_text(SOURCE)
    found = {(m.line, m.description) for m in tool.mutants(path)}
    assert found == {
        (2, "0.5 -> 1.0"),                                        # a default value
        (5, "LtE -> Lt"), (5, "0 -> 1"),
        (7, "x.detach() -> x"), (7, "normalize(x, ...) -> x"), (7, "1 -> 2"),
        (8, "MatMult -> Mult"), (8, "Div -> Mult"), (8, "Add -> Sub"), (8, "1 -> 2"),
    }
    original = ast.dump(ast.parse(SOURCE))
    for mutant in tool.mutants(path):
        assert ast.dump(ast.parse(mutant.source)) != original


def test_the_guarded_modules_have_test_files():
    for module, tests in tool.MODULES.items():
        assert (REPO / module).is_file() and all((REPO / test).is_file() for test in tests)
