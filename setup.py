from setuptools import setup

setup(
    name="reuse-vos",
    version="0.1.0",
    description="G-FRTM: semi-supervised video object segmentation with a learned reuse gate",
    packages=["lib", "models", "dataset", "trainer"],
    py_modules=["train", "evaluate", "benchmark", "demo"],
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
        "test": ["pytest"],
        "plot": ["matplotlib"],
    },
)
