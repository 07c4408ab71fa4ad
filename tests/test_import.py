"""Importing tipo is cheap and side-effect free."""

import subprocess
import sys


def test_import_loads_nothing_heavy(tmp_path):
    code = (
        "import sys, tipo; tipo.Request; "
        "heavy = [m for m in ('torch', 'transformers', 'llama_cpp', 'diffusers', 'numpy') if m in sys.modules]; "
        "print(heavy)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert run.stdout.strip() == "[]"
    assert list(tmp_path.iterdir()) == []  # nothing written
