"""Run the command line from a checkout: `python main.py --mode=MODE [flags]` (installed:
`efficientnet-tf`). The code lives in efficientnet_tf/cli/."""
from efficientnet_tf.cli.main import run

if __name__ == "__main__":
    run()
