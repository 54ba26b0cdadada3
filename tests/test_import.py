"""Importing the package without one of its compiled modules says how to build it."""
import importlib.machinery
import pathlib
import shutil
import subprocess
import sys

import pytest

import specdec_fast

COMPILED = ("_batch", "_core", "_kernel", "_rng", "_simulate")


@pytest.mark.parametrize("module", COMPILED)
def test_missing_compiled_module_names_the_build_command(module, tmp_path):
    package = pathlib.Path(specdec_fast.__file__).parent
    copy = tmp_path / "specdec_fast"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    removed = [p for p in copy.iterdir() if p.name.startswith(module + ".")
               and p.name.endswith(suffixes)]
    assert removed, f"no compiled {module} beside {specdec_fast.__file__}"
    for path in removed:
        path.unlink()
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import specdec_fast"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert "compiled core is missing" in last and "pip install ." in last, run.stderr
