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
