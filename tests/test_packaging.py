"""The package as a user installs it: every subpackage in the wheel, and the shipped toy editor found from it."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]


def test_every_package_of_the_tree_is_listed_for_the_wheel():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    in_tree = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "insv2v").rglob("__init__.py")}
    assert in_tree <= listed, f"add {sorted(in_tree - listed)} to [tool.setuptools] packages in pyproject.toml"
    assert "insv2v._assets" in listed  # the shipped models, as package data


ABSOLUTE_PATH = re.compile(r"^(?:/|~/|[A-Za-z]:[\\/])(?:[\w.-]+[\\/])+[\w.-]*$")  # /a/b, ~/a/b, C:\a\b


def strings(value):
    """Every string in a parsed JSON value."""
    if isinstance(value, str):
        yield value
    for item in value.values() if isinstance(value, dict) else value if isinstance(value, list) else ():
        yield from strings(item)


def test_no_shipped_record_names_a_machines_folder():
    for path in (REPO / "assets").rglob("*.json*"):
        text = path.read_text()
        records = [json.loads(line) for line in text.splitlines()] if path.suffix == ".jsonl" else json.loads(text)
        assert not [s for s in strings(records) if ABSOLUTE_PATH.match(s)], path
    assert (
        ABSOLUTE_PATH.match("/data/runs/x") and ABSOLUTE_PATH.match("C:\\data\\x") and not ABSOLUTE_PATH.match("/</w>")
    )


@pytest.mark.slow
def test_a_non_editable_install_edits_with_the_shipped_toy_editor(tmp_path):
    target, work, source = tmp_path / "site", tmp_path / "elsewhere", tmp_path / "source"
    work.mkdir()
    # Build from a clean copy: setuptools reuses an in-tree build/ folder, which may hold files deleted since.
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(source)],
        check=True,
        capture_output=True,
    )
    (work / "clip.mp4").write_bytes((REPO / "assets" / "examples" / "toy_colour_11.mp4").read_bytes())
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    env.pop("INSV2V_MODEL", None)
    command = [sys.executable, "-m", "insv2v", "edit", "clip.mp4", "make it snowy", "-o", "out.mp4"]
    done = subprocess.run(
        [*command, "--steps", "1", "--max-frames", "4"], cwd=work, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (work / "out.mp4").stat().st_size > 0
    model = (work / json.loads((work / "out.json").read_text())["model"]).resolve()
    assert model == (target / "insv2v" / "_assets" / "toy-editor").resolve()  # the installed copy, not this checkout
    assert not (target / "insv2v" / "_assets" / "toy-editor-synthetic").exists()  # the repository's only
