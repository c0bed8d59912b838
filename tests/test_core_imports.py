"""The core (``mm_live/*.py``) never imports a pipeline: it reaches task-specific behaviour through
the Task registry (:func:`mm_live.tasks.get_task` imports ``mm_live.pipelines.<name>`` by a name
built at run time). Every import statement counts, module-level or inside a function, and so does
``importlib.import_module`` / ``__import__`` with a literal pipeline module name."""

from __future__ import annotations

import ast
from pathlib import Path

import mm_live

CORE = Path(mm_live.__file__).parent
PIPELINES = "mm_live.pipelines"
# The command line is the composition root: it dispatches to the two pipelines that are not Tasks
# (public-dataset evaluation, the demo). Named one by one so that any new pipeline import fails here.
ALLOWED = {("cli.py", "mm_live.pipelines.public_eval"), ("cli.py", "mm_live.pipelines.demo")}
# tasks.py's registry lookup: import_module(f"mm_live.pipelines.{name}"), the one dynamic import allowed.
DYNAMIC_OK = {"tasks.py"}


def _is_pipeline(module: str) -> bool:
    return module == PIPELINES or module.startswith(PIPELINES + ".")


def pipeline_imports(source: str, filename: str) -> list[tuple[int, str]]:
    """(line, module) of every import of ``mm_live.pipelines`` in the core file ``filename``'s source."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if _is_pipeline(a.name)]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative to the mm_live package (these files are its top level)
                base = ".".join(["mm_live"] + ([base] if base else []))
            if _is_pipeline(base):
                found.append((node.lineno, base))
            else:  # from mm_live import pipelines
                found += [(node.lineno, f"{base}.{a.name}") for a in node.names if _is_pipeline(f"{base}.{a.name}")]
        elif isinstance(node, ast.Call) and node.args:
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name not in ("import_module", "__import__"):
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and _is_pipeline(arg.value):
                found.append((node.lineno, arg.value))
            elif isinstance(arg, ast.JoinedStr) and filename not in DYNAMIC_OK:
                head = arg.values[0] if arg.values else None
                if isinstance(head, ast.Constant) and str(head.value).startswith(PIPELINES):
                    found.append((node.lineno, ast.unparse(arg)))
    return found


def test_core_never_imports_a_pipeline():
    files = sorted(CORE.glob("*.py"))
    assert len(files) > 20 and (CORE / "live.py") in files  # the scan sees the core
    bad = [f"mm_live/{p.name}:{line}: {mod}" for p in files
           for line, mod in pipeline_imports(p.read_text(encoding="utf-8"), p.name) if (p.name, mod) not in ALLOWED]
    assert not bad, "the core imports pipelines (go through mm_live.tasks.get_task / Task methods):\n" + "\n".join(bad)


def test_the_scan_sees_every_form_of_import():
    src = '''
import mm_live.pipelines.highlight
from mm_live.pipelines.gifting import score_clip
from mm_live import pipelines
from .pipelines import em3
import importlib

def f():
    from mm_live.pipelines.highlight import encode_steps, load_model
    importlib.import_module("mm_live.pipelines.em3")
    importlib.import_module(f"mm_live.pipelines.{name}")

from mm_live.tasks import get_task  # fine
from mm_live import runs  # fine
'''
    assert [line for line, _ in pipeline_imports(src, "x.py")] == [2, 3, 4, 5, 9, 10, 11]
    assert [line for line, _ in pipeline_imports(src, "tasks.py")] == [2, 3, 4, 5, 9, 10]
