"""Speed and memory of tf2pt against the physical floor (``cp``) and the TF-API path, in one run.

    python benchmarks/run.py --size 1GiB --tensors 256            # dump/convert vs cp vs TF
    python benchmarks/run.py --size 8GiB --tensors 1024 --shards 8 # scaling, sharded
    python benchmarks/run.py --inspect-only --vars 1000            # inspect vs tf.train.list_variables
    python benchmarks/run.py --cold-start --repeat 9                # inspect/convert of the example, imports
    python benchmarks/run.py --verify-phases                       # verify's time, phase by phase

Checkpoints are written by real TensorFlow (``tf2pt.testing.tf_fixtures``) into ``--workdir`` and
reused across runs. Every measured command runs in its own process; wall time and peak RSS come
from ``os.wait4``. The page cache is warmed first and dirty pages are synced before every run
(each timing is the median of ``--repeat`` runs), so ``cp`` is the memory-bandwidth floor, not
the disk's. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tf2pt.units import parse_bytes

HERE = Path(__file__).resolve().parent
PY = sys.executable
# Bytecode is cached, as an installed package's is (pip compiles it on install), but under the
# work directory (main() sets PYTHONPYCACHEPREFIX), not in the source tree; without a cache every
# command would compile tf2pt's ~35 modules first, about 40 ms that no installed copy pays.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV["TF_CPP_MIN_LOG_LEVEL"] = "3"

TF_PATH = """
import sys, torch, tensorflow as tf
r = tf.train.load_checkpoint(sys.argv[1])
sd = {n: torch.from_numpy(r.get_tensor(n)) for n in r.get_variable_to_shape_map()}
torch.save(sd, sys.argv[2])
"""
SHA256 = "import sys; from tf2pt.write.provenance import file_sha256; [file_sha256(p) for p in sys.argv[1:]]"
TF_LIST = "import sys, tensorflow as tf; print(len(tf.train.list_variables(sys.argv[1])))"




def run(cmd, stdout=subprocess.DEVNULL):
    """(wall seconds, peak RSS bytes) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, env=ENV)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{err}")
    return wall, usage.ru_maxrss * 1024


def measure(name, cmd, repeat, cleanup=None):
    return measure_rounds([(name, cmd)], repeat, cleanup)[0]


def measure_rounds(commands, repeat, cleanup=None):
    """Time each ``(name, cmd)`` ``repeat`` times, in rounds: every command once per round, so
    that a drift of the machine (a VM's memory being backed, another tenant's load) falls on
    every path alike rather than on whichever ran during it; the median of each. Each round
    runs the commands in its own order (seeded: the same from run to run), since on a VM that
    hands freed memory back to its host a command's time depends on what ran before it (see
    docs/performance.md). One untimed round first fills the bytecode cache."""
    import random

    walls = {name: [] for name, _ in commands}
    rss = {name: [] for name, _ in commands}
    for _, cmd in commands:
        if cleanup:
            cleanup()
        run(cmd)
    shuffle = random.Random(19).shuffle
    for _ in range(repeat):
        order = list(commands)
        shuffle(order)
        for name, cmd in order:
            if cleanup:
                cleanup()
            w, r = run(cmd)
            walls[name].append(w)
            rss[name].append(r)
    return [{"name": name, "wall": statistics.median(walls[name]), "walls": walls[name], "rss": max(rss[name]),
             "cmd": " ".join(map(str, cmd))} for name, cmd in commands]


def checkpoint(workdir: Path, size: int, tensors: int, shards: int) -> str:
    d = workdir / f"ckpt-{size >> 20}MiB-{tensors}t-{shards}s"
    done = d / "done.json"
    if not done.exists():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        code = ("import sys; from tf2pt.testing.tf_fixtures import write_big; "
                f"print(write_big({str(d)!r}, {size}, {tensors}, shards={shards}))")
        out = subprocess.run([PY, "-c", code], env=ENV, capture_output=True, text=True, check=True)
        done.write_text(json.dumps({"prefix": out.stdout.strip().splitlines()[-1]}))
    return json.loads(done.read_text())["prefix"]


def many_vars(workdir: Path, count: int) -> str:
    d = workdir / f"many-{count}"
    done = d / "done.json"
    if not done.exists():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        code = f"from tf2pt.testing.tf_fixtures import write_many; print(write_many({str(d)!r}, {count}))"
        out = subprocess.run([PY, "-c", code], env=ENV, capture_output=True, text=True, check=True)
        done.write_text(json.dumps({"prefix": out.stdout.strip().splitlines()[-1]}))
    return json.loads(done.read_text())["prefix"]


