"""Run the README's ```python blocks, in order, in one namespace (like a doctest session).

They run in a temp directory: ``weights/`` is linked from the checkout, every image file a block
names (``"face.jpg"``) is copied from the checkout when it exists there and made up otherwise, and
``HfApi`` is replaced by a recorder so ``push_to_hub`` touches no network. A block preceded by the
line ``<!-- readme-test: skip -->`` is not run.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from vqct_tokenizer.defaults import DEFAULT_MODEL, find_shipped

from conftest import REPO_ROOT, random_rgb

README = REPO_ROOT / "README.md"
SKIP_MARK = "<!-- readme-test: skip -->"
BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)
IMAGE_NAME = re.compile(r"""["']([\w./-]+\.(?:jpe?g|png|webp|bmp))["']""", re.I)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, code) of every ```python block not preceded by the skip mark."""
    blocks = []
    for match in BLOCK.finditer(text):
        before = text[:match.start()].rstrip().splitlines()
        if before and before[-1].strip() == SKIP_MARK:
            continue
        blocks.append((text.count("\n", 0, match.start()) + 1, match.group(1)))
    return blocks


def provide_images(code: str, workdir: Path) -> None:
    for name in IMAGE_NAME.findall(code):
        target = workdir / name
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        source = REPO_ROOT / name
        if source.is_file():
            shutil.copy(source, target)
        else:
            Image.fromarray(random_rgb(80, 64)).save(target)


class RecordingHfApi:
    """Stands in for huggingface_hub.HfApi: records calls, uploads nothing."""

    calls: list[tuple[str, dict]] = []

    def __init__(self, *args, **kwargs) -> None:
        pass

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", dict(kwargs, repo_id=repo_id)))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return f"https://huggingface.co/{kwargs['repo_id']}/commit/0"


def test_readme_has_python_examples():
    assert README.is_file(), "README.md is missing"
    assert python_blocks(README.read_text(encoding="utf-8")), "README.md has no ```python blocks"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    if find_shipped(DEFAULT_MODEL) is None:
        pytest.skip(f"the README uses the shipped default model {DEFAULT_MODEL!r}, whose weights are not "
                    f"in weights/{DEFAULT_MODEL}/ yet")
    import huggingface_hub

    blocks = python_blocks(README.read_text(encoding="utf-8"))
    (tmp_path / "weights").symlink_to(REPO_ROOT / "weights", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHfApi)
    namespace: dict = {"__name__": "__readme__"}
    for line, code in blocks:
        provide_images(code, tmp_path)
        try:
            exec(compile(code, f"README.md:{line}", "exec"), namespace)
        except Exception as e:
            raise AssertionError(f"the README.md python block at line {line} failed: {type(e).__name__}: {e}") from e


def test_block_extraction_honours_the_skip_mark():
    text = ("# T\n```python\nx = 1\n```\n\n" + SKIP_MARK + "\n```python\nraise SystemExit\n```\n"
            "```bash\nvqct --help\n```\n```python title\ny = 2\n```\n")
    assert python_blocks(text) == [(2, "x = 1\n"), (13, "y = 2\n")]
