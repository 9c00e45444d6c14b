"""One conformance suite for every registered mapping and target (built-ins and plug-ins alike)."""

from __future__ import annotations

import importlib.util
import re

import pytest
import torch

from conftest import EXAMPLE
from test_deepbrain import deepbrain_graph  # noqa: F401  (fixture)
from tf2pt import registry
from tf2pt.plan import plan
from tf2pt.read import open_checkpoint
from tf2pt.testing import check_target_spec
from tf2pt.transforms import get_transform

PAIRS = [(m.name, t.name) for m in registry.list_mappings() for t in m.targets]
#: mapping -> fixture giving a real checkpoint of its source model
CHECKPOINTS = {"highresnet": lambda request: str(EXAMPLE),
               "deepbrain": lambda request: request.getfixturevalue("deepbrain_graph")}


def test_every_builtin_mapping_is_registered():
    names = {m.name for m in registry.list_mappings()}
    assert {"highresnet", "deepbrain", "highres3dnet_small", "highres3dnet_large", "dense_vnet", "vnet", "unet"} <= names


def test_mappings_command_lists_the_niftynet_zoo_with_targets(cli_run):
    r = cli_run("mappings")
    assert r.returncode == 0, r.stderr
    for name in ("highres3dnet_small", "highres3dnet_large", "dense_vnet", "vnet", "unet"):
        entry = re.search(rf"^{name}: (.*)\n((?:  .*\n?)*)", r.stdout, re.M)
        assert entry, (name, r.stdout)
        assert "NiftyNet" in entry.group(1) and "target tf2pt (default)" in entry.group(2), entry.group(0)


@pytest.mark.parametrize("mapping,target", PAIRS)
def test_target_is_well_formed(mapping, target):
    m = registry.get_mapping(mapping)
    t = m.target(target)
    if any(importlib.util.find_spec(r) is None for r in t.requires):
        pytest.skip(f"{t.requires} not installed")
    assert m.description and m.source.origin and m.source.variables
    with torch.device("meta"):
        model = t.build()
    keys = set(model.state_dict())
    for rule in t.rename:
        get_transform(rule.transform)  # a known name, a parametrised one (base:argument) or a Transform
        re.compile(rule.pattern)
    for fill in t.fill:
        assert any(fill.matches(k) for k in keys), f"fill rule {fill.pattern!r} matches no key"
    if t.spec is not None:  # a declared torch-free spec must describe this very model
        check_target_spec(m, t.name)
    modules = dict(model.named_modules())
    if m.verify is not None:
        assert set(t.layers) <= set(m.verify.layers), "target layers the mapping does not declare"
        for layer, path in t.layers.items():
            assert path in modules, (layer, path)


@pytest.mark.parametrize("mapping,target", PAIRS)
def test_real_checkpoint_converts_cleanly(mapping, target, request):
    m = registry.get_mapping(mapping)
    t = m.target(target)
    if any(importlib.util.find_spec(r) is None for r in t.requires):
        pytest.skip(f"{t.requires} not installed")
    if mapping not in CHECKPOINTS:
        pytest.skip(f"no real checkpoint known for {mapping!r}")
    with open_checkpoint(CHECKPOINTS[mapping](request)) as ckpt:
        inference = sum(v.role == "inference" for v in ckpt.variables.values())
        assert inference == m.source.variables  # the declared source facts hold
        entries, report = plan(ckpt, m, t)
        assert report.problems == []
        assert len(report.mapped) == m.source.variables
        assert len(entries) == len(report.mapped) + len(report.filled)
