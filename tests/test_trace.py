"""`--profile_steps`: a TensorBoard profiler trace of exactly the asked training steps."""
import re

from conftest import run_main


def test_profile_steps_writes_a_trace_of_those_steps(tmp_path):
    """10 steps per loop, trace of steps 2-3: the host loop stops after steps 1 and 3, so the
    trace holds exactly them. Also runs the XLA-compiled train step (--jit_compile=on)."""
    proc = run_main("--mode=train", "--dataset=synthetic", "--synthetic_train_size=32",
                    "--model=efficientnet-b0", "--width_coefficient=0.25",
                    "--depth_coefficient=0.2", "--image_size=32", "--train_batch_size=8",
                    "--train_steps=4", "--steps_per_loop=10", "--steps_per_eval=10",
                    "--profile_steps=2,3", "--jit_compile=on", f"--model_dir={tmp_path}")
    assert re.findall(r"^step (\d+)/4 ", proc.stdout, re.MULTILINE) == ["1", "3", "4"]
    traces = list((tmp_path / "train" / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0, traces
