"""Packaging details pyproject.toml cannot say on its own.

The top-level ``weights/`` folder ships inside the wheel as the package ``vqct_tokenizer._weights``,
so a non-editable ``pip install .`` still finds the shipped models (see vqct_tokenizer/defaults.py).
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["vqct_tokenizer", "vqct_tokenizer.*"]) + ["vqct_tokenizer._weights"],
    package_dir={"vqct_tokenizer._weights": "weights"},
    package_data={
        "vqct_tokenizer._weights": ["*/*.json", "*/*.safetensors", "*/*.md", "*/*.png"],
        "vqct_tokenizer.training": ["configs/*.json"],
        "vqct_tokenizer.codebook": ["priors/*/*.json", "priors/*/*.safetensors", "priors/*/*.md"],
    },
    include_package_data=False,
)
