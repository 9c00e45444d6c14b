"""The mapping machinery on a toy model: every variable under one rule, every key filled, exact
shapes, all problems reported at once; the registry's plug-in paths and did-you-mean."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from tf2pt import registry
from tf2pt.plan import Entry, plan
from tf2pt.write.tensors import as_tensor
from tf2pt.errors import MappingError
from tf2pt.mapping import TRAINING_ONLY, Fill, Ignore, Mapping, Refuse, Rename, Source, Target, rename_table


class Toy(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, bias=True)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, classes)


@dataclass
class Var:
    name: str
    shape: tuple
    dtype: str = "float32"
    role: str = "inference"
    role_reason: str = ""


class FakeCheckpoint:
    """Duck-typed stand-in for tf2pt.read.Checkpoint (the reader has its own tests)."""

    def __init__(self, arrays, training=()):
        self.path = "toy.ckpt"
        self.files = []
        self.notes = []
        self.arrays = arrays
        self.variables = {
            k: Var(k, v.shape, v.dtype.name, "training" if k in training else "inference", "Adam slot" if k in training else "")
            for k, v in sorted(arrays.items())
        }

    def read(self, name):
        return self.arrays[name]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def close(self):
        pass


RNG = np.random.default_rng(0)


def toy_arrays(classes=4):
    f = lambda *s: RNG.standard_normal(s).astype(np.float32)
    return {
        "net/conv/w": f(3, 3, 2, 3),
        "net/conv/b": f(3),
        "net/bn/gamma": f(3),
        "net/bn/beta": f(3),
        "net/bn/moving_mean": f(3),
        "net/bn/moving_variance": np.abs(f(3)) + 0.5,
        "net/fc/w": f(3, classes),
        "net/fc/b": f(classes),
        "net/conv/w/Adam": f(3, 3, 2, 3),
        "global_step": np.array(7, dtype=np.int64),
    }


RULES = rename_table(
    [
        (r"conv/w", "conv.weight", "conv2d"),
        (r"conv/b", "conv.bias", "identity"),
        (r"bn/gamma", "bn.weight", "identity"),
        (r"bn/beta", "bn.bias", "identity"),
        (r"bn/moving_mean", "bn.running_mean", "identity"),
        (r"bn/moving_variance", "bn.running_var", "identity"),
        (r"fc/w", "fc.weight", "dense"),
        (r"fc/b", "fc.bias", "identity"),
    ],
    scope="net/",
)
TOY = Mapping(
    name="toy",
    description="a toy",
    source=Source(origin="tests", scope="net/", variables=8),
    targets=[
        Target("torch", "the toy", Toy, RULES, fill=[Fill(r".*num_batches_tracked", 0, "not in TF")]),
    ],
    ignore=[TRAINING_ONLY],
    model_kwargs=lambda ckpt: {"classes": ckpt.variables["net/fc/b"].shape[0]},
)


def run_plan(arrays, mapping=TOY, training=("net/conv/w/Adam", "global_step")):
    ckpt = FakeCheckpoint(arrays, training)
    return ckpt, *plan(ckpt, mapping, mapping.default_target)


def test_clean_plan_maps_ignores_and_fills_everything():
    ckpt, entries, report = run_plan(toy_arrays())
    assert report.problems == []
    assert {e.key for e in entries} == set(Toy().state_dict())
    assert len(report.mapped) == 8 and len(report.ignored) == 2 and len(report.filled) == 1
    assert {r["tf"] for r in report.ignored} == {"net/conv/w/Adam", "global_step"}
    assert all("Adam slot" in r["rule"] for r in report.ignored if r["tf"].endswith("Adam"))
    sd = {e.key: as_tensor(e, ckpt) for e in entries}
    model = Toy()
    model.load_state_dict(sd, strict=True)
    assert torch.equal(sd["fc.weight"], torch.from_numpy(ckpt.arrays["net/fc/w"].T.copy()))
    assert torch.equal(sd["conv.weight"], torch.from_numpy(ckpt.arrays["net/conv/w"].transpose(3, 2, 0, 1).copy()))
    assert sd["bn.num_batches_tracked"].dtype == torch.int64


def test_model_kwargs_come_from_the_checkpoint():
    _, entries, report = run_plan(toy_arrays(classes=7))
    assert report.problems == [] and report.model_kwargs == {"classes": 7}
    assert dict((e.key, e.shape) for e in entries)["fc.weight"] == (7, 3)


def test_a_kwarg_that_contradicts_the_checkpoint_is_one_error():
    ckpt = FakeCheckpoint(toy_arrays(classes=7), ("net/conv/w/Adam", "global_step"))
    with pytest.raises(MappingError) as err:
        plan(ckpt, TOY, TOY.default_target, {"classes": 3})
    assert "classes=3" in str(err.value) and "classes=7" in str(err.value)
    _, report = plan(ckpt, TOY, TOY.default_target, {"classes": 7})  # agreeing is fine
    assert report.problems == []


def test_convert_num_classes_against_the_example_names_the_kwarg_and_both_values(example):
    """#12's acceptance: one MappingError naming num_classes, 4 and the checkpoint's 160."""
    import tf2pt

    with pytest.raises(MappingError) as err:
        tf2pt.convert(example, mapping="highresnet", num_classes=4)
    message = str(err.value)
    assert "num_classes=4" in message and "num_classes=160" in message and message.count("\n") == 0


