"""Shared fixtures: checkpoints written by real TensorFlow, built once per test session.

``FIXTURES`` is the registry of checkpoint builders; the parametrized reader-parity test runs
over all of them, so a new fixture kind is one line here.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "highres3dnet"
DATA = Path(__file__).resolve().parent / "data"
PUBLISHED_PTH = ROOT.parent / "shared" / "data" / "highres3dnet_li_parameters-7d297872.pth"


def imported_by_command(args, modules=("numpy", "ml_dtypes", "torch", "pandas", "tensorflow")):
    """Which of ``modules`` a ``tf2pt`` command (``main(args)``, which must succeed) imports, in a
    fresh interpreter: a command's start-up is mostly what it imports."""
    import subprocess

    code = (
        "import sys\n"
        "from tf2pt.cli import main\n"
        "try:\n"
        f"    main({[str(a) for a in args]!r})\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        f"sys.stderr.write(repr(sorted(m for m in {tuple(modules)!r} if m in sys.modules)))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import ast

    return ast.literal_eval(r.stderr.strip().splitlines()[-1])


def _niftynet(activation):
    def build(d):
        from tf2pt.testing.niftynet import write_highres3dnet

        return write_highres3dnet(d, num_classes=5, activation=activation, seed=11, train_size=8)

    return build


def _fx(name):
    def build(d):
        from tf2pt.testing import tf_fixtures

        return getattr(tf_fixtures, name)(d)

    return build


def _blocks(d):
    """The benchmark mappings' checkpoint kind (``write_big``), small: 8 tensors, 256 KiB."""
    from tf2pt.testing.tf_fixtures import write_big

    return write_big(d, 1 << 18, 8)


#: name -> builder(dir) -> checkpoint path
FIXTURES = {
    "niftynet_highres3dnet": _niftynet("relu"),
    "niftynet_highres3dnet_prelu": _niftynet("prelu"),
    "all_dtypes": _fx("write_all_dtypes"),
    "tf1_saver": _fx("write_tf1_saver"),
    "tf2_keras": _fx("write_tf2_keras"),
    "tf2_module_v1_adam": _fx("write_tf2_module_v1_adam"),
    "savedmodel": _fx("write_savedmodel"),
    "sharded": _fx("write_sharded"),
    "partitioned": _fx("write_partitioned"),
    "sliced_savev2": _fx("write_sliced_savev2"),
    "many_1000": _fx("write_many"),
    "frozen_graph": _fx("write_frozen_graph"),
    "bench_blocks": _blocks,
}


@pytest.fixture(scope="session")
def tf():
    """TensorFlow, the test oracle and fixture writer (tests skip without it)."""
    tf = pytest.importorskip("tensorflow", reason="TensorFlow (the test oracle) is not installed")
    tf.get_logger().setLevel("ERROR")
    return tf


class _Checkpoints:
    """Builds each fixture once per test run. Under pytest-xdist the workers share one directory
    (an ``fcntl`` lock per fixture): the first worker to need a checkpoint writes it, the others
    wait for it and reuse it. Tests must treat these files as read-only (copy them to damage them)."""

    def __init__(self, base: Path, shared: bool):
        self.base = base
        self.shared = shared
        self.cache = {}

    def __call__(self, name: str) -> str:
        if name not in self.cache:
            pytest.importorskip("tensorflow", reason="TensorFlow writes the test checkpoints")
            d = self.base / name
            d.mkdir(parents=True, exist_ok=True)
            self.cache[name] = self._build_shared(name, d) if self.shared else str(FIXTURES[name](str(d)))
        return self.cache[name]

    @staticmethod
    def _build_shared(name: str, d: Path) -> str:
        import fcntl

        done = d / ".built"
        with open(d / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if not done.exists():
                (d / "files").mkdir(exist_ok=True)
                done.write_text(str(FIXTURES[name](str(d / "files"))))
            return done.read_text()


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """``checkpoints(name)`` -> path of a TF-written checkpoint from ``FIXTURES`` (built once)."""
    try:
        import fcntl  # noqa: F401
    except ImportError:  # no POSIX locks: each worker builds its own
        return _Checkpoints(tmp_path_factory.mktemp("tf_checkpoints"), shared=False)
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return _Checkpoints(tmp_path_factory.mktemp("tf_checkpoints"), shared=False)
    return _Checkpoints(tmp_path_factory.getbasetemp().parent / "tf_checkpoints_shared", shared=True)


@pytest.fixture(scope="session")
def example():
    return str(EXAMPLE)


@pytest.fixture()
def cli_run():
    """Run the CLI in-process (click's ``CliRunner``), with ``run_cli``'s result fields
    (``returncode``, ``stdout``, ``stderr``): for tests where a real process is not the point."""
    from types import SimpleNamespace

    from click.testing import CliRunner

    from tf2pt.cli import cli

    def run(*args):
        r = CliRunner().invoke(cli, [str(a) for a in args])
        stderr = r.stderr
        if r.exception is not None and not isinstance(r.exception, SystemExit):  # a bug: show it
            import traceback

            stderr += "".join(traceback.format_exception(*r.exc_info))
        return SimpleNamespace(returncode=r.exit_code, stdout=r.stdout, stderr=stderr)

    return run


@pytest.fixture()
def run_cli(tmp_path):
    """Run ``python -m tf2pt ARGS`` in a subprocess (real exit codes, real stderr).

    ``block=("tensorflow",)`` makes those packages fail to import in the child, to show a
    command does not need them.
    """
    import subprocess

    def run(*args, block=(), cwd=None, env=None, timeout=600):
        full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONDONTWRITEBYTECODE="1")
        full_env.update(env or {})
        if block:
            blocker = tmp_path / "blocker"
            blocker.mkdir(exist_ok=True)
            names = ", ".join(repr(b) for b in block)
            (blocker / "sitecustomize.py").write_text(textwrap.dedent(f"""
                import sys
                class _Block:
                    def find_spec(self, name, path=None, target=None):
                        if name.split('.')[0] in ({names},):
                            raise ImportError(f'{{name}} is blocked for this test')
                        return None
                sys.meta_path.insert(0, _Block())
            """))
            full_env["PYTHONPATH"] = str(blocker) + os.pathsep + full_env.get("PYTHONPATH", "")
        return subprocess.run([sys.executable, "-m", "tf2pt", *map(str, args)], capture_output=True, text=True,
                              cwd=cwd or tmp_path, env=full_env, timeout=timeout)

    return run
