"""streaming/ and the CLI's front end import without torch (heavy imports happen when a generator is built)."""

import subprocess
import sys

from tests.conftest import ROOT


def test_streaming_and_cli_import_without_torch():
    code = ("import sys, importlib, pkgutil, streaming, server.cli, model.base, model.registry\n"
            "for m in pkgutil.iter_modules(streaming.__path__): importlib.import_module('streaming.' + m.name)\n"
            "server.cli.build_parser()\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "assert 'transformers' not in sys.modules and 'diffusers' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr


def test_model_imports_nothing_from_streaming_or_server():
    """Arrows run one way: streaming/ and server/ use model/, never the reverse (lazy imports included)."""
    import ast
    import pathlib

    offenders = []
    for path in sorted(pathlib.Path(ROOT, "model").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("streaming", "server")]
    assert not offenders, offenders
