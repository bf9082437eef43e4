"""The layers stay visible: an import contract over the AST of every operator module.

- ``timing`` is pure math: no kopf, Kubernetes client, aiohttp or pydantic, and no
  other operator package;
- ``engine``, ``dispatch`` and ``scaling`` never import ``controllers`` (the kopf
  adapters sit on top, nothing below reaches up);
- ``engine`` never imports kopf or a Kubernetes client (it talks to the API server
  only through its port), nor prometheus_client (metrics go out through its observer).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "operator"
PACKAGE = "schedulezero_operator"
THIRD_PARTY_CLUSTER = {"kopf", "kubernetes"}


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.append((".".join(parts), path))
    return found


def imports(module: str, path: Path) -> set[str]:
    """Absolute names of everything ``module`` imports (relative imports resolved)."""
    is_package = path.name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def top(name: str) -> str:
    return name.split(".")[0]


def layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 else None


ALL = modules()


def test_the_walk_sees_the_layers() -> None:
    layers = {layer(m) for m, _ in ALL}
    assert {"timing", "engine", "dispatch", "scaling", "controllers", "api"} <= layers
    engine = dict(ALL)[f"{PACKAGE}.engine.firing"]
    assert f"{PACKAGE}.timing" in imports(f"{PACKAGE}.engine.firing", engine)


@pytest.mark.parametrize(("module", "path"), [(m, p) for m, p in ALL
                                              if layer(m) == "timing"])
def test_timing_is_pure(module: str, path: Path) -> None:
    bad = {n for n in imports(module, path)
           if top(n) in THIRD_PARTY_CLUSTER | {"aiohttp", "pydantic"}
           or (top(n) == PACKAGE and layer(n) not in (None, "timing"))}
    assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize(("module", "path"), [(m, p) for m, p in ALL
                                              if layer(m) in ("engine", "dispatch", "scaling")])
def test_nothing_below_the_controllers_imports_them(module: str, path: Path) -> None:
    bad = {n for n in imports(module, path) if layer(n) == "controllers"}
    assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize(("module", "path"), [(m, p) for m, p in ALL
                                              if layer(m) == "engine"])
def test_the_engine_has_no_kubernetes_client(module: str, path: Path) -> None:
    bad = {n for n in imports(module, path) if top(n) in THIRD_PARTY_CLUSTER}
    assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize(("module", "path"), [(m, p) for m, p in ALL
                                              if layer(m) in ("engine", "dispatch", "timing")])
def test_metrics_stay_out_of_the_engine(module: str, path: Path) -> None:
    """The engine reports through ``engine.observer``; prometheus_client is the
    controllers' business (``controllers.metrics``)."""
    bad = {n for n in imports(module, path) if top(n) == "prometheus_client"}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_the_contract_catches_a_violation(tmp_path: Path) -> None:
    fake = tmp_path / "bad.py"
    fake.write_text("import kopf\nfrom ..controllers import kube\nfrom . import claims\n")
    found = imports(f"{PACKAGE}.engine.bad", fake)
    assert {"kopf", f"{PACKAGE}.controllers", f"{PACKAGE}.engine.claims"} <= found
