"""The repository stands on its own: shipped split lists and key tables, and an install that adds no modules."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import evaluate
from dataset.errors import DatasetError
from dataset.registry import load_eval_sequences
from dataset.synthetic import generate_dataset
from dataset.ytvos import JJTRAIN_SPLIT, JJVALID_SPLIT

ROOT = Path(__file__).resolve().parents[1]
# The modules that must not become importable from everywhere by installing the project.
TOP_LEVEL = ("evaluate", "train", "demo", "benchmark", "lib", "models", "dataset", "trainer", "evaluator")
# What the install alone provides is checked in Pythons that do not inherit the caller's PYTHONPATH (which
# may well name this repository: it would make every module importable whatever the install does).
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _names(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def test_published_split_lists_ship_with_the_repository():
    valid, train = _names(JJVALID_SPLIT), _names(JJTRAIN_SPLIT)
    assert JJVALID_SPLIT == ROOT / "dataset" / "splits" / "ytvos_jjvalid.txt"
    assert len(valid) == len(set(valid)) == 300
    assert len(train) == len(set(train)) > 2000
    assert not set(valid) & set(train)  # training on jjtrain keeps the yt2018jjval videos unseen
    assert all(re.fullmatch(r"[0-9a-f]{10}", name) for name in valid + train)


@pytest.fixture(scope="module")
def jj_root(tmp_path_factory) -> Path:
    """A tiny YouTube-VOS train layout whose one video carries the first yt2018jjval name."""
    root = generate_dataset(tmp_path_factory.mktemp("jj"), "ytvos", num_videos=1, num_frames=6, size=(48, 80),
                            seed=5, max_objects=2, split="train")
    name = _names(JJVALID_SPLIT)[0]
    for folder in root.glob("*/*/synth000"):
        folder.rename(folder.with_name(name))
    meta_path = root / "train" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["videos"][name] = meta["videos"].pop("synth000")
    meta_path.write_text(json.dumps(meta))
    return root


def test_yt2018jjval_reads_the_published_list_by_default(jj_root, tmp_path):
    name = _names(JJVALID_SPLIT)[0]
    seqs = load_eval_sequences("yt2018jjval", jj_root, sequences=[name])
    assert [s.name for s in seqs] == [name] and len(seqs[0]) == 6
    with pytest.raises(DatasetError, match=r"unknown sequences \['synth000'\] \(not in .*splits/ytvos_jjvalid.txt"):
        load_eval_sequences("yt2018jjval", jj_root, sequences=["synth000"])
    own = tmp_path / "own.txt"  # --split-file still overrides the default
    own.write_text("synth000\n")
    with pytest.raises(DatasetError, match=r"synth000: frame folder of video 'synth000' \(listed in .*own.txt\)"):
        load_eval_sequences("yt2018jjval", jj_root, split_file=own)


def test_evaluate_uses_the_published_list_without_split_file(jj_root, tmp_path, capsys):
    code = evaluate.main(["--dset", "yt2018jjval", "--ytvos-root", str(jj_root), "--sequences", "synth000",
                          "--eval-only", str(tmp_path)])
    assert code == 2
    assert "splits/ytvos_jjvalid.txt" in capsys.readouterr().err


def test_no_document_outside_the_repository_is_cited():
    """Users get this repository alone: code, docs and scripts cite only what it contains."""
    sources = [p for p in ROOT.iterdir() if p.is_file()] + [ROOT / ".ci" / "run"]
    for folder in ("lib", "models", "dataset", "trainer", "docs", "sample", "tools"):  # not tests/, nor build outputs
        sources += (ROOT / folder).rglob("*")
    offenders = []
    for path in sorted(sources):
        rel = path.relative_to(ROOT)
        if path.suffix not in (".py", ".md", ".sh", ".ini", ".toml") and rel != Path(".ci/run"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bDESIGN\b|\.\./shared|shared/spec", line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert offenders == []


def test_install_brings_the_requirements_and_no_importable_module(tmp_path):
    """The editable wheel that `pip install -e .` builds maps no module and adds no folder to sys.path."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("setup.py", "pyproject.toml"):
        (project / name).write_bytes((ROOT / name).read_bytes())
    script = f"from setuptools import build_meta; print(build_meta.build_editable({str(tmp_path / 'wheel')!r}))"
    run = subprocess.run([sys.executable, "-c", script], cwd=project, env=CLEAN_ENV, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    wheel = tmp_path / "wheel" / run.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        texts = {n: archive.read(n).decode() for n in names if n.endswith((".pth", ".py", "METADATA", "top_level.txt"))}
    metadata = next(text for name, text in texts.items() if name.endswith("METADATA"))
    for requirement in ("torch", "torchvision", "numpy", "opencv-python-headless", "pillow", "scipy", "tensorboard",
                        "tqdm"):
        assert re.search(rf"^Requires-Dist: {re.escape(requirement)}\s*$", metadata, re.M), requirement
    assert not any(n.split("/")[0] in TOP_LEVEL or n.split("/")[0].removesuffix(".py") in TOP_LEVEL for n in names)
    for name, text in texts.items():
        if name.endswith(".pth"):  # a line that is not an import adds that folder to sys.path
            assert all(line.startswith("import ") or not line.strip() for line in text.splitlines()), text
        if name.endswith("top_level.txt"):
            assert not set(text.split()) & set(TOP_LEVEL)
    # Installed alone (no other site folder, started elsewhere), the wheel's import hooks find none of them.
    site_dir = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site_dir)
    probe = (f"import importlib.util, site; site.addsitedir({str(site_dir)!r}); "
             f"print([m for m in {TOP_LEVEL!r} if importlib.util.find_spec(m) is not None])")
    found = subprocess.run([sys.executable, "-S", "-c", probe], cwd=tmp_path, env=CLEAN_ENV, capture_output=True,
                           text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"