def test_every_problem_is_reported_at_once():
    arrays = toy_arrays()
    arrays["net/conv/w"] = arrays["net/conv/w"].transpose(3, 2, 0, 1).copy()  # stored already OIHW
    arrays["net/extra/w"] = np.zeros((2, 2), np.float32)  # unknown variable
    del arrays["net/bn/moving_mean"]  # missing variable
    _, _, report = run_plan(arrays)
    text = "\n".join(report.problems)
    assert len(report.problems) == 3, text
    assert "shape mismatch for 'conv.weight'" in text and "[3, 2, 3, 3] -> conv2d -> [3, 3, 3, 2], model expects [3, 2, 3, 3]" in text
    assert "unmapped variable 'net/extra/w'" in text
    assert "'bn.running_mean' [3] is not filled" in text


def test_training_variables_are_not_mapped_when_ignored_and_flagged_when_not():
    mapping = Mapping(name="toy2", description="", source=TOY.source, targets=TOY.targets, ignore=[])
    _, _, report = run_plan(toy_arrays(), mapping)
    assert any("unmapped variable 'net/conv/w/Adam'" in p for p in report.problems)
    assert any("unmapped variable 'global_step'" in p for p in report.problems)


def test_duplicate_and_unknown_keys_and_refusals():
    rules = list(RULES) + [Rename(r"net/conv/b2", "conv.bias"), Rename(r"net/bogus", "nope.weight")]
    target = Target("torch", "", Toy, rules, fill=TOY.default_target.fill)
    mapping = Mapping(name="t", description="", source=TOY.source, targets=[target],
                      refuse=[Refuse(r"net/alpha", "PReLU is not supported")], model_kwargs=TOY.model_kwargs)
    arrays = toy_arrays()
    arrays["net/conv/b2"] = arrays["net/conv/b"]
    arrays["net/bogus"] = np.zeros(3, np.float32)
    arrays["net/alpha"] = np.zeros(3, np.float32)
    _, _, report = run_plan(arrays, mapping)
    text = "\n".join(report.problems)
    assert "'conv.bias' would be filled twice" in text
    assert "maps to 'nope.weight', which the 'torch' model does not have" in text
    assert "refused variable 'net/alpha': PReLU is not supported" in text


