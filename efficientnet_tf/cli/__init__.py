"""The `efficientnet-tf` command line (`python main.py` from a checkout): flags.py defines the
flags and turns them into configs, main.py runs the modes."""
