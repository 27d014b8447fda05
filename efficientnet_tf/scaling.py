"""Compound scaling as a tool: the paper's STEP 1 grid search for (alpha, beta, gamma) and the
single-dimension vs compound scaling study (paper Figures 3 and 8), at a budget you choose.

Both train every network with the same step budget through the `Trainer`, under whatever
`tf.distribute` strategy they are given, and keep their results in one JSON file that is
rewritten atomically after each network. A rerun with the same settings skips the networks whose
result is recorded and resumes a half-trained one from its checkpoints.

FLOPs are multiply-adds counted from the built graph (`efficientnet_tf.profile`); params are the
trainable parameters. Networks are scaled from a base `ModelConfig` (B0 or a shrunk base), so
depth and width below are that config's absolute coefficients.
"""
from __future__ import annotations

import json
import math
import os
from typing import Callable, Sequence

from efficientnet_tf import config as cfg
from efficientnet_tf.config import ConfigError, ModelConfig
from efficientnet_tf.experiment import ExperimentConfig
from efficientnet_tf.files import read_json, write_json_atomic

SEARCH_FILE = "scaling_search.json"
STUDY_FILE = "scaling_study.json"
STUDY_PLOT = "scaling_study.png"
FLOPS_GROWTH = 2.0  # paper: alpha * beta^2 * gamma^2 ~= 2, so FLOPs grow ~2^phi
DEFAULT_ALPHA_GRID = (1.0, 1.1, 1.2, 1.3, 1.4)
DEFAULT_BETA_GRID = (1.0, 1.05, 1.1, 1.15, 1.2)
DEFAULT_GAMMA_GRID = (1.0, 1.05, 1.1, 1.15, 1.2)
SINGLE_METHODS = ("width", "depth", "resolution")
METHODS = SINGLE_METHODS + ("compound",)
BASELINE = "baseline"


# --- candidates and scaled configs (pure) -----------------------------------------------------

def parse_grid(text, flag: str) -> tuple[float, ...]:
    """'1.0,1.1,1.2' (or a list of such strings) -> sorted distinct floats, each >= 1."""
    items = text.split(",") if isinstance(text, str) else list(text)
    values = []
    for item in items:
        item = str(item).strip()
        if not item:
            continue
        try:
            value = float(item)
        except ValueError:
            raise ConfigError(f"{flag}: {item!r} is not a number (expected comma-separated "
                              "values such as 1.0,1.1,1.2).") from None
        if not math.isfinite(value) or value < 1.0:
            raise ConfigError(f"{flag}: {item} must be a finite number >= 1 (scaling never "
                              "shrinks the base network).")
        values.append(value)
    if not values:
        raise ConfigError(f"{flag}: empty; give comma-separated values >= 1, e.g. 1.0,1.1,1.2.")
    return tuple(sorted(set(values)))


def flops_product(alpha: float, beta: float, gamma: float) -> float:
    """Paper eq. 3's FLOPs growth per unit phi: alpha * beta^2 * gamma^2."""
    return alpha * beta ** 2 * gamma ** 2


def enumerate_candidates(alpha_grid: Sequence[float], beta_grid: Sequence[float],
                         gamma_grid: Sequence[float], *, tolerance: float = 0.1,
                         target: float = FLOPS_GROWTH) -> list[tuple[float, float, float]]:
    """Every (alpha, beta, gamma) of the grids with |alpha*beta^2*gamma^2 - target| <= tolerance."""
    if tolerance < 0:
        raise ConfigError(f"search_tolerance={tolerance}: must be >= 0.")
    grids = {"alpha_grid": alpha_grid, "beta_grid": beta_grid, "gamma_grid": gamma_grid}
    for flag, grid in grids.items():
        if not grid or min(grid) < 1.0:
            raise ConfigError(f"{flag}={list(grid)}: needs values, each >= 1.")
    triples = [(a, b, g) for a in sorted(set(alpha_grid)) for b in sorted(set(beta_grid))
               for g in sorted(set(gamma_grid))]
    found = [t for t in triples if abs(flops_product(*t) - target) <= tolerance + 1e-12]
    if not found:
        closest = sorted(triples, key=lambda t: abs(flops_product(*t) - target))[:3]
        near = "; ".join(f"alpha={a:g}, beta={b:g}, gamma={g:g} -> {flops_product(a, b, g):.3f}"
                         for a, b, g in closest)
        raise ConfigError(f"No (alpha, beta, gamma) in the grids has alpha*beta^2*gamma^2 within "
                          f"search_tolerance={tolerance:g} of {target:g}. Closest products: "
                          f"{near}. Widen the grids or the tolerance.")
    return found


