"""environment.yml (conda) lists the same packages as requirements.txt."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
CONDA_ONLY = {"python", "pip"}  # the interpreter and installer, not packages of requirements.txt


def normalise(name: str) -> str:
    """PEP 503 name: case and runs of '-', '_', '.' do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def spec_name(line: str) -> str | None:
    """Package name of one requirement line (None for blanks, comments and pip options);
    conda specs ('numpy>=1.24', 'numpy 1.24.*', 'conda-forge::numpy') work too."""
    line = line.split("#", 1)[0].strip()
    if not line or line.startswith("-"):
        return None
    line = line.split("::", 1)[-1]
    match = NAME.match(line)
    return normalise(match.group(1)) if match else None


def requirements_names(path: Path) -> set[str]:
    return {n for n in map(spec_name, path.read_text().splitlines()) if n}


def environment_names(path: Path) -> tuple[set[str], set[str]]:
    """(conda package names, pip package names) of an environment.yml."""
    env = yaml.safe_load(path.read_text())
    conda, pip = set(), set()
    for dep in env.get("dependencies", []):
        if isinstance(dep, dict):
            pip |= {n for n in map(spec_name, dep.get("pip", [])) if n}
        elif (name := spec_name(str(dep))) is not None:
            conda.add(name)
    return conda, pip


def test_normalise_and_parse():
    assert normalise("Opencv_Python.Headless") == "opencv-python-headless"
    assert spec_name("scikit_image>=0.22  # comment") == "scikit-image"
    assert spec_name("conda-forge::NumPy 1.24.*") == "numpy"
    assert spec_name("-r other.txt") is None and spec_name("# only a comment") is None


def test_environment_yml_matches_requirements():
    req = requirements_names(REPO_ROOT / "requirements.txt")
    conda, pip = environment_names(REPO_ROOT / "environment.yml")
    assert CONDA_ONLY <= conda, "environment.yml must list python and pip"
    env = (conda - CONDA_ONLY) | pip
    assert env == req, (
        f"environment.yml and requirements.txt differ: only in requirements.txt "
        f"{sorted(req - env)}, only in environment.yml {sorted(env - req)}"
    )