def warm(paths):
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(1 << 24):
                pass


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    import torch

    return (f"{cpu}, {os.cpu_count()} cores{mem}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"{platform.system()} {platform.release()}")


EXAMPLE = HERE.parent / "examples" / "highres3dnet"


def cold_start(out: Path, repeat: int) -> str:
    """Whole commands on the small bundled example, where start-up is most of the cost."""
    target = out / "cold.safetensors"
    rows = [measure("tf2pt inspect examples/highres3dnet", [PY, "-m", "tf2pt", "inspect", str(EXAMPLE)], repeat),
            measure("tf2pt convert examples/highres3dnet -m highresnet -o x.safetensors",
                    [PY, "-m", "tf2pt", "convert", str(EXAMPLE), "-m", "highresnet", "-o", str(target), "--force",
                     "--quiet"], repeat),
            measure("python -c 'import tf2pt.cli'", [PY, "-c", "import tf2pt.cli"], repeat),
            measure("python -c pass (the interpreter alone)", [PY, "-c", "pass"], repeat)]
    lines = [f"\nMedian of {repeat}; page cache warm.\n", "| command | wall | peak RSS |", "| --- | --- | --- |"]
    lines += [f"| {r['name']} | {r['wall']:.3f} s | {r['rss'] / 2**20:.0f} MiB |" for r in rows]
    imports = subprocess.run([PY, "-X", "importtime", "-m", "tf2pt", "convert", str(EXAMPLE), "-m", "highresnet",
                              "-o", str(target), "--force", "--quiet"], env=ENV, capture_output=True, text=True)
    costs = []
    for line in imports.stderr.splitlines():
        parts = line[len("import time:"):].split("|") if line.startswith("import time:") else []
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2][1:]  # one space, then two more per level of nesting
            if not name.startswith(" "):  # imported by tf2pt itself or the interpreter: top level
                costs.append((int(parts[1]), name.strip()))
    top = sorted(costs, reverse=True)[:10]
    lines += ["\nLargest imports of that convert (`python -X importtime`, cumulative):\n",
              "| module | ms |", "| --- | --- |"] + [f"| {n} | {c / 1000:.0f} |" for c, n in top]
    return "\n".join(lines)


