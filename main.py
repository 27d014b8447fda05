"""efficientnet_tf command line: `python main.py --mode=MODE [flags]` (see README.md)."""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

import flags as cli_flags  # noqa: E402

FLAGS = flags.FLAGS
cli_flags.define_flags()


def run_convert():
    from efficientnet_tf import weights

    cli_flags.require(FLAGS, "ckpt_path", "output")
    config = cli_flags.model_config_from_flags(FLAGS)
    path = weights.convert(config.name if FLAGS.phi is None else None, FLAGS.ckpt_path,
                           FLAGS.output, config=config)
    print(f"Wrote {path}")


def run_profile():
    from efficientnet_tf import profile

    rows = profile.profile_models(cli_flags.profile_model_names(FLAGS))
    print(profile.format_profile_table(rows))
    if FLAGS.output_json:
        _write_json(FLAGS.output_json, rows)
        print(f"Wrote {FLAGS.output_json}")


def _write_json(path, obj):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


MODE_RUNNERS = {
    "convert": run_convert,
    "profile": run_profile,
}
assert set(MODE_RUNNERS) == set(cli_flags.MODES)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        MODE_RUNNERS[FLAGS.mode]()
    except (ValueError, FileNotFoundError, FileExistsError, flags.ValidationError) as e:
        logging.debug("failure", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
