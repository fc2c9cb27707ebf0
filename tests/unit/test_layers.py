"""The package's layers, as DESIGN §3 draws them: a module imports only from its own layer
or the ones below it, never from above (imports inside functions included)."""

import ast
from pathlib import Path

import fineinstructions

PACKAGE = Path(fineinstructions.__file__).parent
# The foundation every layer uses: row types, errors, configuration, reading and writing files.
LAYERS = {
    "records": 0, "errors": 0, "config": 0, "io": 0,
    "text": 1,
    "models": 2,
    "stages": 3,
    "execution": 4, "experiments": 4,
    "interface": 5, "__main__": 5,
}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "fineinstructions" or len(parts) == 1:
        return None
    return LAYERS[parts[1]]


def imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno


def test_no_module_imports_from_a_layer_above_its_own():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = "fineinstructions." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        own = layer_of(module.removesuffix(".__init__"))
        if own is None:
            continue
        for name, line in imports(path):
            other = layer_of(name)
            if other is not None and other > own:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_every_module_is_in_a_layer_and_small_enough_to_read_in_one_sitting():
    for path in PACKAGE.rglob("*.py"):
        top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        assert top in LAYERS or top == "__init__", f"{path} is in no layer"
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 420, f"{path} is over 400 lines"


def test_the_experiments_read_datasets_and_never_the_pipelines_machinery():
    # DESIGN §3: the experiments layer knows nothing of shards, runners or executors, and
    # the pipeline knows nothing of the experiments (the interface composes them).
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        top = path.relative_to(PACKAGE).parts[0]
        for name, line in imports(path):
            parts = name.split(".")
            if len(parts) < 2 or parts[0] != "fineinstructions":
                continue
            if (top, parts[1]) in (("experiments", "execution"), ("execution", "experiments")):
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)
