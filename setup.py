"""Packaging details pyproject.toml cannot say on its own.

The wheel carries one model, the default, from the top-level ``weights/`` folder as the package
``vqct_tokenizer._weights``, so a non-editable ``pip install .`` still loads it by name. The other
folders of ``weights/`` stay in the checkout: all four would make a 116 MB wheel, over PyPI's
100 MB file limit (vqct_tokenizer/defaults.py says how an installed package finds them).
"""

import runpy
from pathlib import Path

from setuptools import find_packages, setup

# defaults.py imports only the standard library, so it runs without torch in the build environment
DEFAULT_MODEL = runpy.run_path(str(Path(__file__).parent / "vqct_tokenizer" / "defaults.py"))["DEFAULT_MODEL"]

setup(
    packages=find_packages(include=["vqct_tokenizer", "vqct_tokenizer.*"]) + ["vqct_tokenizer._weights"],
    package_dir={"vqct_tokenizer._weights": "weights"},
    package_data={
        "vqct_tokenizer._weights": [f"{DEFAULT_MODEL}/*.{ext}" for ext in ("json", "safetensors", "md", "png")],
        "vqct_tokenizer.training": ["configs/*.json"],
        "vqct_tokenizer.codebook": ["priors/*/*.json", "priors/*/*.safetensors", "priors/*/*.md"],
    },
    include_package_data=False,
)
