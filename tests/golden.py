"""The official reference's own outputs (`../shared/golden`, next to the repository), for parity.

Each `.npz` holds the reference's inputs and outputs for one unit plus `meta_json` (the exact
arguments). Tests skip with a reason when the folder is absent (a checkout without it); CI has it.
"""
import json
from pathlib import Path

import numpy as np
import pytest

GOLDEN_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "golden"


def load_golden(name: str):
    """(arrays, meta) of GOLDEN_DIR/name; skips the calling test when the fixtures are absent."""
    path = GOLDEN_DIR / name
    if not path.exists():
        pytest.skip(f"golden fixtures not found at {path} (the reference's outputs live next to "
                    "the repository in shared/golden)")
    if path.suffix == ".json":
        return None, json.loads(path.read_text())
    arrays = dict(np.load(path))
    meta = json.loads(str(arrays.pop("meta_json"))) if "meta_json" in arrays else {}
    return arrays, meta
