"""The package imports cheaply and without cycles, and `import_tensorflow` hides only the no-GPU
lines."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from efficientnet_tf.tf_quiet import drop_no_gpu_lines

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = REPO_ROOT / "efficientnet_tf"
PACKAGES = ["efficientnet_tf", "efficientnet_tf.data", "efficientnet_tf.training"]


@pytest.fixture(autouse=True)
def _clear_keras_session():
    """Overrides conftest's fixture: TensorFlow runs in subprocesses here only."""
    yield


def run_python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=REPO_ROOT, env={**os.environ, **env})


def test_package_import_loads_no_tensorflow():
    proc = run_python(
        "import sys, efficientnet_tf, efficientnet_tf.config, efficientnet_tf.data, "
        "efficientnet_tf.training\n"
        "dir(efficientnet_tf), dir(efficientnet_tf.data), dir(efficientnet_tf.training)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_every_public_name_resolves():
    """Also after a submodule of the same name as a public name (data.prepare) was imported."""
    proc = run_python(
        "import importlib, efficientnet_tf.data.prepare\n"
        f"for package in {PACKAGES!r}:\n"
        "    module = importlib.import_module(package)\n"
        "    assert set(module.__all__) <= set(dir(module)), package\n"
        "    for name in module.__all__:\n"
        "        getattr(module, name)\n"
        "assert callable(efficientnet_tf.data.prepare)\n"
        "print('ok')", TF_CPP_MIN_LOG_LEVEL="2")
    assert proc.stdout.strip() == "ok", proc.stderr[-4000:]


# --- the import graph ---------------------------------------------------------------------------

def package_modules(package_dir):
    """{module name: path} for every module under `package_dir`; a package is its __init__.py."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def lazy_exports(modules):
    """{(package, name): defining module}, from each package __init__'s `_EXPORTS` table."""
    table = {}
    for package, path in modules.items():
        if path.name != "__init__.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "_EXPORTS":
                for submodule, names in ast.literal_eval(node.value).items():
                    table.update({(package, name): f"{package}.{submodule}" for name in names})
    return table


def import_edges(modules):
    """{module: {module it imports: line}}, over every import statement of each module."""
    lazy = lazy_exports(modules)
    edges = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = edges[name] = {}
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0]
                    base = f"{anchor}.{node.module}" if node.module else anchor
                targets = [next((t for t in (f"{base}.{alias.name}", lazy.get((base, alias.name)))
                                 if t in modules), base) for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:  # `import a.b.c` of a non-module c
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.setdefault(target, node.lineno)
    return edges


def cycles(edges):
    """The shortest cycle through the first module of each strongly connected component of more
    than one module (Tarjan's algorithm)."""
    index, low, stack, components = {}, {}, [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while v not in component:
                component.add(stack.pop())
            if len(component) > 1:
                components.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [shortest_cycle(edges, component) for component in components]


def shortest_cycle(edges, component):
    start = min(component)
    paths, frontier = {start: [start]}, [start]
    while True:  # breadth first; a strongly connected component always leads back to start
        frontier, previous = [], frontier
        for v in previous:
            for w in sorted(edges[v]):
                if w == start:
                    return paths[v] + [start]
                if w in component and w not in paths:
                    paths[w] = paths[v] + [w]
                    frontier.append(w)


def test_import_graph_has_no_cycles():
    """No module of the package imports itself through others.

    An edge is a module of the package that an import statement names, anywhere in the file
    (inside functions too): `import a.b` -> a.b; `from a import b` -> a.b if that is a module,
    else the module that a's lazy `_EXPORTS` table says defines b (the statement imports it), else
    a; relative imports alike. A package `__init__` is an ordinary source: its lazy table is no
    edge of its own, because importing the package imports none of those modules. Attribute reads
    through a package (`data_lib.build_dataset`) are not import statements and are not seen.
    """
    edges = import_edges(package_modules(PACKAGE))
    found = cycles(edges)
    report = "\n".join(" -> ".join(f"{a} (line {edges[a][b]})" for a, b in zip(c, c[1:]))
                       + f" -> {c[-1]}" for c in found)
    assert not found, f"import cycles (module (line of its import) -> ...):\n{report}"


def test_import_graph_rules(tmp_path):
    files = {
        "__init__.py": "from pkg.util import helper\n_EXPORTS = {'a': ('A',)}\n",
        "a.py": "from . import b\nimport pkg.sub.c\n",
        "b.py": "def f():\n    from pkg import A\n",
        "sub/__init__.py": "from .. import util\n",
        "sub/c.py": "import os\nfrom os import path\nfrom pkg.sub import not_a_module\n",
        "util.py": "",
    }
    for rel, text in files.items():
        (tmp_path / "pkg" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / rel).write_text(text)
    edges = import_edges(package_modules(tmp_path / "pkg"))
    assert edges == {"pkg": {"pkg.util": 1}, "pkg.a": {"pkg.b": 1, "pkg.sub.c": 2},
                     "pkg.b": {"pkg.a": 2}, "pkg.sub": {"pkg.util": 1},
                     "pkg.sub.c": {"pkg.sub": 3}, "pkg.util": {}}
    assert cycles(edges) == [["pkg.a", "pkg.b", "pkg.a"]]


# --- quiet TensorFlow import ----------------------------------------------------------------------

NO_GPU_LINES = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    b"I0000 00:00:1796078746.381678   25381 cudart_stub.cc:31] Could not find cuda drivers on "
    b"your machine, GPU will not be used.\n"
    b"E0000 00:00:1796078759.482085   25462 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    b"CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n"
    b"E0000 00:00:1796078759.482085   25462 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    b"CUDA error: Failed call to cuInit: CUDA_ERROR_NO_DEVICE: no CUDA-capable device is "
    b"detected\n"
    b"2025-01-08 14:55:54.925839: E external/local_xla/xla/stream_executor/cuda/"
    b"cuda_driver.cc:152] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: "
    b"UNKNOWN ERROR (303)\n")


def test_filter_drops_only_the_no_gpu_lines():
    kept = (b"E0000 00:00:1.5   7 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA "
            b"error: Failed call to cuInit: CUDA_ERROR_UNKNOWN: unknown error\n"   # broken GPU
            b"I0000 00:00:1.5   7 cpu_feature_guard.cc:227] This TensorFlow binary is optimized\n"
            b"W tf: Could not find cuda drivers on your machine, GPU will not be used.\n"
            b"\xff not utf-8\r\n"
            b"no newline at the end")
    mixed = b"".join(NO_GPU_LINES + line for line in kept.splitlines(keepends=True))
    assert drop_no_gpu_lines(mixed) == kept


def test_import_tensorflow_hides_the_no_gpu_lines_and_nothing_else():
    """A meta-path hook writes, from C and Python, to stderr inside the window."""
    proc = run_python(
        "import importlib.abc, os, sys\n"
        "class Noisy(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'tensorflow':\n"
        "            os.write(2, b'E0000 00:00:1.0   1 genuine.cc:1] a real C++ error\\n')\n"
        "            print('a Python warning', file=sys.stderr)\n"
        "sys.meta_path.insert(0, Noisy())\n"
        "from efficientnet_tf.tf_quiet import import_tensorflow\n"
        "tf = import_tensorflow()\n"
        "print(tf.config.list_physical_devices())\n"
        "tf.constant(1.0) + 1\n"
        "print('after the window', file=sys.stderr)", TF_CPP_MIN_LOG_LEVEL="2")
    assert proc.returncode == 0, proc.stderr
    assert "physical_device:CPU:0" in proc.stdout
    for line in proc.stderr.splitlines():
        assert "cuInit" not in line and "cudart_stub" not in line, proc.stderr
    genuine = ["E0000 00:00:1.0   1 genuine.cc:1] a real C++ error", "a Python warning",
               "after the window"]
    assert [line for line in proc.stderr.splitlines() if line in genuine] == genuine, proc.stderr
