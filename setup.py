"""Installable package for efficientnet_tf (TensorFlow 2 / Keras 3 EfficientNet)."""
from setuptools import find_packages, setup

setup(
    name="efficientnet_tf",
    version="0.1.0",
    description="EfficientNet B0-B8, L2 and Lite in Keras 3 with the paper's training recipe",
    packages=find_packages(include=["efficientnet_tf", "efficientnet_tf.*"]),
    entry_points={"console_scripts": ["efficientnet-tf=efficientnet_tf.cli.main:run"]},
    package_data={"efficientnet_tf": ["resources/*"]},
    include_package_data=True,
    python_requires=">=3.10",
    # Lower bounds are what the code needs, and .ci/run tests them (the core tests on exactly
    # tensorflow==2.16.1 + keras==3.10.0): Keras 3.10 added Optimizer.add_optimizer_variables
    # (efficientnet_tf/training/optimizer.py); 2.16.1 is the first TensorFlow with Keras 3 and the
    # oldest in tpu/launch.py's TPU runtime table. No upper bounds: no known break up to the
    # versions it is developed on (TensorFlow 2.21, Keras 3.15).
    install_requires=[
        "tensorflow>=2.16.1",
        "keras>=3.10",
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
        # tensorflow-hub + tf-keras: the hub.KerasLayer test of the TF-Hub-style export;
        # jax[cpu]: the model core on Keras' JAX backend (tests/test_backends.py); ruff: the
        # linter tests/test_lint.py runs.
        "test": ["pytest>=7", "tensorflow-hub", "tf-keras", "jax[cpu]", "ruff"],
    },
)
