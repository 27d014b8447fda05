"""Compound-scaling tools: enumeration, matched-FLOPs solver, search and study via main.py."""
import json
import math
import os

import numpy as np
import pytest

from efficientnet_tf import scaling
from efficientnet_tf.config import ConfigError

from conftest import run_main

BASE_FLAGS = ("--dataset=synthetic", "--model=efficientnet-b0", "--width_coefficient=0.25",
              "--depth_coefficient=0.2", "--image_size=32", "--synthetic_train_size=32",
              "--synthetic_eval_size=16", "--train_batch_size=8", "--eval_batch_size=8",
              "--steps_per_loop=2")
CANDIDATE_KEYS = {"alpha", "beta", "gamma", "depth", "width", "resolution", "params", "flops",
                  "top_1", "top_5", "model_dir"}


def test_enumerate_candidates_against_the_constraint_by_hand():
    grids = dict(alpha_grid=(1.0, 1.2, 2.0), beta_grid=(1.0, 1.1), gamma_grid=(1.0, 1.15, 1.3))
    # alpha * beta^2 * gamma^2 for all 18 triples, worked out by hand; within 0.1 of 2 are:
    #   1.0 * 1.21 * 1.69   = 2.0449   1.2 * 1.0 * 1.69 = 2.028
    #   1.2 * 1.21 * 1.3225 = 1.92027  2.0 * 1.0 * 1.0  = 2.0
    # and the nearest misses are 1.6002 (1, 1.1, 1.15) and 2.42 (2, 1.1, 1).
    assert scaling.enumerate_candidates(**grids, tolerance=0.1) == [
        (1.0, 1.1, 1.3), (1.2, 1.0, 1.3), (1.2, 1.1, 1.15), (2.0, 1.0, 1.0)]
    # Tighter: 1.92027 is 0.0797 away from 2, so it drops out.
    assert scaling.enumerate_candidates(**grids, tolerance=0.05) == [
        (1.0, 1.1, 1.3), (1.2, 1.0, 1.3), (2.0, 1.0, 1.0)]
    # The paper's triple is in the default grid.
    default = scaling.enumerate_candidates(scaling.DEFAULT_ALPHA_GRID, scaling.DEFAULT_BETA_GRID,
                                           scaling.DEFAULT_GAMMA_GRID)
    assert (1.2, 1.1, 1.15) in default
    assert all(abs(a * b * b * g * g - 2) <= 0.1 for a, b, g in default)


def test_grid_errors_name_the_flag_and_the_closest_products():
    with pytest.raises(ConfigError, match=r"^alpha_grid: 'x' is not a number"):
        scaling.parse_grid("1.0,x", "alpha_grid")
    with pytest.raises(ConfigError, match=r"^beta_grid: 0.9 must be a finite number >= 1"):
        scaling.parse_grid("0.9,1.1", "beta_grid")
    with pytest.raises(ConfigError, match=r"^gamma_grid: empty"):
        scaling.parse_grid(" , ", "gamma_grid")
    assert scaling.parse_grid("1.2, 1.0,1.2", "alpha_grid") == (1.0, 1.2)
    with pytest.raises(ValueError) as e:
        scaling.enumerate_candidates((1.0,), (1.0,), (1.0, 1.3), tolerance=0.1)
    assert "alpha=1, beta=1, gamma=1.3 -> 1.690" in str(e.value)
    assert "search_tolerance=0.1" in str(e.value)


def test_compound_config_scales_the_given_base():
    from efficientnet_tf.config import get_model_config

    base = get_model_config("efficientnet-b0", width_coefficient=0.5, depth_coefficient=0.25,
                            resolution=64)
    config = scaling.compound_config(base, 1, 1.2, 1.1, 1.15)
    assert math.isclose(config.depth_coefficient, 0.25 * 1.2)
    assert math.isclose(config.width_coefficient, 0.5 * 1.1)
    assert config.resolution == 72      # 64 * 1.15 = 73.6 -> nearest multiple of 8
    assert scaling.compound_config(base, 2, 1.2, 1.1, 1.15).resolution == 88  # 84.6 -> 88