def test_ambiguous_rules_are_a_problem():
    rules = list(RULES) + [Rename(r"net/fc/.*", "fc.bias")]
    target = Target("torch", "", Toy, rules, fill=TOY.default_target.fill)
    mapping = Mapping(name="t", description="", source=TOY.source, targets=[target], model_kwargs=TOY.model_kwargs)
    _, _, report = run_plan(toy_arrays(), mapping)
    assert sum("matches 2 rename rules" in p for p in report.problems) == 2


def test_variable_count_differences_are_noted():
    arrays = toy_arrays()
    mapping = Mapping(name="t", description="", source=Source("tests", variables=9), targets=TOY.targets,
                      model_kwargs=TOY.model_kwargs)
    _, _, report = run_plan(arrays, mapping)
    assert report.problems == []
    assert any("9 inference variables; this checkpoint has 8" in n for n in report.notes)


def test_unknown_target_and_mapping_names_suggest():
    with pytest.raises(MappingError, match="did you mean 'torch'"):
        TOY.target("torhc")
    with pytest.raises(MappingError, match="did you mean 'highresnet'"):
        registry.get_mapping("highresnt")


def test_duplicate_targets_are_an_error():
    with pytest.raises(MappingError, match="twice"):
        Mapping(name="x", description="", source=TOY.source, targets=[TOY.targets[0], TOY.targets[0]])


MAPPING_FILE = textwrap.dedent(
    """
    from torch import nn
    from tf2pt.mapping import Mapping, Rename, Source, Target

    class Lin(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 3)

    MAPPING = Mapping(
        name="filemap", description="from a file", source=Source(origin="a test"),
        targets=[Target("lin", "a linear layer", Lin, [Rename("fc/w", "fc.weight", "dense"), Rename("fc/b", "fc.bias")])],
    )
    """
)


def test_mapping_from_an_explicit_file(tmp_path):
    path = tmp_path / "filemap.py"
    path.write_text(MAPPING_FILE)
    m = registry.get_mapping(str(path))
    assert m.name == "filemap" and m.origin == str(path)
    model = registry.build_model(str(path))
    assert tuple(model.fc.weight.shape) == (3, 2)


def test_a_mapping_object_reaches_another_process_by_description(tmp_path):
    """The TF child of verify gets the mapping itself, not only a name: built-ins by name, files
    by path, objects built in code by the module that holds them, whatever their name."""
    import json
    import subprocess
    import sys

    assert registry.describe(registry.get_mapping("highresnet")) == {"name": "highresnet"}
    path = tmp_path / "filemap.py"
    path.write_text(MAPPING_FILE)
    assert registry.describe(registry.get_mapping(str(path))) == {"file": str(path.resolve())}
    # built in code, bound to a module-level name that is not MAPPING
    module = tmp_path / "built_in_code.py"
    module.write_text(MAPPING_FILE.replace("MAPPING = Mapping(", "MINE = Mapping(").replace('name="filemap"', 'name="coded"')
                      + "\nfrom tf2pt.registry import describe\nimport json\nprint(json.dumps(describe(MINE)))\n")
    env = dict(__import__("os").environ, PYTHONPATH=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", "import built_in_code"], capture_output=True, text=True, env=env, cwd=tmp_path)
    where = json.loads(out.stdout.strip().splitlines()[-1])
    assert where["module"] == "built_in_code" and where["attr"] == "MINE"
    code = f"from tf2pt.registry import from_description; print(from_description({where!r}).name)"
    back = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)  # no PYTHONPATH: by file
    assert back.returncode == 0 and back.stdout.split()[-1] == "coded", back.stderr
    # an object no module holds cannot be sent: one clear error
    loose = registry.get_mapping(str(path))
    from dataclasses import replace

    with pytest.raises(MappingError, match="no module holds it"):
        registry.describe(replace(loose, origin="", name="loose"))


def test_bad_mapping_files_give_one_line_errors(tmp_path):
    with pytest.raises(MappingError, match="not found"):
        registry.get_mapping(str(tmp_path / "nope.py"))
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(MappingError, match="failed to load: RuntimeError: boom"):
        registry.get_mapping(str(bad))
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    with pytest.raises(MappingError, match="does not define MAPPING"):
        registry.get_mapping(str(empty))