def scaled_config(base: ModelConfig, *, depth: float = 1.0, width: float = 1.0,
                  resolution: int | None = None) -> ModelConfig:
    """`base` with its depth and width coefficients multiplied and its resolution replaced."""
    resolution = base.resolution if resolution is None else int(resolution)
    return _with_coefficients(base, base.depth_coefficient * depth,
                              base.width_coefficient * width, resolution)


def _with_coefficients(base: ModelConfig, depth_coefficient: float, width_coefficient: float,
                       resolution: int) -> ModelConfig:
    return base.replace(
        name=f"{base.name}-d{depth_coefficient:.4g}-w{width_coefficient:.4g}-r{resolution}",
        depth_coefficient=depth_coefficient, width_coefficient=width_coefficient,
        resolution=resolution)


def compound_config(base: ModelConfig, phi: float, alpha: float, beta: float,
                    gamma: float) -> ModelConfig:
    """Paper eq. 3 applied to `base`: depth x alpha^phi, width x beta^phi, resolution x gamma^phi
    (rounded to a multiple of 8 by `compound_coefficients`, as `config_for_phi` for non-table
    phi)."""
    width, depth, resolution = cfg.compound_coefficients(phi, alpha, beta, gamma,
                                                         base_resolution=base.resolution)
    return scaled_config(base, depth=depth, width=width, resolution=resolution)


def count_key(config: ModelConfig):
    """What params and FLOPs depend on after rounding: equal keys, equal counts (configs with
    different coefficients often round to the same network; `ModelConfig.architecture` tells
    networks apart, this only saves rebuilding one to count it)."""
    return (tuple(cfg.stage_table(config)), cfg.stem_filters(config), cfg.head_filters(config),
            config.resolution, config.num_classes, config.activation)


def match_flops(flops_of: Callable[[float], int], target: float, lo: float, hi: float, *,
                integer: bool = False, rel_tol: float = 0.01, max_steps: int = 60,
                max_expansions: int = 8) -> tuple[float, int]:
    """Coefficient c in [lo, ...] whose flops_of(c) is nearest `target`, by bisection.

    flops_of must be non-decreasing in c (rounding makes it a step function: the answer is then
    the nearer side of the step that crosses the target). `hi` doubles until it reaches the target.
    integer: search integers (resolutions). Returns (c, flops_of(c)).
    """
    if lo > hi:
        raise ValueError(f"match_flops: lo={lo} > hi={hi}.")
    f_lo = flops_of(lo)
    if f_lo >= target:
        return lo, f_lo
    f_hi = flops_of(hi)
    for _ in range(max_expansions):
        if f_hi >= target:
            break
        lo, f_lo = hi, f_hi
        hi = hi * 2
        f_hi = flops_of(hi)
    else:
        raise ConfigError(f"match_flops: FLOPs reach only {f_hi:,} at coefficient {hi:g}, short "
                          f"of the target {target:,.0f}.")
    for _ in range(max_steps):
        if (hi - lo <= 1) if integer else (hi - lo <= 1e-6 * hi):
            break
        mid = (lo + hi) // 2 if integer else (lo + hi) / 2
        f_mid = flops_of(mid)
        if abs(f_mid - target) <= rel_tol * target:
            return mid, f_mid
        if f_mid < target:
            lo, f_lo = mid, f_mid
        else:
            hi, f_hi = mid, f_mid
    return (lo, f_lo) if target - f_lo <= f_hi - target else (hi, f_hi)


# --- counting -----------------------------------------------------------------------------------

class Counter:
    """Params and FLOPs of configs, built once per distinct architecture."""

    def __init__(self):
        self._cache = {}

    def __call__(self, config: ModelConfig) -> tuple[int, int]:
        """(trainable params, multiply-adds per image) of the classifier `config` describes."""
        import keras

        from efficientnet_tf.model import build_model
        from efficientnet_tf.profile import count_flops, count_params

        key = count_key(config)
        if key not in self._cache:
            model = build_model(config=config)
            self._cache[key] = (count_params(model)[0], count_flops(model))
            del model
            keras.backend.clear_session()
        return self._cache[key]


