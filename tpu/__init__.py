"""Cloud TPU VM tooling (`python tpu/launch.py --help`); kept free of TensorFlow imports."""
