"""The corruption matrix: every kind of broken input, through every command.

Each case is made from a copy of the bundled example (real TF bytes), damaged or re-forged with
correct block CRCs where the point is to get past them. In every case ``inspect --verify``,
``dump``, ``convert`` and ``verify`` must exit 2 with one line naming the file and the problem,
print no traceback and leave no output file behind. (Plain ``inspect`` reads only the index;
``--verify`` makes it read and check every tensor.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bundle_tools import copy_bundle, entry_proto, flip_byte, truncate, write_table
from conftest import EXAMPLE
from tf2pt.read._sstable import read_table
from tf2pt.cli import cli
from tf2pt.read import open_checkpoint
from tf2pt.read.bundle import _parse_entry

EXAMPLE_PREFIX = open_checkpoint(EXAMPLE).prefix
KERNEL = "HighRes3DNet/conv_0_bn_relu/conv_/w"  # an inference variable every command reads


def _entries(prefix):
    return read_table(Path(prefix + ".index").read_bytes())


def _forge(prefix, edit):
    """Rewrite ``prefix.index`` with ``edit(items)`` applied, with valid block CRCs."""
    items = _entries(prefix)
    write_table(prefix + ".index", edit(items))


def _with_entry(items, key: bytes, **fields):
    out = []
    for k, v in items:
        if k == key:
            e = _parse_entry(v)
            f = dict(dtype=e.dtype, shape=e.shape, shard=e.shard, offset=e.offset, size=e.size, crc=e.crc)
            f.update(fields)
            v = entry_proto(**f)
        out.append((k, v))
    return out


def _kernel_offset(prefix):
    with open_checkpoint(prefix) as c:
        return c._entries[KERNEL].offset


def make_case(name: str, d: Path) -> str:
    """Build the broken input ``name`` under ``d``; returns the path to pass to tf2pt."""
    p = copy_bundle(EXAMPLE_PREFIX, d)
    index, data = p + ".index", p + ".data-00000-of-00001"
    n_index, n_data = os.path.getsize(index), os.path.getsize(data)
    kind, _, arg = name.partition("@")
    if kind == "truncated-index":
        truncate(index, int(float(arg) * n_index) if "." in arg else int(arg))
    elif kind == "truncated-data":
        truncate(data, int(float(arg) * n_data) if "." in arg else int(arg))
    elif kind == "flipped-data-byte":
        flip_byte(data, _kernel_offset(p) + 7)
    elif kind == "flipped-index-byte":
        flip_byte(index, int(float(arg) * n_index))
    elif kind == "wrong-magic":
        flip_byte(index, n_index - 3)
    elif kind == "empty-index":
        truncate(index, 0)
    elif kind == "empty-data":
        truncate(data, 0)
    elif kind == "missing-shard":
        os.unlink(data)
    elif kind == "entry-past-end":
        _forge(p, lambda items: _with_entry(items, KERNEL.encode(), offset=n_data - 100))
    elif kind == "size-mismatch":
        _forge(p, lambda items: _with_entry(items, KERNEL.encode(), shape=[3, 3, 3, 1, 17]))
    elif kind == "absurd-shape":
        _forge(p, lambda items: _with_entry(items, KERNEL.encode(), shape=[1 << 20, 1 << 20, 3, 1, 16]))
    elif kind == "unsupported-dtype":
        _forge(p, lambda items: _with_entry(items, KERNEL.encode(), dtype={"variant": 21, "resource": 20}[arg]))
    elif kind == "non-utf8-name":
        _forge(p, lambda items: sorted(items + [(b"HighRes3DNet/\xff\xfe/w", items[1][1])]))
    elif kind == "duplicate-key":
        _forge(p, lambda items: sorted(items + [items[5]]))
    elif kind == "no-checkpoint-dir":
        shutil.rmtree(d)
        d.mkdir()
        return str(d)
    elif kind == "foreign-state-file":
        for f in d.glob("model.ckpt-33000.*"):
            f.unlink()
        (d / "checkpoint").write_text('model_checkpoint_path: "/data/other-machine/run7/model.ckpt-33000"\n')
        return str(d)
    else:
        raise AssertionError(name)
    return p


CASES = [
    "truncated-index@0", "truncated-index@10", "truncated-index@47", "truncated-index@0.5", "truncated-index@-1",
    "truncated-data@0", "truncated-data@100", "truncated-data@0.5", "truncated-data@-1",
    "flipped-data-byte", "flipped-index-byte@0.1", "flipped-index-byte@0.5", "flipped-index-byte@0.95",
    "wrong-magic", "empty-index", "empty-data", "missing-shard",
    "entry-past-end", "size-mismatch", "absurd-shape", "unsupported-dtype@variant", "unsupported-dtype@resource",
    "non-utf8-name", "duplicate-key", "no-checkpoint-dir", "foreign-state-file",
]
COMMANDS = {
    "inspect": lambda ck, out: ["inspect", ck, "--all", "--verify"],
    "dump": lambda ck, out: ["dump", ck, "--state-dict", str(out / "tf.safetensors"), "--csv", str(out / "vars.csv")],
    "convert": lambda ck, out: ["convert", ck, "--mapping", "highresnet", "-o", str(out / "model.pth"),
                                "--report", str(out / "report.json")],
    "verify": lambda ck, out: ["verify", ck, "--mapping", "highresnet", "--synthetic", "16", "16", "16",
                               "--json", str(out / "verify.json"), "--figure", str(out / "fig.png")],
}


@pytest.mark.parametrize("case", CASES)
def test_corruption_matrix(case, tmp_path):
    """Every command, one typed error line, exit 2, no traceback, no output file."""
    # fix relative truncation sizes that need the file sizes
    name = case.replace("@-1", "@" + str(os.path.getsize(EXAMPLE_PREFIX + (".index" if "index" in case else ".data-00000-of-00001")) - 1))
    ck = make_case(name, tmp_path / "ck")
    for command, args in COMMANDS.items():
        out = tmp_path / f"out-{command}"
        out.mkdir()
        result = CliRunner().invoke(cli, args(ck, out), catch_exceptions=False)
        err = result.stderr.strip().splitlines()
        assert result.exit_code == 2, (command, result.output)
        assert len(err) == 1 and err[0].startswith("tf2pt: error: "), (command, result.stderr)
        assert "Traceback" not in result.output
        assert any(part in err[0] for part in (os.path.basename(ck), os.path.dirname(ck), "ck")), (command, err[0])
        assert list(out.iterdir()) == [], (command, list(out.iterdir()))


def test_matrix_through_real_processes(tmp_path, run_cli):
    """The same guarantees in real subprocesses (real exit codes, real stderr) for a few cases."""
    for case in ("flipped-data-byte", "absurd-shape", "foreign-state-file"):
        ck = make_case(case, tmp_path / case)
        out = tmp_path / f"out-{case}"
        out.mkdir()
        r = run_cli("convert", ck, "-m", "highresnet", "-o", out / "m.safetensors")
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
        assert list(out.iterdir()) == []


def test_plain_inspect_reads_only_the_index(tmp_path):
    ck = make_case("flipped-data-byte", tmp_path / "ck")
    result = CliRunner().invoke(cli, ["inspect", ck])
    assert result.exit_code == 0  # the listing is right: the index is intact
    result = CliRunner().invoke(cli, ["inspect", ck, "--verify"])
    assert result.exit_code == 2 and f"'{KERNEL}' fails its CRC32C check" in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_write_leaves_nothing_at_the_target(sig, tmp_path, tf):
    """A write interrupted mid-stream (Ctrl-C, or kill -9) leaves no file at the target path."""
    from tf2pt.testing.tf_fixtures import write_big

    prefix = write_big(str(tmp_path), total_bytes=400 << 20, tensors=40)
    target = tmp_path / "out.safetensors"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, "-m", "tf2pt", "dump", prefix, "--state-dict", str(target), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not any(".tf2pt-tmp-" in p.name and p.stat().st_size > 0 for p in tmp_path.iterdir()):
        time.sleep(0.002)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert not target.exists()
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
        assert not [p for p in tmp_path.iterdir() if ".tf2pt-tmp-" in p.name]  # cleaned up too
    else:
        assert proc.returncode == -signal.SIGKILL


def test_every_torch_load_is_weights_only():
    """Nothing untrusted is unpickled: every torch.load in tf2pt passes weights_only=True."""
    import re

    root = Path(__file__).resolve().parents[1]
    for path in list((root / "tf2pt").rglob("*.py")) + list((root / "examples").rglob("*.py")):
        for call in re.findall(r"torch\.load\([^)]*\)", path.read_text()):
            assert "weights_only=True" in call, (path, call)