def test_match_flops_solver():
    # Continuous: FLOPs ~ c^2 (width or resolution scaling) -> c = sqrt(2) within tolerance.
    c, f = scaling.match_flops(lambda c: int(1e6 * c * c), 2e6, 1.0, 1.2)
    assert abs(f / 2e6 - 1) <= 0.01 and abs(c - math.sqrt(2)) < 0.01
    # A step function (rounded channels/repeats): the step edge nearest the target.
    steps = lambda c: 100 * math.ceil(4 * c)  # noqa: E731
    c, f = scaling.match_flops(steps, 640, 1.0, 2.0)
    assert f == 600 and steps(c) == 600
    c, f = scaling.match_flops(steps, 680, 1.0, 2.0)
    assert f == 700
    # Integers (resolutions), with the upper bound found by doubling.
    c, f = scaling.match_flops(lambda r: r * r, 10_000, 32, 40, integer=True)
    assert c == 100 and f == 10_000
    with pytest.raises(ValueError, match="short of the target"):
        scaling.match_flops(lambda c: 5, 10, 1.0, 2.0)


def _search(model_dir, *extra, check=True):
    return run_main("--mode=scaling_search", *BASE_FLAGS, "--search_budget_steps=4",
                    "--steps_per_eval=2", "--alpha_grid=1.2,2.0", "--beta_grid=1.0,1.1",
                    "--gamma_grid=1.0,1.15", f"--model_dir={model_dir}", *extra, check=check)


def _ckpt_files(run_dir):
    return {name: os.path.getmtime(run_dir / name) for name in os.listdir(run_dir)
            if name.startswith("ckpt-")}


def test_scaling_search_end_to_end_and_resume(tmp_path):
    out = tmp_path / "search"
    first = _search(out)
    result = json.loads((out / "scaling_search.json").read_text())
    assert set(result) == {"settings", "candidates", "best"}
    rows = result["candidates"]
    assert [(r["alpha"], r["beta"], r["gamma"]) for r in rows] == [(1.2, 1.1, 1.15),
                                                                  (2.0, 1.0, 1.0)]
    for r in rows:
        assert set(r) == CANDIDATE_KEYS
        assert 0.0 <= r["top_1"] <= 1.0 and r["params"] > 0 and r["flops"] > 0
    compound, deep = rows
    assert math.isclose(compound["depth"], 0.2 * 1.2) and math.isclose(compound["width"],
                                                                       0.25 * 1.1)
    assert compound["resolution"] == 40 and deep["resolution"] == 32
    assert math.isclose(deep["depth"], 0.4) and deep["width"] == 0.25
    best = max(rows, key=lambda r: (r["top_1"], -r["flops"]))
    assert result["best"] == best
    assert result["settings"]["budget_steps"] == 4 and result["settings"]["phi"] == 1.0
    assert first.stdout.count(": training") == 2
    for r in rows:
        assert r["model_dir"] == str(out / "candidates" /
                                     f"{r['alpha']:g}_{r['beta']:g}_{r['gamma']:g}")
        assert sorted(_ckpt_files(out / "candidates" / os.path.basename(r["model_dir"]))) == [
            "ckpt-2.data-00000-of-00001", "ckpt-2.index", "ckpt-4.data-00000-of-00001",
            "ckpt-4.index"]

    # Crash simulation: the second candidate got to its step-2 checkpoint and no further.
    import tensorflow as tf

    second = out / "candidates" / "2_1_1"
    for name in ("ckpt-4.index", "ckpt-4.data-00000-of-00001"):
        (second / name).unlink()
    tf.compat.v1.train.update_checkpoint_state(str(second), str(second / "ckpt-2"))
    rows[1].update(top_1=None, top_5=None)
    (out / "scaling_search.json").write_text(json.dumps(result))
    finished_mtimes = _ckpt_files(out / "candidates" / "1.2_1.1_1.15")

    again = _search(out)
    assert "[1/2] alpha=1.2 beta=1.1 gamma=1.15" in again.stdout
    assert "finished earlier" in again.stdout and again.stdout.count(": training") == 1
    assert "step 4/4" in again.stdout and "step 2/4" not in again.stdout   # resumed at step 2
    assert _ckpt_files(out / "candidates" / "1.2_1.1_1.15") == finished_mtimes
    resumed = json.loads((out / "scaling_search.json").read_text())
    assert resumed["candidates"][0] == rows[0]
    assert resumed["candidates"][1]["top_1"] is not None

    # A different budget cannot reuse these results.
    proc = run_main("--mode=scaling_search", *BASE_FLAGS, "--search_budget_steps=6",
                    "--alpha_grid=1.2,2.0", "--beta_grid=1.0,1.1", "--gamma_grid=1.0,1.15",
                    f"--model_dir={out}", check=False)
    assert proc.returncode == 2 and "different settings (changed: budget_steps)" in proc.stderr