# --- shared training of one network --------------------------------------------------------------

def _train_and_evaluate(experiment: ExperimentConfig, strategy, model_config: ModelConfig,
                        model_dir: str, budget_steps: int) -> dict:
    """Train `model_config` for `budget_steps` in `model_dir` (resuming), then evaluate (EMA)."""
    import keras

    from efficientnet_tf.training.trainer import Trainer

    run = experiment.replace(
        model=model_config, recipe=experiment.recipe.replace(train_steps=budget_steps),
        runtime=experiment.runtime.replace(model_dir=model_dir))
    trainer = Trainer(run, strategy)
    trainer.train()
    result = trainer.evaluate()
    del trainer
    keras.backend.clear_session()
    return result


def _check_experiment(experiment: ExperimentConfig, budget_steps: int):
    if budget_steps is None or budget_steps < 1:
        raise ConfigError(f"search_budget_steps={budget_steps}: every network needs the same "
                          "training budget of >= 1 steps (or set train_steps).")
    if experiment.recipe.weights:
        raise ConfigError(f"RecipeConfig.weights={experiment.recipe.weights!r}: scaled networks "
                          "have other shapes than the base, so they train from scratch; drop "
                          "the weights.")


def _settings(experiment: ExperimentConfig, budget_steps: int, **extra) -> dict:
    """What a recorded result depends on; a rerun must match it to reuse results."""
    recipe = experiment.recipe.to_dict()
    for field in ("train_steps", "train_epochs"):  # budget_steps replaces them
        recipe.pop(field)
    return json.loads(json.dumps({
        "base": experiment.model.to_dict(), "data": experiment.data.to_dict(),
        "recipe": recipe, "mixed_precision": experiment.runtime.mixed_precision,
        "budget_steps": budget_steps, **extra}))


def _read_previous(path: str, settings: dict) -> dict | None:
    """The results file from an earlier run, refused when it was made with other settings."""
    try:
        previous = read_json(path)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); move it away to start over.") \
            from None
    if previous is None:
        return None
    old = previous.get("settings")
    if old != settings:
        changed = sorted(k for k in set(settings) | set(old or {})
                         if (old or {}).get(k) != settings.get(k))
        raise ConfigError(f"{path} was written with different settings (changed: "
                          f"{', '.join(changed)}); its results cannot be mixed with this run's. "
                          "Use a new output directory or the same settings.")
    return previous


def _print(message: str):
    print(message, flush=True)


# --- STEP 1: grid search --------------------------------------------------------------------------

def candidate_dir_name(alpha: float, beta: float, gamma: float) -> str:
    return f"{alpha:g}_{beta:g}_{gamma:g}"


def _best(rows: list[dict]) -> dict | None:
    """Highest top-1; ties go to fewer FLOPs (then enumeration order)."""
    done = [r for r in rows if r.get("top_1") is not None]
    if not done:
        return None
    return max(done, key=lambda r: (r["top_1"], -r["flops"]))


