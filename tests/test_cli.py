"""main.py modes of the model core, run as a user runs them: convert and profile."""
import json

import numpy as np

from conftest import run_main


def test_convert_keras_applications_file_then_build_with_it(tmp_path):
    import keras

    from efficientnet_tf.model import build_model

    src = tmp_path / "b0.weights.h5"
    ref = keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3))
    ref.save_weights(src)
    dst = tmp_path / "out" / "b0.weights.h5"
    proc = run_main("--mode=convert", "--model=efficientnet-b0", f"--ckpt_path={src}",
                    f"--output={dst}")
    assert f"Wrote {dst}" in proc.stdout
    ours = build_model(0, input_shape=(32, 32, 3), weights=str(dst))
    np.testing.assert_array_equal(ours.get_layer("top_conv").kernel.numpy(),
                                  ref.get_layer("top_conv").kernel.numpy())
    np.testing.assert_array_equal(ours.get_layer("block6b").se.se_expand.bias.numpy(),
                                  ref.get_layer("block6b_se_expand").bias.numpy())
    assert sorted(p.name for p in dst.parent.iterdir()) == ["b0.weights.h5"]   # no temp left


def test_convert_errors_name_the_problem(tmp_path):
    missing = tmp_path / "nope.ckpt"
    proc = run_main("--mode=convert", "--model=efficientnet-b0", f"--ckpt_path={missing}",
                    f"--output={tmp_path / 'x.weights.h5'}", check=False)
    assert proc.returncode == 2 and str(missing) in proc.stderr
    proc = run_main("--mode=convert", "--model=efficientnet-b0", check=False)
    assert proc.returncode == 2 and "--ckpt_path" in proc.stderr and "--output" in proc.stderr
    proc = run_main("--mode=convert", "--model=efficientnet-b9", "--ckpt_path=x",
                    "--output=y.weights.h5", check=False)
    assert proc.returncode == 2 and "efficientnet-b9" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_profile_prints_table_and_writes_json(tmp_path):
    out = tmp_path / "profile.json"
    proc = run_main("--mode=profile", "--models=efficientnet-b0,efficientnet-lite0",
                    f"--output_json={out}")
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == ["efficientnet-b0", "efficientnet-lite0"]
    assert all(set(r) == {"model", "resolution", "params_trainable", "params_total", "flops",
                          "paper_params", "paper_flops"} for r in rows)
    b0, lite0 = rows
    assert (b0["params_trainable"], b0["params_total"], b0["resolution"]) == (5_288_548,
                                                                               5_330_564, 224)
    assert abs(b0["flops"] / 0.39e9 - 1) < 0.05 and b0["paper_flops"] == 0.39e9
    assert lite0["paper_params"] is None and lite0["params_total"] == 4_694_024
    assert "efficientnet-b0" in proc.stdout and "efficientnet-lite0" in proc.stdout
    proc = run_main("--mode=profile", "--models=efficientnet-b42", check=False)
    assert proc.returncode == 2 and "efficientnet-b42" in proc.stderr


def test_flags_a_mode_does_not_use_are_errors(tmp_path):
    proc = run_main("--mode=profile", "--phi=2", "--image_size=64", check=False)
    assert proc.returncode == 2
    assert "--image_size is not used by --mode=profile; --phi is not used by --mode=profile" \
        in proc.stderr
    proc = run_main("--mode=export", f"--model_dir={tmp_path}", "--image_size=64",
                    f"--export_dir={tmp_path / 'e'}", "--data_dir=/data", check=False)
    assert proc.returncode == 2
    assert "--image_size is not used with --model_dir: the run's config.json decides" in proc.stderr
    assert "--data_dir is only used by --quantize=int8" in proc.stderr
    proc = run_main("--mode=predict", f"--saved_model={tmp_path}", "--image=x.jpg",
                    "--resize_method=bilinear", check=False)
    assert proc.returncode == 2 and "--resize_method is not used with --saved_model" in proc.stderr
    proc = run_main("--mode=eval", f"--model_dir={tmp_path}", "--train_batch_size=4",
                    "--mixup_alpha=0.2", check=False)
    assert proc.returncode == 2 and "--mixup_alpha is not used by --mode=eval" in proc.stderr
    assert "--train_batch_size is not used by --mode=eval" in proc.stderr
    assert not list(tmp_path.iterdir())  # refused before anything ran


