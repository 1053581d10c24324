"""The package's layers import downward only: an AST check over every module of ``srs_jax``.

Layers, bottom to top (docs/architecture.md, first section); a module may import modules of its
own layer (without cycles) and of lower layers, never of higher ones (``LAYERS`` below).
"""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# srs_jax sub-packages / modules by layer (lower number = lower layer).
LAYERS = {
    "srs_jax.atomic_files": 0,
    "srs_jax.config": 0,
    "srs_jax.data": 1,
    "srs_jax.metrics": 2,
    "srs_jax.parallel": 3,
    "srs_jax.models": 4,
    "srs_jax.losses": 5,
    "srs_jax.training": 6,
    "srs_jax.inference": 7,
    "srs_jax.export": 7,
    "srs_jax.experiments": 8,
}
# Imports allowed inside functions: optional or heavy dependencies only needed by one feature.
OPTIONAL = {"tensorboardX", "matplotlib", "pyarrow", "polars", "pandas", "torch", "IPython"}
# Imports deliberately inside one function for start-up time, (module, imported module) -> reason.
LAZY_FOR_START_UP = {
    ("srs_jax.config.load", "jax"): "the commands check configs and run folders before JAX "
                                     "loads; only resolving compute_dtype='auto' needs the backend",
}


def _modules(package: str):
    base = os.path.join(ROOT, package)
    for dirpath, _, files in os.walk(base):
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                yield (rel[: -len(".__init__")] if rel.endswith(".__init__") else rel), path


SRS = dict(_modules("srs_jax"))
KERNELS = dict(_modules("pallas_kernels"))


def _imports(name: str, path: str):
    """``(imported module, imported names, line, inside a function)`` for every import."""
    tree = ast.parse(open(path).read(), path)
    is_pkg = path.endswith("__init__.py")
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, (), child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                mod = child.module or ""
                if child.level:
                    parts = name.split(".")
                    keep = len(parts) - child.level + (1 if is_pkg else 0)
                    mod = ".".join(parts[:keep] + ([mod] if mod else []))
                names = tuple(a.name for a in child.names)
                out.append((mod, names, child.lineno, in_function))
                # ``from pkg import sub`` imports the module ``pkg.sub`` too (when it is one).
                out.extend((f"{mod}.{n}", (), child.lineno, in_function) for n in names
                           if f"{mod}.{n}" in SRS or f"{mod}.{n}" in KERNELS)
            visit(child, inner)

    visit(tree, False)
    return out


def _layer(module: str):
    best = None
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, rank)
    return best


def _internal_edges():
    edges = {}
    for name, path in SRS.items():
        for mod, _, line, _ in _imports(name, path):
            if mod in SRS and mod != name:
                edges.setdefault(name, {}).setdefault(mod, line)
    return edges


def test_every_module_has_a_layer():
    missing = [m for m in SRS if m != "srs_jax" and _layer(m) is None]
    assert not missing, f"add these modules to LAYERS: {missing}"


def test_imports_go_downward_only():
    bad = []
    for name, targets in _internal_edges().items():
        if name == "srs_jax":
            continue
        src = _layer(name)
        for mod, line in targets.items():
            dst = _layer(mod)
            if dst is not None and dst[1] > src[1]:
                bad.append(f"{SRS[name]}:{line}: {name} ({src[0]}) imports {mod} ({dst[0]}), a higher layer")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    # Package __init__ files re-export their children; ``pkg -> pkg.child`` is not a cycle edge.
    edges = {n: {m for m in t if not m.startswith(n + ".")} for n, t in _internal_edges().items()}
    cycles, state = [], {}

    def dfs(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                dfs(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            dfs(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_imports_inside_functions_except_optional_dependencies():
    bad = {}
    for name, path in SRS.items():
        for mod, _, line, in_function in _imports(name, path):
            if (in_function and mod.split(".")[0] not in OPTIONAL
                    and (name, mod) not in LAZY_FOR_START_UP):
                bad.setdefault(f"{os.path.relpath(path, ROOT)}:{line}", mod)
    assert not bad, "\n".join(f"{where}: import of {mod} inside a function"
                               for where, mod in sorted(bad.items()))


def test_no_module_uses_another_modules_private_names():
    bad = []
    for name, path in {**SRS, **KERNELS}.items():
        for mod, names, line, _ in _imports(name, path):
            if not (mod.startswith("srs_jax") or mod.startswith("pallas_kernels")):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            private += [p for p in mod.split(".") if p.startswith("_") and p != "__init__"]
            if private:
                bad.append(f"{path}:{line}: {name} imports private {private} from {mod}")
        tree = ast.parse(open(path).read(), path)
        # Names bound to a module of this project (``from srs_jax.x import y as z``, ``import a.b``).
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("srs_jax", "pallas_kernels"):
                aliases.update(a.asname or a.name for a in node.names
                               if f"{node.module}.{a.name}" in SRS or f"{node.module}.{a.name}" in KERNELS)
            elif isinstance(node, ast.Import):
                aliases.update(a.asname or a.name for a in node.names
                               if a.name.split(".")[0] in ("srs_jax", "pallas_kernels"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                    and node.value.id in aliases):
                bad.append(f"{path}:{node.lineno}: {name} uses {node.value.id}.{node.attr}")
    assert not bad, "\n".join(sorted(set(bad)))


def test_pallas_kernels_never_imports_srs_jax():
    bad = [f"{path}:{line}: imports {mod}" for name, path in KERNELS.items()
           for mod, _, line, _ in _imports(name, path) if mod.split(".")[0] == "srs_jax"]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("order", [sorted(LAYERS.items(), key=lambda kv: kv[1])])
def test_architecture_doc_lists_the_layers_in_this_order(order):
    doc = open(os.path.join(ROOT, "docs", "architecture.md")).read()
    first = doc.split("\n## ", 2)[1] if "\n## " in doc else doc
    positions = [first.find(prefix) for prefix, _ in order if prefix not in ("srs_jax.atomic_files",)]
    assert all(p >= 0 for p in positions), "docs/architecture.md's first section must name every layer"
    assert positions == sorted(positions), "docs/architecture.md lists the layers out of order"


def test_no_module_level_state_filled_at_run_time():
    """No module starts with an empty list/dict/set to fill later (global mutable state):
    caches are ``functools.lru_cache`` functions, everything else is passed in."""
    empty = lambda v: ((isinstance(v, (ast.List, ast.Dict, ast.Set)) and not getattr(v, "elts", getattr(v, "keys", None)))  # noqa: E731
                       or (isinstance(v, ast.Call) and isinstance(v.func, ast.Name)
                           and v.func.id in ("list", "dict", "set") and not v.args and not v.keywords))
    bad = []
    for name, path in {**SRS, **KERNELS}.items():
        for node in ast.parse(open(path).read(), path).body:
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if value is not None and empty(value):
                bad.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}: module-level empty container")
    assert not bad, "\n".join(bad)


def test_lazy_imports_for_start_up_are_still_needed():
    """Every allow-listed lazy import exists (a stale entry would widen the rule for nothing)."""
    found = {(name, mod) for name, path in SRS.items() for mod, _, _, inside in _imports(name, path)
             if inside}
    assert set(LAZY_FOR_START_UP) <= found, set(LAZY_FOR_START_UP) - found