def test_entry_point_plugins_are_found_and_duplicates_rejected(monkeypatch):
    import importlib.metadata as md

    plugin = Mapping(name="plug", description="a plug-in", source=Source(origin="x"), targets=TOY.targets)
    clash = Mapping(name="highresnet", description="a clash", source=Source(origin="x"), targets=TOY.targets)
    eps = {"plug": plugin, "clash": clash}

    class EP:
        def __init__(self, name):
            self.name, self.value = name, f"pkg:{name}"

        def load(self):
            return eps[self.name]

    def fake_entry_points(group=None):
        assert group == registry.ENTRY_POINT_GROUP
        return [EP(n) for n in selected]

    monkeypatch.setattr(md, "entry_points", fake_entry_points)
    selected = ["plug"]
    assert "plug" in registry.all_mappings(refresh=True)
    selected = ["plug", "clash"]
    with pytest.raises(MappingError, match="'highresnet' is defined twice"):
        registry.all_mappings(refresh=True)
    selected = []
    registry.all_mappings(refresh=True)


def test_one_name_loads_one_builtin_unless_a_plugin_claims_it(monkeypatch):
    """``-m highresnet`` imports just that module; a plug-in registered under the same name
    sends the lookup through the full scan, which reports the clash."""
    import importlib.metadata as md
    import sys

    monkeypatch.setattr(registry, "_cache", None)
    monkeypatch.delitem(sys.modules, "tf2pt.mappings.deepbrain", raising=False)
    assert registry.get_mapping("highresnet").name == "highresnet"
    assert "tf2pt.mappings.deepbrain" not in sys.modules and registry._cache is None

    class EP:
        name, value = "highresnet", "pkg:clash"

        def load(self):
            return Mapping(name="highresnet", description="a clash", source=Source(origin="x"), targets=TOY.targets)

    monkeypatch.setattr(registry, "_plugins_declared", lambda: True)
    monkeypatch.setattr(md, "entry_points", lambda group=None: [EP()])
    with pytest.raises(MappingError, match="'highresnet' is defined twice"):
        registry.get_mapping("highresnet")
    monkeypatch.setattr(md, "entry_points", lambda group=None: [])
    registry.all_mappings(refresh=True)


def test_the_literal_prefix_never_rejects_a_real_match():
    """Rules are filtered by their literal prefix before any regex is compiled (a mapping of
    hundreds of literal rules compiles only those it uses): a full match must always pass."""
    import random
    import re
    import warnings

    from tf2pt.mapping import _literal_prefix

    assert _literal_prefix(r"HighRes3DNet/res_1_0/bn_0/gamma") == ("HighRes3DNet/res_1_0/bn_0/gamma", True)
    assert _literal_prefix(r"HighRes3DNet/conv_0_bn_(?:relu|prelu)/conv_/w") == ("HighRes3DNet/conv_0_bn_", False)
    assert _literal_prefix("abc|def") == ("", False) and _literal_prefix("ab?c") == ("a", False)
    rng = random.Random(0)
    alphabet = "ab.|*?+()[]\\{}2d"
    checked = 0
    for _ in range(5000):
        pattern = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                rx = re.compile(pattern)
            except re.error:
                continue
        rule = Rename(pattern, "k")
        for _ in range(10):
            text = "".join(rng.choice("ab.|*?+()[]\\{}2d") for _ in range(rng.randint(0, 6)))
            if rx.fullmatch(text):
                checked += 1
                assert rule.could_match(text), (pattern, text)
    assert checked > 100


def test_a_bad_regex_in_a_rule_is_a_mapping_error():
    with pytest.raises(MappingError, match="bad regular expression"):
        Rename("net/(unclosed", "k").match("net/(unclosed")