def test_prepare_folder_then_train_and_eval_on_it(tmp_path):
    from efficientnet_tf.data.testing import encode, natural_image

    source = tmp_path / "flowers"
    for split, count in (("train", 4), ("validation", 2)):
        for c, name in enumerate(["daisy", "rose", "tulip"]):
            for i in range(count):
                path = source / split / name / f"{i}.{'png' if i % 2 else 'jpg'}"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(encode(natural_image(40, 48, seed=10 * c + i),
                                        "PNG" if i % 2 else "JPEG"))
    data_dir = tmp_path / "records"
    proc = run_main("--mode=prepare", "--dataset=folder", f"--source_dir={source}",
                    f"--data_dir={data_dir}")
    assert f"--dataset=folder --data_dir={data_dir}" in proc.stdout
    metadata = json.loads((data_dir / "metadata.json").read_text())
    assert metadata["class_names"] == ["daisy", "rose", "tulip"]
    again = run_main("--mode=prepare", "--dataset=folder", f"--source_dir={source}",
                     f"--data_dir={data_dir}", check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    model_dir = tmp_path / "run"
    run_main("--mode=train_and_eval", "--dataset=folder", f"--data_dir={data_dir}",
             "--model=efficientnet-b0", "--width_coefficient=0.25", "--depth_coefficient=0.2",
             "--image_size=32", "--train_batch_size=4", "--eval_batch_size=4", "--train_steps=2",
             "--steps_per_eval=2", f"--model_dir={model_dir}")
    results = json.loads((model_dir / "eval_results.json").read_text())
    assert results["num_examples"] == 6 and results["step"] == 2
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model"]["num_classes"] == 3
    # Folder TFRecords without metadata.json (e.g. converted elsewhere): --num_classes says it.
    (data_dir / "metadata.json").unlink()
    proc = run_main("--mode=eval", "--dataset=folder", f"--data_dir={data_dir}",
                    "--num_classes=3", "--model=efficientnet-b0", "--width_coefficient=0.25",
                    "--depth_coefficient=0.2", "--image_size=32", "--eval_batch_size=4",
                    f"--model_dir={model_dir}")
    assert json.loads((model_dir / "eval_results.json").read_text())["num_examples"] == 6


def test_readme_commands_are_current(tmp_path):
    """The README's first command runs as written (shortened: later flags win in absl)."""
    import re
    import shlex

    from conftest import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    install_and_train, install_and_test = blocks[0], blocks[1]
    assert install_and_train.startswith("pip install -e . && python main.py ")
    assert install_and_test == 'pip install -e ".[test]" && python -m pytest'
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert install_and_test in ci
    args = shlex.split(install_and_train.split("python main.py ", 1)[1])
    proc = run_main(*args, "--train_steps=2", "--steps_per_eval=2", "--steps_per_loop=1",
                    "--synthetic_eval_size=32", f"--model_dir={tmp_path}")
    assert "step 2/2" in proc.stdout and f"{tmp_path}/eval_results.json" in proc.stdout


def test_export_and_predict_from_a_training_run(tmp_path):
    import tensorflow as tf

    from efficientnet_tf.data.testing import encode, natural_image

    run = tmp_path / "run"
    run_main("--mode=train", "--dataset=synthetic", "--model=efficientnet-b0",
             "--width_coefficient=0.25", "--depth_coefficient=0.2", "--image_size=32",
             "--train_batch_size=8", "--train_steps=2", "--steps_per_eval=2",
             "--synthetic_train_size=16", f"--model_dir={run}")
    images = []
    for i, fmt in enumerate(("JPEG", "PNG")):
        path = tmp_path / f"img{i}.{fmt.lower()}"
        path.write_bytes(encode(natural_image(50, 60, seed=i), fmt))
        images.append(str(path))

    serving = tmp_path / "serving"
    proc = run_main("--mode=export", f"--model_dir={run}", f"--export_dir={serving}")
    assert f"Wrote {serving}" in proc.stdout
    loaded = tf.saved_model.load(str(serving))
    assert {"serving_default", "serving_images"} <= set(loaded.signatures)
    again = run_main("--mode=export", f"--model_dir={run}", f"--export_dir={serving}",
                     check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr

    out_saved, out_keras = tmp_path / "p1.json", tmp_path / "p2.json"
    run_main("--mode=predict", f"--saved_model={serving}", f"--image={','.join(images)}",
             "--top_k=3", f"--output_json={out_saved}")
    run_main("--mode=predict", f"--model_dir={run}", f"--image={','.join(images)}",
             "--top_k=3", f"--output_json={out_keras}")
    saved = json.loads(out_saved.read_text())["predictions"]
    keras_side = json.loads(out_keras.read_text())["predictions"]
    assert [p["image"] for p in saved] == images
    for a, b in zip(saved, keras_side):
        assert [t["index"] for t in a["top_k"]] == [t["index"] for t in b["top_k"]]
        assert len(a["top_k"]) == 3
        for ta, tb in zip(a["top_k"], b["top_k"]):
            assert abs(ta["probability"] - tb["probability"]) < 1e-5
            assert ta["label"] == tb["label"]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    proc = run_main("--mode=predict", f"--saved_model={serving}", f"--image={bad}",
                    check=False)
    assert proc.returncode == 2 and "bad.jpg" in proc.stderr

    hub = tmp_path / "hub"
    run_main("--mode=export", f"--model_dir={run}", f"--export_dir={hub}", "--hub_format")
    assert sorted(p.name for p in hub.iterdir()) == ["classification", "feature_vector"]
    lite = tmp_path / "lite"
    proc = run_main("--mode=export", f"--model_dir={run}", f"--export_dir={lite}", "--tflite")
    assert (lite / "model.tflite").stat().st_size > 0
    proc = run_main("--mode=export", f"--model_dir={run}", f"--export_dir={lite}", "--hub_format",
                    "--tflite", check=False)
    assert proc.returncode == 2 and "not both" in proc.stderr
