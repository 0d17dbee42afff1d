"""The shape of the house, checked: small modules, no import cycles, notebooks on the public API.

* no module of ``cs_utils`` is over 450 lines;
* the modules' imports of each other (also those inside functions) form no cycle;
* ``cs_utils/validation.py`` imports nothing else of the package, so every module can use it;
* every notebook imports the package once, as ``import cs_utils as cs``, and uses only names
  in ``cs_utils.__all__`` (tier 1); everything else is reached through its module by code, not
  by notebooks; and ``cs_utils.__all__`` holds nothing the notebooks do not use or name;
* every name in ``__all__`` exists, and every public module lists its own ``__all__``;
* no re-export shims: a module's ``__all__`` lists only names the module itself defines (the
  package's ``__init__`` files are the one place that gathers names), and no module star-imports;
* no module imports a private name (``_x``) from a lesson module other than itself (lesson modules:
  the topic modules directly under ``cs_utils/``); what two modules share is public in one home;
* lesson modules hold no engine code: none touches batch-norm statistics, memory layouts, torch's
  fusion or L-BFGS internals, and no exercise's solution region (``### BEGIN SOLUTION`` ...
  ``### END SOLUTION``) names the engine or anything imported from it.
"""

import ast
import json
import re
from pathlib import Path

import pytest

