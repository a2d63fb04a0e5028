"""The house rules the code keeps: documented settings, small modules, tasks created in one place."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from common import settings
from common.client import app as client_app
from common.client import runner
from common.client.delivery import settings as delivery_settings

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [p for d in ("common", "gateways") for p in (ROOT / d).rglob("*.py") if "_pb2" not in p.name]


def _attribute_docstrings(cls: type) -> set[str]:
    tree = ast.parse(Path(inspect.getfile(cls)).read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    documented = set()
    for stmt, following in zip(node.body, node.body[1:], strict=False):
        is_doc = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and is_doc:
            documented.add(stmt.target.id)
    return documented


SETTINGS_MODULES = [settings, client_app, delivery_settings, runner]
SETTINGS = [
    c
    for module in SETTINGS_MODULES
    for c in vars(module).values()
    if dataclasses.is_dataclass(c) and isinstance(c, type) and c.__module__ == module.__name__
]


@pytest.mark.parametrize("cls", SETTINGS, ids=lambda c: c.__name__)
def test_every_setting_has_a_default_and_a_docstring(cls: type) -> None:
    fields = dataclasses.fields(cls)
    assert all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING for f in fields
    )
    assert {f.name for f in fields} == _attribute_docstrings(cls)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_over_500_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= 500


def test_tasks_are_created_only_in_the_lifecycle_module() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in SHIPPED
        if p.name != "tasks.py" and ("create_task(" in p.read_text() or "ensure_future(" in p.read_text())
    ]
    assert offenders == []


def test_every_logger_is_named_after_its_module() -> None:
    named = re.compile(r"logging\.getLogger\((?!__name__\))")
    allowed = {
        ("common/server/servicer.py", 'logging.getLogger(f"gateways.{kind.name}")'),  # a source's, its kind's
        ("common/logs.py", "logging.getLogger()"),  # the root, configured once
        ("common/logs.py", "logging.getLogger(name)"),  # a chatty library's loggers, quieted
    }
    found = []
    for path in sorted([*ROOT.glob("common/**/*.py"), *ROOT.glob("gateways/**/*.py")]):
        for line in path.read_text().splitlines():
            if named.search(line) and "asyncio" not in line:
                rel = str(path.relative_to(ROOT))
                if not any(rel == a and text in line for a, text in allowed):
                    found.append(f"{rel}: {line.strip()}")
    assert not found, found