def scaling_search(experiment: ExperimentConfig, strategy, output_dir: str, *,
                   phi: float = 1.0, alpha_grid=DEFAULT_ALPHA_GRID, beta_grid=DEFAULT_BETA_GRID,
                   gamma_grid=DEFAULT_GAMMA_GRID, tolerance: float = 0.1,
                   budget_steps: int | None = None, log=None) -> dict:
    """Paper STEP 1: train every (alpha, beta, gamma) under the constraint from `experiment.model`.

    Each candidate scales the base by depth alpha^phi, width beta^phi, resolution gamma^phi and
    trains in OUTPUT_DIR/candidates/<alpha>_<beta>_<gamma>/ for `budget_steps` (default: the
    experiment's train_steps). Writes and returns OUTPUT_DIR/scaling_search.json:
    {"settings", "candidates": [{alpha, beta, gamma, depth, width, resolution, params, flops,
    top_1, top_5, model_dir}], "best"} (top_1 null until trained; best over the trained ones).
    """
    from efficientnet_tf import distribute

    log = log or _print
    budget_steps = budget_steps or experiment.recipe.train_steps
    _check_experiment(experiment, budget_steps)
    if phi <= 0:
        raise ConfigError(f"phi={phi}: the search scales up, phi must be > 0 (paper: 1).")
    candidates = enumerate_candidates(alpha_grid, beta_grid, gamma_grid, tolerance=tolerance)
    base = experiment.model
    path = os.path.join(output_dir, SEARCH_FILE)
    settings = _settings(experiment, budget_steps, phi=phi)
    previous = _read_previous(path, settings)
    finished = {(r["alpha"], r["beta"], r["gamma"]): r
                for r in (previous or {}).get("candidates", []) if r.get("top_1") is not None}
    chief = distribute.is_chief(strategy)
    count = Counter()
    rows, configs = [], []
    for alpha, beta, gamma in candidates:
        config = compound_config(base, phi, alpha, beta, gamma)
        configs.append(config)
        if (alpha, beta, gamma) in finished:  # its row already holds params and FLOPs
            rows.append(finished[(alpha, beta, gamma)])
            continue
        params, flops = count(config)
        row = {"alpha": alpha, "beta": beta, "gamma": gamma,
               "depth": config.depth_coefficient, "width": config.width_coefficient,
               "resolution": config.resolution, "params": params, "flops": flops,
               "top_1": None, "top_5": None,
               "model_dir": os.path.join(output_dir, "candidates",
                                         candidate_dir_name(alpha, beta, gamma))}
        rows.append(row)

    def save():
        result = {"settings": settings, "candidates": rows, "best": _best(rows)}
        if chief:
            write_json_atomic(path, result)
        return result

    result = save()
    log(f"Scaling search: {len(rows)} candidate(s) with |alpha*beta^2*gamma^2 - 2| <= "
        f"{tolerance:g}, phi={phi:g}, {budget_steps} steps each; results in {path}")
    for i, (row, config) in enumerate(zip(rows, configs), 1):
        tag = (f"[{i}/{len(rows)}] alpha={row['alpha']:g} beta={row['beta']:g} "
               f"gamma={row['gamma']:g} (depth {row['depth']:.3g}, width {row['width']:.3g}, "
               f"{row['resolution']}px, {row['flops'] / 1e6:.1f}M FLOPs)")
        if row["top_1"] is not None:
            log(f"{tag}: finished earlier, top_1={row['top_1']:.4f}; skipped")
            continue
        log(f"{tag}: training")
        metrics = _train_and_evaluate(experiment, strategy, config, row["model_dir"],
                                      budget_steps)
        row.update(top_1=metrics["top_1"], top_5=metrics["top_5"])
        log(f"{tag}: top_1={row['top_1']:.4f}")
        result = save()
    best = result["best"]
    log(f"Best: alpha={best['alpha']:g} beta={best['beta']:g} gamma={best['gamma']:g} "
        f"top_1={best['top_1']:.4f} ({best['flops'] / 1e6:.1f}M FLOPs)")
    return result


# --- single-dimension vs compound scaling (paper Figures 3 and 8) --------------------------------

def single_dimension_config(base: ModelConfig, method: str, coefficient: float) -> ModelConfig:
    """`base` scaled along one dimension: width/depth x coefficient, or resolution = coefficient."""
    if method == "width":
        return scaled_config(base, width=coefficient)
    if method == "depth":
        return scaled_config(base, depth=coefficient)
    if method == "resolution":
        return scaled_config(base, resolution=int(coefficient))
    raise ValueError(f"Unknown single-dimension scaling {method!r}; one of {SINGLE_METHODS}.")


def match_single_dimension(base: ModelConfig, method: str, target_flops: float,
                           count: Callable[[ModelConfig], tuple[int, int]]) -> ModelConfig:
    """The `method`-only scaling of `base` whose counted FLOPs are nearest `target_flops`."""
    def flops_of(coefficient):
        return count(single_dimension_config(base, method, coefficient))[1]

    if method == "resolution":
        coefficient, _ = match_flops(flops_of, target_flops, base.resolution,
                                     2 * base.resolution, integer=True)
    else:
        coefficient, _ = match_flops(flops_of, target_flops, 1.0, 2.0)
    return single_dimension_config(base, method, coefficient)


def _study_row(method: str, k: int, config: ModelConfig, base: ModelConfig, params: int,
               flops: int, target_flops: int) -> dict:
    return {"method": method, "k": k,
            "depth_scale": config.depth_coefficient / base.depth_coefficient,
            "width_scale": config.width_coefficient / base.width_coefficient,
            "resolution_scale": config.resolution / base.resolution,
            "depth": config.depth_coefficient, "width": config.width_coefficient,
            "resolution": config.resolution, "params": params, "flops": flops,
            "target_flops": target_flops, "top_1": None, "top_1_std": None, "top_1_runs": []}


