"""The design's rules as tests, so a change that breaks one fails here with the rule's name instead
of surfacing later as a slow API start, a torch import in a small worker or a query that commits.
No services: these read the source (AST) or import modules in a fresh interpreter."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ("api", "worker", "db", "callpulse")


def _modules(*roots: str) -> Iterator[Path]:
    for root in roots:
        yield from sorted((ROOT / root).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _offenders(paths: Iterator[Path], banned: tuple[str, ...]) -> list[str]:
    return [f"{p.relative_to(ROOT)}: {m}" for p in paths for m in sorted(_imports(p))
            if m.split(".")[0] in banned or any(m == b or m.startswith(b + ".") for b in banned)]


def _loaded_after(code: str) -> set[str]:
    """sys.modules after running ``code`` in a fresh interpreter (no test's imports leak in)."""
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                         check=True, timeout=300)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_api_process_imports_no_torch_no_stage_bodies_no_tasks() -> None:
    loaded = _loaded_after("import api.main")
    assert "torch" not in loaded
    # The live stage is the one stage the API runs (the call's socket is there, docs/LIVE.md).
    stages = {m for m in loaded if m.startswith("worker.stages.")} - {"worker.stages.live"}
    assert stages == set()
    task_modules = {f"worker.jobs.{q}" for q in ("ingest", "asr", "infer", "rules", "notify")}
    assert loaded & task_modules == set()
    assert not {m for m in loaded if m.split(".")[0] in ("training", "sklearn")}
    # scipy alone doubled the API's start: the signal code the API can reach imports it on first use.
    assert "scipy" not in loaded


def test_pipeline_imports_no_database_and_no_celery() -> None:
    assert _offenders(_modules("worker/pipeline"), ("db", "sqlalchemy", "celery")) == []


def test_runtime_imports_no_training_code() -> None:
    # `callpulse train` and `callpulse adapt` are the ways into training/: from the CLI's command
    # functions only, never at a module's top level.
    cli = {ROOT / "callpulse" / "cli.py", ROOT / "callpulse" / "adapt_cli.py"}
    paths = (p for p in _modules(*RUNTIME) if p not in cli)
    assert _offenders(paths, ("training", "sklearn", "joblib")) == []
    for path in cli:
        top = [n for n in ast.parse(path.read_text()).body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
        assert not {m for m in names if m.split(".")[0] in ("training", "sklearn")}, path
    loaded = _loaded_after("import worker.jobs.app as a; a.app.loader.import_default_modules()")
    assert not {m for m in loaded if m.split(".")[0] in ("training", "sklearn")}


def test_rules_language_and_evaluation_import_no_database() -> None:
    # trajectory.py is the loader that reads a call's points from the database for the evaluator.
    paths = (p for p in _modules("worker/rules") if p.name != "trajectory.py")
    assert _offenders(paths, ("db", "sqlalchemy")) == []


def test_queries_never_commit() -> None:
    commits = []
    for path in _modules("db/queries"):
        for node in ast.walk(ast.parse(path.read_text())):
            func = node.func if isinstance(node, ast.Call) else None
            if isinstance(func, ast.Attribute) and func.attr == "commit":
                commits.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert commits == []


def test_every_task_name_is_declared_once() -> None:
    from worker.jobs import names

    declared = [t.name for t in names.TASKS]
    assert len(declared) == len(set(declared))
    for name in declared:
        literal = repr(name).strip("'")
        holders = [str(p.relative_to(ROOT)) for p in _modules(*RUNTIME)
                   if f'"{literal}"' in p.read_text() or f"'{literal}'" in p.read_text()]
        assert holders == ["worker/jobs/names.py"], (name, holders)


def test_every_registered_task_is_declared_and_routed() -> None:
    from worker.jobs import names
    from worker.jobs.app import app

    app.loader.import_default_modules()
    registered = {n for n in app.tasks if n.startswith("callpulse.")}
    assert registered == {t.name for t in names.TASKS}
    for task in names.TASKS:
        assert app.amqp.router.route({}, task.name)["queue"].name == task.queue
        assert app.tasks[task.name].soft_time_limit == task.time_limit_s()


@pytest.mark.parametrize("root", ["api", "worker", "db", "callpulse", "training", "migrations"])
def test_every_module_says_why(root: str) -> None:
    missing = [str(p.relative_to(ROOT)) for p in _modules(root)
               if ast.get_docstring(ast.parse(p.read_text())) is None]
    assert missing == []
