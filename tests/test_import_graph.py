"""No import cycle inside the package: the graph of the import statements between its modules (module level, inside
functions and under `if TYPE_CHECKING:` alike: an annotation-only import is still a dependency a reader follows),
read with ast, is acyclic; and inference/'s layers import only downwards."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "nnunetv2_flare"


def package_modules(root: Path = PACKAGE_ROOT) -> dict[str, Path]:
    modules = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the package's modules it imports (`from pkg import submodule` counts as importing the submodule)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_the_imports():
    graph = import_graph(package_modules())
    assert "nnunetv2_flare.inference.models.backends.openvino" in graph["nnunetv2_flare.inference.models.loading"]
    assert "nnunetv2_flare.names" in graph["nnunetv2_flare.inference.core.settings"]
    assert "nnunetv2_flare.inference.core.result" in graph["nnunetv2_flare.inference.outputs.case_outputs"]  # typing
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_inside_the_package():
    cycle = find_cycle(import_graph(package_modules()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


INFERENCE = "nnunetv2_flare.inference"
# each subpackage of inference/ and the layers it must not import (inference/__init__'s map): the single-case core
# knows nothing of batches, output files or the command; batches know nothing of the command
FORBIDDEN = {"core": ("batch", "outputs", "cli", "predictor"), "models": ("core", "batch", "outputs", "cli"),
             "inputs": ("core", "models", "batch", "outputs", "cli"), "outputs": ("batch", "cli", "predictor"),
             "batch": ("cli",), "geometry": ("core", "models", "inputs", "batch", "outputs", "cli")}


def test_inference_layers_import_only_downwards():
    graph = import_graph(package_modules())
    wrong = []
    for module, edges in graph.items():
        layer = module.removeprefix(INFERENCE + ".").split(".")[0] if module.startswith(INFERENCE + ".") else None
        for target in edges:
            if layer in FORBIDDEN and target.startswith(INFERENCE + ".") and \
                    target.removeprefix(INFERENCE + ".").split(".")[0] in FORBIDDEN[layer]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layers: " + ", ".join(sorted(wrong))
