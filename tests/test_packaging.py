"""What the wheel carries, where the models it leaves out load from, and one version everywhere.

The wheel ships the default model only (setup.py): all four models made a 116 MB wheel, over PyPI's
default limit of 100 MB a file. The other models load from a source checkout's ``weights/``, a
folder path, or a Hub repo id.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import vqct_tokenizer
from vqct_tokenizer import VQCTTokenizer, defaults
from vqct_tokenizer.defaults import CHECKOUT_MODELS, DEFAULT_MODEL, find_shipped

from conftest import REPO_ROOT

PYPI_FILE_LIMIT = 100 * 1000 ** 2
MODEL_FILES = {"config.json", "model.safetensors", "vocab.json", "README.md"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built the way the README's packaging note says, from a copy of the checkout (the
    build writes build/ and *.egg-info beside its sources)."""
    if not (REPO_ROOT / "weights" / DEFAULT_MODEL / "model.safetensors").is_file():
        pytest.skip(f"the shipped default {DEFAULT_MODEL!r} is not in this checkout")
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("vqct_tokenizer", "weights"):
        shutil.copytree(REPO_ROOT / name, src / name, ignore=ignore)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--quiet", "-w", str(out)],
                          cwd=src, capture_output=True, text=True)
    assert done.returncode == 0, f"pip wheel failed:\n{done.stdout}\n{done.stderr}"
    (built,) = out.glob("vqct_tokenizer-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_carries_exactly_the_default_model_and_fits_pypi(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    bundled = {n.removeprefix("vqct_tokenizer/_weights/") for n in names if n.startswith("vqct_tokenizer/_weights/")}
    assert bundled == {f"{DEFAULT_MODEL}/{f}" for f in MODEL_FILES}
    assert not any(name in n for n in names for name in CHECKOUT_MODELS)
    # the rest of the package data still ships
    assert any(n.startswith("vqct_tokenizer/codebook/priors/") and n.endswith(".safetensors") for n in names)
    assert any(n.startswith("vqct_tokenizer/training/configs/") for n in names)
    assert wheel.stat().st_size < PYPI_FILE_LIMIT, f"{wheel.name} is {wheel.stat().st_size / 1e6:.1f} MB"
    assert f"-{vqct_tokenizer.__version__}-" in wheel.name


@pytest.mark.slow
def test_an_installed_wheel_loads_the_default_by_name_and_the_others_by_path(wheel: Path, tmp_path: Path) -> None:
    """Unpacked outside any checkout, as pip would install it."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    other = CHECKOUT_MODELS[-1]
    script = (
        "import sys\n"
        "from vqct_tokenizer import VQCTTokenizer\n"
        "from vqct_tokenizer.defaults import shipped_names\n"
        "print(shipped_names())\n"
        f"print(VQCTTokenizer.from_pretrained({DEFAULT_MODEL!r}).config.downsample_factor)\n"
        f"print(VQCTTokenizer.from_pretrained(sys.argv[1]).config.quantizer)\n"
        "try:\n"
        f"    VQCTTokenizer.from_pretrained({other!r})\n"
        "except FileNotFoundError as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script, str(REPO_ROOT / "weights" / other)], cwd=tmp_path,
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    listed, factor, quantizer, error = done.stdout.strip().splitlines()
    assert listed == str([DEFAULT_MODEL]) and factor == "8"
    assert quantizer == VQCTTokenizer.from_pretrained(REPO_ROOT / "weights" / other).config.quantizer
    assert f"weights/{other}" in error and "only the default" in error


def test_the_checkout_holds_the_default_and_the_named_other_models() -> None:
    folders = {p.parent.name for p in (REPO_ROOT / "weights").glob("*/config.json")}
    assert folders == {DEFAULT_MODEL, *CHECKOUT_MODELS}
    assert DEFAULT_MODEL not in CHECKOUT_MODELS


def test_a_model_the_wheel_leaves_out_names_where_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As installed from the wheel: only the default beside the package, no checkout around it."""
    if find_shipped(DEFAULT_MODEL) is None:
        pytest.skip(f"the shipped default {DEFAULT_MODEL!r} is not in this checkout")
    installed = tmp_path / "_weights"
    shutil.copytree(find_shipped(DEFAULT_MODEL), installed / DEFAULT_MODEL)
    monkeypatch.setattr(defaults, "shipped_weights_dirs", lambda: [installed])
    assert defaults.shipped_names() == [DEFAULT_MODEL]
    for name in CHECKOUT_MODELS:
        with pytest.raises(FileNotFoundError, match=rf"carries only the default .*weights/{name}"):
            VQCTTokenizer.from_pretrained(name)
        # by path, it loads
        assert VQCTTokenizer.from_pretrained(REPO_ROOT / "weights" / name).config.resolution > 0
    with pytest.raises(FileNotFoundError, match="not a Hub repo id"):  # other names: the usual message
        VQCTTokenizer.from_pretrained("no-such-model")


def test_the_checkout_weights_count_only_in_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed package's parent is site-packages: a ``weights`` folder there is someone else's."""
    package = tmp_path / "site-packages" / "vqct_tokenizer"
    package.mkdir(parents=True)
    monkeypatch.setattr(defaults, "__file__", str(package / "defaults.py"))
    assert defaults.shipped_weights_dirs() == [package / "_weights"]
    (package.parent / "pyproject.toml").write_text("")
    assert defaults.shipped_weights_dirs() == [package / "_weights", package.parent / "weights"]


# ------------------------------------------------------------------------------------ version
def _pyproject_version() -> str:
    match = re.search(r'^version = "([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text(), re.M)
    assert match, "pyproject.toml has no static version"
    return match.group(1)


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.match(r"(\d+(?:\.\d+)*)", version).group(1).split("."))


def test_one_version_and_a_changelog_section_for_every_release() -> None:
    version = _pyproject_version()
    assert vqct_tokenizer.__version__ == version
    changelog = (REPO_ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", changelog, re.M)
    assert headings and headings[0] == ("Unreleased", ""), "the first section must be [Unreleased]"
    released = headings[1:]
    assert released and all(date for _, date in released), "every released section needs a date"
    # newest first, in version and in date
    assert [_release(v) for v, _ in released] == sorted((_release(v) for v, _ in released), reverse=True)
    assert [d for _, d in released] == sorted((d for _, d in released), reverse=True)
    if re.search(r"\.dev\d+$", version):  # working towards a release newer than every section
        assert _release(version) > _release(released[0][0])
    else:
        assert released[0][0] == version, f"pyproject says {version}, the newest CHANGELOG section {released[0][0]}"