def plan_study(base: ModelConfig, *, alpha: float, beta: float, gamma: float,
               ks: Sequence[int] = (1, 2), count=None) -> list[dict]:
    """Rows of the study before training: the baseline (k=0), then for each k the compound model
    at phi=k and the width-, depth- and resolution-only models matched to its counted FLOPs."""
    if not ks or any(int(k) != k or k < 1 for k in ks):
        raise ConfigError(f"study_k={list(ks)}: needs integers >= 1 (FLOPs targets ~2^k x base).")
    if min(alpha, beta, gamma) < 1.0:
        raise ConfigError(f"alpha, beta, gamma = {alpha:g}, {beta:g}, {gamma:g}: "
                          "each must be >= 1.")
    count = count or Counter()
    params, flops = count(base)
    rows = [_study_row(BASELINE, 0, base, base, params, flops, flops)]
    for k in sorted(set(int(k) for k in ks)):
        compound = compound_config(base, k, alpha, beta, gamma)
        compound_params, target = count(compound)
        for method in SINGLE_METHODS:
            config = match_single_dimension(base, method, target, count)
            rows.append(_study_row(method, k, config, base, *count(config), target))
        rows.append(_study_row("compound", k, compound, base, compound_params, target, target))
    return rows


def study_row_config(base: ModelConfig, row: dict) -> ModelConfig:
    """The network a study row describes (its recorded absolute coefficients, not the scales:
    depth * repeats can sit exactly on an integer, where a rounding error adds a block)."""
    return _with_coefficients(base, row["depth"], row["width"], row["resolution"])


def scaling_study(experiment: ExperimentConfig, strategy, output_dir: str, *,
                  alpha: float = cfg.ALPHA, beta: float = cfg.BETA, gamma: float = cfg.GAMMA,
                  ks: Sequence[int] = (1, 2), repeats: int = 1, budget_steps: int | None = None,
                  log=None) -> dict:
    """Scale `experiment.model` by width only, depth only, resolution only and compound at
    matched FLOPs, train each `repeats` times for `budget_steps`, and write
    OUTPUT_DIR/scaling_study.json ({"settings", "rows"}) and scaling_study.png (FLOPs vs top-1).

    Runs go to OUTPUT_DIR/runs/<method>_k<k>/run<i>/. top_1 is the mean over a row's runs and
    top_1_std their standard deviation. A rerun with more `repeats` adds runs to the same table.
    """
    from efficientnet_tf import distribute

    log = log or _print
    budget_steps = budget_steps or experiment.recipe.train_steps
    _check_experiment(experiment, budget_steps)
    if repeats < 1:
        raise ConfigError(f"study_repeats={repeats}: must be >= 1.")
    ks = sorted(set(int(k) for k in ks))
    base = experiment.model
    path = os.path.join(output_dir, STUDY_FILE)
    plot_path = os.path.join(output_dir, STUDY_PLOT)
    settings = _settings(experiment, budget_steps, alpha=alpha, beta=beta, gamma=gamma, ks=ks)
    previous = _read_previous(path, settings)
    if previous is not None:
        rows = previous["rows"]
    else:
        log("Matching FLOPs: counting candidate networks...")
        rows = plan_study(base, alpha=alpha, beta=beta, gamma=gamma, ks=ks)
    chief = distribute.is_chief(strategy)

    def save():
        result = {"settings": settings, "rows": rows}
        if chief:
            write_json_atomic(path, result)
            if any(r["top_1"] is not None for r in rows):
                plot_study(rows, plot_path, title=_plot_title(base, budget_steps, rows))
        return result

    result = save()
    log(f"Scaling study: {len(rows)} networks x {repeats} run(s), {budget_steps} steps each; "
        f"results in {path}")
    log(format_study_table(rows))
    for repeat in range(repeats):
        for row in rows:
            tag = (f"[run {repeat + 1}/{repeats}] {row['method']} k={row['k']} "
                   f"({_scale_label(row)}, {row['flops'] / 1e6:.2f}M FLOPs)")
            if len(row["top_1_runs"]) > repeat:
                log(f"{tag}: finished earlier, top_1={row['top_1_runs'][repeat]:.4f}; skipped")
                continue
            log(f"{tag}: training")
            run_dir = os.path.join(output_dir, "runs", f"{row['method']}_k{row['k']}",
                                   f"run{repeat}")
            metrics = _train_and_evaluate(experiment, strategy, study_row_config(base, row),
                                          run_dir, budget_steps)
            runs = row["top_1_runs"] + [metrics["top_1"]]
            mean = sum(runs) / len(runs)
            std = math.sqrt(sum((r - mean) ** 2 for r in runs) / (len(runs) - 1)) \
                if len(runs) > 1 else None
            row.update(top_1_runs=runs, top_1=mean, top_1_std=std)
            log(f"{tag}: top_1={metrics['top_1']:.4f}")
            result = save()
    log(format_study_table(rows))
    log(f"Wrote {path} and {plot_path}")
    return result