def test_scaling_search_empty_grid_is_a_clear_cli_error(tmp_path):
    # Products: 1, 1.3225, 1.2, 1.587 -- none within 0.1 of 2.
    proc = _search(tmp_path, "--alpha_grid=1.0,1.2", "--beta_grid=1.0", check=False)
    assert proc.returncode == 2
    assert "No (alpha, beta, gamma)" in proc.stderr
    assert "Closest products: alpha=1.2, beta=1, gamma=1.15 -> 1.587" in proc.stderr
    assert not (tmp_path / "scaling_search.json").exists()


def test_scaling_study_end_to_end(tmp_path):
    import tensorflow as tf

    out = tmp_path / "study"
    args = ("--mode=scaling_study", *BASE_FLAGS, "--search_budget_steps=2", "--study_k=1",
            f"--model_dir={out}")
    first = run_main(*args)
    result = json.loads((out / "scaling_study.json").read_text())
    rows = result["rows"]
    assert [(r["method"], r["k"]) for r in rows] == [
        ("baseline", 0), ("width", 1), ("depth", 1), ("resolution", 1), ("compound", 1)]
    base, width, depth, resolution, compound = rows
    assert width["depth_scale"] == 1 and width["resolution"] == 32 and width["width_scale"] > 1
    assert depth["width_scale"] == 1 and depth["resolution"] == 32 and depth["depth_scale"] > 1
    assert resolution["width_scale"] == resolution["depth_scale"] == 1
    assert resolution["resolution"] > 32
    target = compound["flops"]
    assert all(r["target_flops"] == target for r in rows[1:]) and target > base["flops"]
    # Counted FLOPs of the matched networks: width and resolution land within a few %; depth
    # only moves in whole blocks (repeats = ceil(d * r)), so it gets the nearest block count.
    assert abs(width["flops"] / target - 1) < 0.03
    assert abs(resolution["flops"] / target - 1) < 0.03
    assert abs(depth["flops"] / target - 1) < 0.15
    for r in rows:
        assert 0 <= r["top_1"] <= 1 and len(r["top_1_runs"]) == 1 and r["top_1_std"] is None
    png = tf.io.decode_png(tf.io.read_file(str(out / "scaling_study.png"))).numpy()
    assert png.shape[2] == 3 and png.shape[0] > 200 and np.ptp(png) > 0
    assert first.stdout.count(": training") == 5
    assert sorted(os.listdir(out / "runs")) == ["baseline_k0", "compound_k1", "depth_k1",
                                                "resolution_k1", "width_k1"]

    again = run_main(*args)
    assert again.stdout.count("finished earlier") == 5 and ": training" not in again.stdout
    assert json.loads((out / "scaling_study.json").read_text())["rows"] == rows
