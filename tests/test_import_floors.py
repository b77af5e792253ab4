"""The floors of the code (lib -> models -> dataset -> trainer | evaluator -> the entry scripts) hold:
pyproject.toml's import-linter contracts, checked by `lint-imports` as CI does."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contract_is_kept():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    result = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_lib_is_small():  # what it imports: the contract above
    lines = sum(len(p.read_text().splitlines()) for p in (ROOT / "lib").glob("*.py"))
    assert lines <= 2000, f"lib/ has {lines} lines: it holds small shared helpers only"