def verify_phases(out: Path) -> str:
    """One verify of the bundled example, its JSON report's phase timings as a table."""
    report = out / "verify.json"
    wall, rss = run([PY, "-m", "tf2pt", "verify", str(EXAMPLE), "-m", "highresnet", "--json", str(report), "--force"])
    timings = json.loads(report.read_text())["timings"]
    lines = [f"\nverify of examples/highres3dnet (MNI152, CPU crop): {wall:.1f} s wall, peak RSS {rss / 2**20:.0f} MiB "
             "(the TF side runs in a child process, started first; the PyTorch side's phases overlap it)\n",
             "| phase | seconds |", "| --- | --- |"]
    lines += [f"| {k.replace('_seconds', '')} | {v:.2f} |" for k, v in timings.items()]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1GiB")
    ap.add_argument("--tensors", type=int, default=256)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--vars", type=int, default=1000, help="variables of the inspect benchmark's checkpoint")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default=os.environ.get("TF2PT_BENCH_DIR", "/tmp/tf2pt-bench"))
    ap.add_argument("--inspect-only", action="store_true")
    ap.add_argument("--cold-start", action="store_true",
                    help="only the start-up rows: inspect and convert of the bundled example, and the top imports")
    ap.add_argument("--verify-phases", action="store_true",
                    help="only verify's phases on the bundled example (the default MNI152 crop)")
    ap.add_argument("--skip-tf", action="store_true", help="leave out the TF-API path (slow, memory hungry)")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    args = ap.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ENV["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    out = workdir / "out"
    out.mkdir(exist_ok=True)
    results = []
    rows = []

    # machine() imports torch: only after the runs, since a child's peak RSS counts the parent it
    # was forked from until it execs
    if args.cold_start:
        table = cold_start(out, max(args.repeat, 9))
        print(f"Machine: {machine()}\n{table}")
        return
    if args.verify_phases:
        table = verify_phases(out)
        print(f"Machine: {machine()}\n{table}")
        return
    if not args.inspect_only:
        size = parse_bytes(args.size)
        prefix = checkpoint(workdir, size, args.tensors, args.shards)
        data = sorted(Path(prefix).parent.glob(Path(prefix).name + ".data-*"))
        total = sum(p.stat().st_size for p in data)
        largest = max(os.path.getsize(p) for p in data) // max(1, args.tensors // max(1, len(data)))
        warm(data + [Path(prefix + ".index")])

        def clean():
            for p in out.iterdir():
                p.unlink()
            os.sync()  # no earlier run's dirty pages may be written back during the next one

        commands = [
            ("cp (data files)", ["cp", *map(str, data), str(out)]),
            ("sha256 of the source files alone (tf2pt's hashing; what --hash-sources adds)",
             [PY, "-c", SHA256, *map(str, data), prefix + ".index"]),
            ("tf2pt dump -> safetensors", [PY, "-m", "tf2pt", "dump", prefix, "--state-dict", str(out / "d.safetensors"), "--quiet"]),
            ("tf2pt convert -> safetensors (layout kept; default fingerprint)", [PY, "-m", "tf2pt", "convert", prefix, "-m", str(HERE / "identity_mapping.py"), "-o", str(out / "i.safetensors"), "--quiet"]),
            ("tf2pt convert -> safetensors (layout kept, --hash-sources)", [PY, "-m", "tf2pt", "convert", prefix, "-m", str(HERE / "identity_mapping.py"), "-o", str(out / "n.safetensors"), "--quiet", "--hash-sources"]),
            ("tf2pt convert -> safetensors (transposed; default fingerprint)", [PY, "-m", "tf2pt", "convert", prefix, "-m", str(HERE / "generic_mapping.py"), "-o", str(out / "c.safetensors"), "--quiet"]),
            ("tf2pt convert -> safetensors (transposed, --hash-sources)", [PY, "-m", "tf2pt", "convert", prefix, "-m", str(HERE / "generic_mapping.py"), "-o", str(out / "t.safetensors"), "--quiet", "--hash-sources"]),
            ("tf2pt convert -> .pth (transposed)", [PY, "-m", "tf2pt", "convert", prefix, "-m", str(HERE / "generic_mapping.py"), "-o", str(out / "c.pth"), "--quiet"]),
        ]
        cp, sha, dump, convi, convn, conv, convtn, convp = measure_rounds(commands, args.repeat, clean)
        results += [cp, sha, dump, convi, convn, conv, convtn, convp]
        tf = None
        if not args.skip_tf:
            tf = measure("TF path: tf.train.load_checkpoint + torch.save", [PY, "-c", TF_PATH, prefix, str(out / "tf.pth")], args.repeat, clean)
            results.append(tf)
        clean()
        rows.append(f"\nCheckpoint: {total / 2**30:.2f} GiB in {len(data)} data file(s), {args.tensors} float32 tensors "
                    f"(largest {largest / 2**20:.0f} MiB); page cache warm; median of {args.repeat}.\n")
        rows.append("| path | wall (median) | fastest | vs cp | fastest vs cp's | TF path / this | peak RSS |")
        rows.append("| --- | --- | --- | --- | --- | --- | --- |")
        for r in results:
            ratio_tf = f"{tf['wall'] / r['wall']:.1f}x" if tf and r is not tf else "-"
            fastest = min(r["walls"])
            rows.append(f"| {r['name']} | {r['wall']:.2f} s | {fastest:.2f} s | {r['wall'] / cp['wall']:.2f}x | "
                        f"{fastest / min(cp['walls']):.2f}x | {ratio_tf} | {r['rss'] / 2**20:.0f} MiB |")

    many = many_vars(workdir, args.vars)
    warm(sorted(Path(many).parent.glob(Path(many).name + ".*")))
    ins = measure(f"tf2pt inspect ({args.vars} variables)", [PY, "-m", "tf2pt", "inspect", many], max(args.repeat, 5))
    insj = measure(f"tf2pt inspect --format json ({args.vars} variables)", [PY, "-m", "tf2pt", "inspect", many, "--format", "json"], max(args.repeat, 5))
    tfl = measure("TF: tf.train.list_variables", [PY, "-c", TF_LIST, many], max(args.repeat, 3))
    results += [ins, insj, tfl]
    rows.append("\n| listing | wall | TF / this | peak RSS |")
    rows.append("| --- | --- | --- | --- |")
    for r in (ins, insj, tfl):
        rows.append(f"| {r['name']} | {r['wall']:.3f} s | {tfl['wall'] / r['wall']:.1f}x | {r['rss'] / 2**20:.0f} MiB |")

    print(f"Machine: {machine()}")
    print("\n".join(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
