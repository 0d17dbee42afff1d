"""The shape of the house, checked: small modules, no import cycles, notebooks on the public API.

* no module of ``cs_utils`` is over 600 lines;
* the modules' imports of each other (also those inside functions) form no cycle;
* ``cs_utils/checks.py`` imports nothing else of the package, so every module can use it;
* every notebook imports the package once, as ``import cs_utils as cs``, and uses only names
  in ``cs_utils.__all__`` (tier 1); everything else is reached through its module by code, not
  by notebooks;
* every name in ``__all__`` exists, and every public module lists its own ``__all__``.
"""

import ast
import json
from pathlib import Path

import pytest

import cs_utils

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cs_utils"
MODULES = sorted(PACKAGE.rglob("*.py"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MAX_LINES = 600
ALIAS = "cs"


def module_name(path: Path) -> str:
    """``path``'s module name inside the package: ``losses``, ``course.grading``."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path) -> set[str]:
    """The package modules ``path`` imports with relative imports, anywhere in the file
    (dotted names inside the package: ``course.grading``; a package stands for its ``__init__``)."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
            prefix = [*base, *node.module.split(".")] if node.module else base
            if node.module:
                found.add(".".join(prefix))
            else:
                found.update(".".join([*prefix, alias.name]) for alias in node.names)
    modules = {module_name(p) for p in MODULES}
    return {name for name in found if name in modules and name}


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def notebook_problems(path: Path, public: set[str]) -> list[str]:
    """What in notebook ``path`` breaks the rules: other imports of the package, another alias,
    names outside ``public``, attribute chains into submodules."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        code = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        tree = ast.parse("\n".join(code))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    own = alias.name.split(".")[0] == "cs_utils"
                    if own and (alias.name, alias.asname) != ("cs_utils", ALIAS):
                        problems.append(f"cell {i}: `import {alias.name}` as {alias.asname}; "
                                        "use `import cs_utils as cs`")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "cs_utils":
                problems.append(f"cell {i}: `from {node.module} import ...`; use `cs.<name>`")
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id == ALIAS):
                if node.attr not in public:
                    problems.append(f"cell {i}: cs.{node.attr} is not in cs_utils.__all__")
    return problems


# --------------------------------------------------------------------------- the rules

@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_no_module_is_over_600_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines; split it by topic (at most {MAX_LINES})"


def test_no_import_cycle():
    graph = {module_name(p): package_imports(p) - {module_name(p)} for p in MODULES if module_name(p)}
    cycle = import_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_checks_is_a_foundation_that_imports_nothing_of_the_package():
    assert package_imports(PACKAGE / "checks.py") == set()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_use_one_alias_and_only_public_names(path):
    problems = notebook_problems(path, set(cs_utils.__all__))
    assert not problems, "\n".join(problems)


def test_every_public_name_exists_and_every_module_has_all():
    missing = [name for name in cs_utils.__all__ if not hasattr(cs_utils, name)]
    assert not missing, f"in cs_utils.__all__ but not defined: {missing}"
    assert len(set(cs_utils.__all__)) == len(cs_utils.__all__), "a name is listed twice"
    import importlib

    for path in MODULES:
        if path.stem in ("__init__", "__main__"):
            continue
        module = importlib.import_module(f"cs_utils.{module_name(path)}")
        assert isinstance(getattr(module, "__all__", None), list), f"{path.name} has no __all__ list"
        absent = [name for name in module.__all__ if not hasattr(module, name)]
        assert not absent, f"{path.name}: __all__ names {absent} that it does not define"


# --------------------------------------------------------------------------- the checks can fail

def test_the_cycle_finder_finds_a_cycle():
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b"}, "b": set()}) is None


def test_the_notebook_check_catches_private_names_and_other_imports(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import cs_utils as cs\nimport cs_utils\n"
                                  "from cs_utils.optimize import Jitter"),
        nbformat.v4.new_markdown_cell("cs.secret is fine in prose"),
        nbformat.v4.new_code_cell("%matplotlib inline\nx = cs.load_image('coffee')\ny = cs.optimize.Pad(2)"),
    ]
    nbformat.write(nb, tmp_path / "n.ipynb")
    problems = notebook_problems(tmp_path / "n.ipynb", {"load_image"})
    assert problems == ["cell 0: `import cs_utils` as None; use `import cs_utils as cs`",
                        "cell 0: `from cs_utils.optimize import ...`; use `cs.<name>`",
                        "cell 2: cs.optimize is not in cs_utils.__all__"]
