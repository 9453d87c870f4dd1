"""The shape of the code: one-way layers, no near-same module names, lazy heavy imports, eval_mode."""
from __future__ import annotations

import ast
import difflib
import importlib
import os
import pkgutil
import subprocess
import sys
from typing import Dict, Set

import pytest
import torch

import sparse_lc
from sparse_lc.utils import eval_mode

PACKAGE = os.path.dirname(sparse_lc.__file__)

# Each part of the library may import only parts of a lower tier (and its own part).
TIERS = [
    {"errors"},
    {"registry", "utils", "checkpoint", "schema", "rho"},
    {"config_keys"},
    {"ops"},
    {"layers"},
    {"backbones", "assembly", "cuda_graphs"},
    {"result"},
    {"cascade"},
    {"data"},
    {"builder", "config"},
    {"analysis"},
    {"evaluation", "testing"},
    {"visualization"},
    {"training", "apis"},
    {"cli", "__main__"},
]
TIER_OF = {part: level for level, parts in enumerate(TIERS) for part in parts}


def library_modules() -> Dict[str, str]:
    """Dotted module name -> file, for every module of sparse_lc."""
    modules = {}
    for info in pkgutil.walk_packages([PACKAGE], "sparse_lc."):
        spec = importlib.util.find_spec(info.name)
        if not info.name.endswith("__main__"):  # importing it would run the command line
            modules[info.name] = spec.origin
    return modules


def part_of(module: str) -> str:
    """``sparse_lc.training.loop`` -> ``training``; ``sparse_lc`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def runtime_imports(module: str, path: str) -> Set[str]:
    """The sparse_lc modules ``module`` imports at run time (type-checking-only imports excluded)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n.startswith("sparse_lc")}
    return found


def test_layers_import_one_way_only():
    """ops -> layers -> backbones -> cascade -> everything else; nothing below imports above."""
    bad = []
    for module, path in library_modules().items():
        own = part_of(module)
        if own not in TIER_OF:
            pytest.fail(f"{module}: part {own!r} has no tier in this test; place it")
        for target in runtime_imports(module, path):
            other = part_of(target)
            if other and other != own and other in TIER_OF and TIER_OF[other] >= TIER_OF[own]:
                bad.append(f"{module} imports {target}")
    assert not bad, "\n".join(bad)


def test_no_two_modules_share_a_name_or_nearly():
    names = {}
    for module in library_modules():
        leaf = module.rsplit(".", 1)[1]
        if leaf not in ("__init__", "__main__"):
            names.setdefault(leaf, []).append(module)
    assert all(len(v) == 1 for v in names.values()), {k: v for k, v in names.items() if len(v) > 1}
    leaves = sorted(names)
    close = [(a, b) for i, a in enumerate(leaves) for b in leaves[i + 1:]
             if difflib.SequenceMatcher(None, a, b).ratio() >= 0.8]
    assert not close, close


def test_no_package_attribute_shadows_a_submodule():
    """``import sparse_lc.X.Y as m`` gives the module, never a function of the same name."""
    for module in library_modules():
        imported = importlib.import_module(module)
        parent, _, leaf = module.rpartition(".")
        if parent:
            assert getattr(importlib.import_module(parent), leaf) is imported, module


def _imported_after(code: str) -> Set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_command_line_parses_without_torch():
    """--help, --version and argument errors need neither torch nor spconv: they answer at once."""
    loaded = _imported_after("import sparse_lc.cli; sparse_lc.cli.build_parser().format_help()")
    assert "torch" not in loaded and "spconv" not in loaded and "numpy" not in loaded
    for argv in (["--help"], ["--version"], ["segment", "--bogus"], ["bench", "--rho", "2"]):
        proc = subprocess.run([sys.executable, "-m", "sparse_lc", *argv], capture_output=True, text=True)
        assert proc.returncode in (0, 2) and "Traceback" not in proc.stderr, (argv, proc.stderr)


@pytest.mark.slow
def test_spconv_loads_with_the_first_sparse_stage():
    code = ("import torch, sparse_lc\n"
            "m = sparse_lc.LayerCascade(sparse_lc.build_backbone('tiny'), num_classes=3).eval()\n"
            "x = torch.randn(1, 3, 32, 32)\n"
            "m(x, rho=1.0, execution='dense')\n"
            "assert 'spconv' not in __import__('sys').modules\n"
            "m(x, rho=1.0, execution='sparse')\n"
            "assert 'spconv' in __import__('sys').modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names_load_on_first_use():
    for name in sparse_lc.__all__:
        assert getattr(sparse_lc, name) is not None
    assert "LayerCascade" in dir(sparse_lc) and sparse_lc.testing.assert_sparse_matches_dense
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sparse_lc.nope  # noqa: B018


def test_eval_mode_restores_each_module_also_after_an_error(tiny_model):
    tiny_model.train()
    tiny_model.backbone.layer3.eval()  # a frozen stage inside a training model
    with pytest.raises(RuntimeError):
        with eval_mode(tiny_model):
            assert not any(m.training for m in tiny_model.modules())
            raise RuntimeError("boom")
    assert tiny_model.training and tiny_model.heads[0].training
    assert not tiny_model.backbone.layer3.training


@pytest.mark.slow
def test_predict_keeps_the_modes_of_a_partly_frozen_model(tiny_model):
    tiny_model.train()
    tiny_model.backbone.layer2.eval()
    tiny_model.predict(torch.zeros(1, 3, 16, 16))
    assert tiny_model.training and not tiny_model.backbone.layer2.training
