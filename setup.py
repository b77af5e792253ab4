"""Installs the dependencies of Reuse-VOS, and on purpose none of its modules.

The code runs from the repository root (`python evaluate.py`, `python -m trainer.export`, ...), as
FRTM's does. Its top-level names (evaluate, train, demo, benchmark, lib, models, dataset, trainer,
evaluator) are too generic to put on every program's import path: PyPI has popular packages called
`evaluate` and `trainer`. So `packages` and `py_modules` are empty, which leaves an editable install with
nothing to map (pyproject.toml asks for a setuptools whose editable installs add no folder to
sys.path), and `pip install -e .` brings exactly the requirements below.
"""
from setuptools import setup

setup(
    name="reuse-vos",
    version="0.1.0",
    description="G-FRTM: semi-supervised video object segmentation with a learned reuse gate",
    packages=[],
    py_modules=[],
    python_requires=">=3.10",
    install_requires=[
        "torch",
        "torchvision",
        "numpy",
        "opencv-python-headless",
        "pillow",
        "scipy",
        "tensorboard",
        "tqdm",
    ],
    extras_require={
        "test": ["pytest", "import-linter"],
        "plot": ["matplotlib"],
    },
)
