"""The layering the README's Layout section states, checked on the imports themselves; registries found by
discovery, listed by `avtools list` and in `--help`, extended by adding one file."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("avcl", "avtools")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """module -> the avcl/avtools/avtools_manifests modules it imports (anywhere in its body)."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            names = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module)
                    names.update(f"{node.module}.{alias.name}" for alias in node.names)
                elif isinstance(node, ast.Import):
                    names.update(alias.name for alias in node.names)
            found[module_name(path)] = {n for n in names if n.split(".")[0] in (*PACKAGES, "avtools_manifests")}
    return found


def unit(module: str) -> str:
    """The unit layering speaks of: a sub-package (avcl.eval, avtools.recipes) or a top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2])


def module_imports() -> dict[str, set[str]]:
    """module -> the modules of the project it imports (`from pkg.mod import name` counts as pkg.mod)."""
    modules = imports()
    graph: dict[str, set[str]] = {}
    for module, targets in modules.items():
        for target in targets:
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules:
                graph.setdefault(module, set()).add(target)
    return graph


def unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, targets in module_imports().items():
        graph.setdefault(unit(module), set()).update(unit(t) for t in targets if unit(t) != unit(module))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one unit (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return found


def test_no_package_cycle():
    assert cycles(unit_graph()) == []


def reaches(module_prefix: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{module} -> {target}" for module, targets in imports().items() if module.startswith(module_prefix)
                  for target in targets if target.startswith(forbidden))


def test_the_layers():
    # the engine never imports the builder (the data package avtools_manifests it may read)
    assert [m for m, ts in imports().items() if m.startswith("avcl") for t in ts if t.split(".")[0] == "avtools"] == []
    assert reaches("avcl.models", ("avcl.storage", "avcl.data.sources", "avcl.train", "avcl.eval")) == []  # models know no storage
    assert reaches("avcl.methods", ("avcl.train", "avcl.eval", "avcl.storage")) == []  # methods know no training loop
    assert reaches("avcl.train", ("avcl.eval",)) == []  # evaluation builds on training, not the reverse
    builder = ("avtools.build", "avtools.fetch", "avtools.transcode", "avtools.media", "avtools.shards",
               "avtools.ledger", "avtools.ffmpeg", "avtools.card")
    assert reaches("avtools.recipes", builder) == []  # recipes know no builder
    torch_free = {"avcl.errors", "avcl.storage", "avcl.progress", "avcl.machine", "avcl.registry", "avcl.plots"}
    for module in torch_free:  # the small modules under both packages import only each other
        assert module_imports().get(module, set()) <= torch_free, module


def test_importing_the_cli_loads_no_torch():
    code = "import sys, avtools.cli; print(any(m == 'torch' or m.startswith('torch.') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_every_package_is_installed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module_name(p) for package in PACKAGES for p in (ROOT / package).rglob("__init__.py")}
    assert found | {"avtools_manifests"} == listed


def avtools(*args: str, env: dict | None = None) -> str:
    result = subprocess.run([sys.executable, "-m", "avtools", *args], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "200", **(env or {})})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_avtools_list_matches_the_registries():
    """Against the registries of a fresh process (tests register methods of their own in this one)."""
    code = ("import json, avcl.methods, avcl.models; from avcl.eval.engine import PROTOCOLS; "
            "from avcl.eval.pretrained import FORMATS; from avtools.recipes import definitions; "
            "print(json.dumps([avcl.methods.names(), PROTOCOLS.names(), avcl.models.names(), FORMATS.names(), "
            "list(definitions())]))")
    registries = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                           cwd=ROOT).stdout)
    listed = avtools("list")
    for names in registries:
        assert names and all(f" {name} " in listed for name in names)
    assert "linear-svm-tcgl" in avtools("list", "protocols") and "temporal-av" not in avtools("list", "protocols")


@pytest.fixture
def plugin(tmp_path) -> dict:
    """A package outside avtools with one new method and one new protocol, one file each."""
    package = tmp_path / "my_plugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "dummy_method.py").write_text(textwrap.dedent('''
        """A dummy method: cross-modal InfoNCE under another name."""
        from avcl.methods.base import register
        from avcl.methods.xmodal import XModal


        @register
        class Dummy(XModal):
            name = "dummy-method"
    '''))
    (package / "dummy_protocol.py").write_text(textwrap.dedent('''
        import dataclasses

        from avcl.eval.engine import register_protocol


        @dataclasses.dataclass
        class DummyParams:
            clips: int = 1


        @register_protocol("dummy-protocol", DummyParams, "a protocol that measures nothing")
        def run(engine, params, folds, modalities):
            return []
    '''))
    return {"AVTOOLS_PLUGINS": "my_plugins", "PYTHONPATH": str(tmp_path)}


def test_a_new_method_and_protocol_are_one_file_each(plugin):
    listed = avtools("list", env=plugin)
    assert "dummy-method" in listed and "A dummy method" in listed
    assert "dummy-protocol" in listed and "a protocol that measures nothing" in listed
    assert "dummy-method" in avtools("train", "--help", env=plugin)
    assert "dummy-protocol" in avtools("eval", "--help", env=plugin)
    assert "dummy-method" not in avtools("list", "methods")