def _scale_label(row: dict) -> str:
    method = row["method"]
    if method == "width":
        return f"w x{row['width_scale']:.3g}"
    if method == "depth":
        return f"d x{row['depth_scale']:.3g}"
    if method == "resolution":
        return f"r={row['resolution']}"
    if method == "compound":
        return (f"d x{row['depth_scale']:.3g}, w x{row['width_scale']:.3g}, "
                f"r={row['resolution']}")
    return "base"


def _plot_title(base: ModelConfig, budget_steps: int, rows: list[dict]) -> str:
    counts = sorted({len(r["top_1_runs"]) for r in rows if r["top_1_runs"]})
    runs = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    mean = ", mean +- std" if counts[-1] > 1 else ""
    return (f"Scaling {base.name} (d={base.depth_coefficient:g}, w={base.width_coefficient:g}, "
            f"{base.resolution}px), {budget_steps} steps, {runs} run(s) per point{mean}")


def format_study_table(rows: list[dict]) -> str:
    """Aligned text table of the study (top-1 as mean +- std over runs when there are several)."""
    lines = [("method", "k", "scaling", "params(K)", "MFLOPs", "target", "top-1", "runs")]
    for r in rows:
        top1 = "-" if r["top_1"] is None else f"{100 * r['top_1']:.1f}%"
        if r["top_1_std"] is not None:
            top1 += f" +-{100 * r['top_1_std']:.1f}"
        lines.append((r["method"], str(r["k"]), _scale_label(r), f"{r['params'] / 1e3:.1f}",
                      f"{r['flops'] / 1e6:.2f}", f"{r['target_flops'] / 1e6:.2f}", top1,
                      str(len(r["top_1_runs"]))))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in lines)


def plot_study(rows: list[dict], path: str, title: str | None = None) -> str:
    """FLOPs vs top-1, one line per scaling method from the shared baseline (paper Figure 8)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from efficientnet_tf.cam import write_png

    baseline = [r for r in rows if r["method"] == BASELINE and r["top_1"] is not None]
    fig = Figure(figsize=(7.5, 5.0), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    styles = {"width": ("tab:blue", "s"), "depth": ("tab:green", "^"),
              "resolution": ("tab:orange", "D"), "compound": ("tab:red", "o")}
    for p in baseline:
        ax.plot([p["flops"] / 1e6], [100 * p["top_1"]], "k*", markersize=12, label="baseline",
                zorder=3)
    for method in METHODS:
        points = baseline + sorted((r for r in rows if r["method"] == method
                                    and r["top_1"] is not None), key=lambda r: r["k"])
        if len(points) == len(baseline):
            continue
        color, marker = styles[method]
        x = [p["flops"] / 1e6 for p in points]
        y = [100 * p["top_1"] for p in points]
        err = [100 * (p["top_1_std"] or 0.0) for p in points]
        ax.errorbar(x, y, yerr=err if any(err) else None, color=color, marker=marker,
                    capsize=3, linewidth=2 if method == "compound" else 1.2,
                    label=f"{method} scaling" if method != "compound" else "compound scaling")
        for p, xi, yi in zip(points, x, y):
            if p["method"] != BASELINE:
                ax.annotate(_scale_label(p).split(",")[0] if method != "compound"
                            else f"phi={p['k']}", (xi, yi), textcoords="offset points",
                            xytext=(4, -10), fontsize=7, color=color)
    ax.set_xlabel("FLOPs (millions of multiply-adds per image)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[..., :3]
    return write_png(path, image)
