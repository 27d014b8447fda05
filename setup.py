"""Installable package for efficientnet_tf (TensorFlow 2 / Keras 3 EfficientNet)."""
from setuptools import find_packages, setup

setup(
    name="efficientnet_tf",
    version="0.1.0",
    description="EfficientNet B0-B8, L2 and Lite in Keras 3 with the paper's training recipe",
    packages=find_packages(include=["efficientnet_tf", "efficientnet_tf.*"]),
    py_modules=["main", "flags"],
    package_data={"efficientnet_tf": ["resources/*"]},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.3",
        "tensorflow-datasets>=4.9",
        "importlib_resources",
        "absl-py",
        "tensorboard",
        "numpy",
        "h5py",
        "pillow",
        "scipy",
        "matplotlib",
    ],
    extras_require={
        # tensorflow-hub + tf-keras: the hub.KerasLayer test of the TF-Hub-style export.
        "test": ["pytest>=7", "tensorflow-hub", "tf-keras"],
    },
)
