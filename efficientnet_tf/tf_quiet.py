"""Import TensorFlow without the lines it prints on every machine that has no CUDA driver.

TensorFlow 2.21's C++ runtime writes these straight to file descriptor 2, twice while it is
imported:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will ...

and once when devices are first initialized (first op or device listing):

    E0000 00:00:... cuda_platform.cc:52] failed call to cuInit: ... UNKNOWN ERROR (303)

No setting removes just these. TF_CPP_MIN_LOG_LEVEL, even 3, leaves the import-time lines (logged
before absl logging is set up), and 3 hides the cuInit line only by hiding every C++ error; absl's
--stderrthreshold cannot be set from Python; CUDA_VISIBLE_DEVICES changes nothing without a
driver. So `import_tensorflow` captures fd 2 for that window and writes every other line back.
"""
import os
import re
import sys
import tempfile

# The lines above, also in the log format of older TensorFlow (date, level, source path), and
# cuInit also with CUDA_ERROR_NO_DEVICE: a driver, but no GPU or all of them hidden by
# CUDA_VISIBLE_DEVICES. Any other cuInit failure means a broken GPU setup and passes.
_LOG_PREFIX = rb"(?:[IWE]\d{4} [\d:.]+ +\d+ |\d{4}-\d\d-\d\d [\d:.]+: [IWE] (?:\S+/)?)"
_NO_GPU_LINE = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|" + _LOG_PREFIX + rb"(?:"
    rb"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will not be used\."
    rb"|cuda_(?:platform|driver)\.cc:\d+\] failed call to cuInit: .*(?:UNKNOWN ERROR \(303\)"
    rb"|CUDA_ERROR_NO_DEVICE.*))")


def drop_no_gpu_lines(data: bytes) -> bytes:
    """`data` without the known no-GPU lines; every other line kept byte for byte."""
    return b"".join(line for line in data.splitlines(keepends=True)
                    if not _NO_GPU_LINE.fullmatch(line.rstrip(b"\r\n")))


def import_tensorflow():
    """Import TensorFlow and list its devices with the no-GPU lines removed from stderr.

    Call it before anything else imports TensorFlow (Keras included); TensorFlow prints them only
    once per process. Whatever else reaches stderr meanwhile, from C++ or Python, comes out in
    order when it returns, also when the import raises.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as captured:  # a file, not a pipe: no reader to deadlock
            os.dup2(captured.fileno(), 2)
            try:
                import tensorflow as tf
                tf.config.list_physical_devices()  # initializes devices: the cuInit line
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                captured.seek(0)
                with open(2, "wb", closefd=False) as stderr:
                    stderr.write(drop_no_gpu_lines(captured.read()))
    finally:
        os.close(saved)
    return tf
