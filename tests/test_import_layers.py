"""The import layers of DESIGN.md hold: nothing imports upward.

Top to bottom: platform wiring (saas_platform.*) -> portal (the tenant portal's pages, on top
of the services like the API) -> jobs -> billing -> tenants -> platform
libraries (saas_platform.lib.*). A module may import its own layer and the layers below it.

import-linter cannot follow this project's `saas_platform` mapping (the package lives in
platform/_init and adds platform/ to its path at run time), so this test reads the sources with
the ast module instead: every import statement counts, at module level or inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYERS = ["wiring", "portal", "jobs", "billing", "tenants", "lib"]  # top to bottom
RANK = {name: rank for rank, name in enumerate(LAYERS)}
SOURCES = {
    "platform": "saas_platform",
    "portal": "portal",
    "jobs": "jobs",
    "billing": "billing",
    "tenants": "tenants",
}


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to; None for third-party and standard modules."""
    top = module.split(".")[0]
    if top == "saas_platform":
        return (
            "lib"
            if module == "saas_platform.lib" or module.startswith("saas_platform.lib.")
            else "wiring"
        )
    return top if top in ("portal", "jobs", "billing", "tenants") else None


def module_name(path: Path) -> str:
    relative = path.relative_to(REPO).with_suffix("")
    parts = list(relative.parts)
    parts[0] = SOURCES[parts[0]]
    if parts[:2] == ["saas_platform", "_init"]:
        parts.pop(1)  # platform/_init/__init__.py is the package saas_platform itself
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return found


def project_sources() -> list[Path]:
    files: list[Path] = []
    for folder in SOURCES:
        files.extend(
            path for path in (REPO / folder).rglob("*.py") if "migrations" not in path.parts
        )
    return sorted(files)


def upward_imports() -> list[str]:
    problems = []
    for path in project_sources():
        module = module_name(path)
        own = layer_of(module)
        assert own is not None, module
        for line, target in imported_modules(path, module):
            theirs = layer_of(target)
            if theirs is not None and RANK[theirs] < RANK[own]:
                problems.append(
                    f"{path.relative_to(REPO)}:{line}: {own} imports {target} ({theirs})"
                )
    return problems


def test_no_module_imports_a_layer_above_its_own() -> None:
    assert upward_imports() == []


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("saas_platform.settings", "wiring"),
        ("saas_platform.lib.tenant_context", "lib"),
        ("saas_platform.lib", "lib"),
        ("jobs.services.submission", "jobs"),
        ("billing.metering", "billing"),
        ("tenants.auth", "tenants"),
        ("portal.views.jobs", "portal"),
        ("celery", None),
        ("platform", None),
    ],
)
def test_modules_are_placed_in_their_layers(module: str, layer: str | None) -> None:
    assert layer_of(module) == layer


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    # The check itself must be able to fail: billing reading a Job row is what it exists to stop.
    source = tmp_path / "usage.py"
    source.write_text("from jobs.models import Job\n\ndef f():\n    import saas_platform.api\n")
    targets = [target for _, target in imported_modules(source, "billing.usage")]
    assert targets == ["jobs.models", "saas_platform.api"]
    assert [RANK[layer_of(t) or "lib"] < RANK["billing"] for t in targets] == [True, True]


def test_relative_imports_resolve_to_their_package(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("from . import models\nfrom ..selectors import x\n")
    assert [t for _, t in imported_modules(source, "jobs.services.mod")] == [
        "jobs.services",
        "jobs.selectors",
    ]


@pytest.mark.parametrize(
    "module", ["jobs.api", "saas_platform.api", "tenants.auth", "billing.usage"]
)
def test_each_module_imports_on_its_own_after_django_setup(module: str) -> None:
    # A fresh interpreter, so no earlier import hides a cycle (jobs.api and the API wiring once
    # imported each other: a plain `import jobs.api` met a partially initialised module).
    import os
    import subprocess
    import sys

    code = f"import django; django.setup(); import {module}"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "saas_platform.settings"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