import cs_utils

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cs_utils"
MODULES = sorted(PACKAGE.rglob("*.py"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MAX_LINES = 450
PACKAGES = ("engine", "course", "instructor")          # everything else directly under cs_utils/ is a lesson
#: Engine vocabulary: names a lesson module never uses (they belong in cs_utils/engine/).
ENGINE_NAMES = {"running_mean", "running_var", "channels_last", "fuse_conv_bn_weights", "fuse_conv_bn_eval",
                "_strong_wolfe", "fastest_batch_size"}
ENGINE_MODULES = ("torch.optim.lbfgs", "torch.nn.utils.fusion")
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

def is_lesson(path: Path) -> bool:
    """A topic module directly under ``cs_utils/`` (not a package's ``__init__``)."""
    return path.parent == PACKAGE and path.name != "__init__.py"


def shim_problems(path: Path) -> list[str]:
    """Names ``path``'s ``__all__`` lists without defining them, and star imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    problems = [f"{path.name}: `from {'.' * node.level}{node.module} import *`" for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names)]
    if path.name == "__init__.py":
        return problems
    defined, listed = set(), []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) and node.value is not None else []
        for target in targets:
            defined |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
            if isinstance(target, ast.Name) and target.id == "__all__" and isinstance(node.value, ast.List):
                listed = [e.value for e in node.value.elts if isinstance(e, ast.Constant)]
    problems += [f"{path.name}: __all__ lists {name!r}, which it imports from elsewhere"
                 for name in listed if name not in defined]
    return problems


def private_import_problems(path: Path) -> list[str]:
    """Private names ``path`` imports from a lesson module other than itself."""
    here = module_name(path)
    package = here.split(".") if path.name == "__init__.py" else here.split(".")[:-1]
    lessons = {module_name(p) for p in MODULES if is_lesson(p)}
    problems = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package[:len(package) - (node.level - 1)]
            source = ".".join([*base, *(node.module.split(".") if node.module else [])])
        elif (node.module or "").startswith("cs_utils."):
            source = node.module.removeprefix("cs_utils.")
        else:
            continue
        private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
        if source in lessons and source != here and private:
            problems.append(f"{path.name}: imports {', '.join(private)} from {source}")
    return problems


def engine_problems(path: Path) -> list[str]:
    """Engine code in lesson module ``path``: engine vocabulary, torch internals the engine uses, or
    the engine inside an exercise's solution region."""
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    problems, from_engine = [], set()
    for node in ast.walk(tree):
        name = node.attr if isinstance(node, ast.Attribute) else None   # bn.running_var, torch.channels_last
        if name in ENGINE_NAMES:
            problems.append(f"{path.name}:{node.lineno}: `{name}` is engine code (cs_utils/engine/)")
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.startswith(ENGINE_MODULES):
                problems.append(f"{path.name}:{node.lineno}: imports {module} (cs_utils/engine/)")
            if node.level and module.split(".")[0] == "engine" or module.startswith("cs_utils.engine"):
                from_engine |= {a.asname or a.name for a in node.names}
            problems += [f"{path.name}:{node.lineno}: imports {a.name} (cs_utils/engine/)"
                         for a in node.names if a.name in ENGINE_NAMES]
        elif isinstance(node, ast.Import):
            problems += [f"{path.name}:{node.lineno}: imports {a.name} (cs_utils/engine/)"
                         for a in node.names if a.name.startswith(ENGINE_MODULES)]
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        if "### BEGIN SOLUTION" in line:
            inside = True
        elif "### END SOLUTION" in line:
            inside = False
        elif inside:
            code = line.split("#", 1)[0]
            used = {w for w in from_engine | {"engine"} if re.search(rf"\b{re.escape(w)}\b", code)}
            if used:
                problems.append(f"{path.name}:{number}: the solution region uses the engine "
                                f"({', '.join(sorted(used))})")
    return problems


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_no_module_is_over_450_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines; split it by topic (at most {MAX_LINES})"


def test_no_import_cycle():
    graph = {module_name(p): package_imports(p) - {module_name(p)} for p in MODULES if module_name(p)}
    cycle = import_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_validation_is_a_foundation_that_imports_nothing_of_the_package():
    assert package_imports(PACKAGE / "validation.py") == set()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_use_one_alias_and_only_public_names(path):
    problems = notebook_problems(path, set(cs_utils.__all__))
    assert not problems, "\n".join(problems)


def test_the_top_level_holds_only_what_the_notebooks_call_or_name():
    """Every name of ``cs_utils.__all__`` appears as ``cs.<name>`` (or ``cs_utils.<name>``) in a notebook."""
    text = "\n".join("".join(cell["source"]) for path in NOTEBOOKS
                     for cell in json.loads(path.read_text(encoding="utf-8"))["cells"])
    named = set(re.findall(r"\bcs(?:_utils)?\.([A-Za-z_]\w*)", text))
    unused = sorted(set(cs_utils.__all__) - named)
    assert not unused, f"in cs_utils.__all__, used by no notebook (reach them through their module): {unused}"


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


def test_no_re_export_shims():
    problems = [p for path in MODULES for p in shim_problems(path)]
    assert not problems, "\n".join(problems)


def test_no_private_import_from_another_lesson_module():
    problems = [p for path in MODULES for p in private_import_problems(path)]
    assert not problems, "\n".join(problems)


def test_no_engine_code_in_a_lesson_module():
    lessons = [path for path in MODULES if is_lesson(path)]
    assert len(lessons) > 30 and PACKAGE / "saliency.py" in lessons
    problems = [p for path in lessons for p in engine_problems(path)]
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- the rules can fail

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


def test_the_shim_check_catches_re_exports_and_star_imports(tmp_path):
    shim = tmp_path / "grading.py"
    shim.write_text("from .course.grading import *  # noqa\nfrom .course.grading import __all__\n")
    assert shim_problems(shim) == ["grading.py: `from .course.grading import *`"]
    partial = tmp_path / "image.py"
    partial.write_text("from .validation import validate_image\n__all__ = ['validate_image', 'load_image']\n"
                       "def load_image(x):\n    return validate_image(x)\n")
    assert shim_problems(partial) == [
        "image.py: __all__ lists 'validate_image', which it imports from elsewhere"]
    assert shim_problems(PACKAGE / "losses.py") == []


def test_the_private_import_check_catches_a_lesson_modules_private_name(tmp_path, monkeypatch):
    fake = PACKAGE / "evaluation.py"
    source = "from .saliency import _prepare, saliency_map\nfrom .explainers import prepare\n"
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: source if self == fake else "")
    assert private_import_problems(fake) == ["evaluation.py: imports _prepare from saliency"]
    course = PACKAGE / "course" / "exercises_layers.py"
    source = "from ..receptive_fields import _spatial_ops_before\n"
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: source)
    assert private_import_problems(course) == [
        "exercises_layers.py: imports _spatial_ops_before from receptive_fields"]


def test_the_engine_check_catches_engine_code_in_a_lesson(tmp_path):
    lesson = tmp_path / "saliency.py"
    lesson.write_text(
        "from torch.optim.lbfgs import _strong_wolfe\n"
        "from .engine.incremental_occlusion import IncrementalNetwork\n"
        "def fold(conv, bn):\n    return conv.weight * bn.running_var.rsqrt()\n"
        "def occlusion_map(model, x):\n"
        "    ### BEGIN SOLUTION\n"
        "    model = IncrementalNetwork(model, x)  # the engine inside the exercise\n"
        "    return model(x)\n"
        "    ### END SOLUTION\n")
    assert engine_problems(lesson) == [
        "saliency.py:1: imports torch.optim.lbfgs (cs_utils/engine/)",
        "saliency.py:1: imports _strong_wolfe (cs_utils/engine/)",
        "saliency.py:4: `running_var` is engine code (cs_utils/engine/)",
        "saliency.py:7: the solution region uses the engine (IncrementalNetwork)",
    ]
