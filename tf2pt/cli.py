"""The ``tf2pt`` command line. Parses, prints and picks exit codes; the work happens in the library.

Heavy imports (torch, pandas, TensorFlow) happen inside the commands that need them, so that
``tf2pt inspect`` stays fast.
"""

from __future__ import annotations

import functools
import os
import sys

import click

from . import errors
from ._version import __version__

# ---------------------------------------------------------------------------------------------
# Shared options: each is defined once and spelled the same on every command.
# ---------------------------------------------------------------------------------------------

checkpoint_argument = click.argument("checkpoint", metavar="CHECKPOINT", type=click.Path(path_type=str))
model_option = click.option(
    "--model", "model", default=None, metavar="MODULE:FACTORY",
    help="Your PyTorch model instead of a mapping: MODULE is an import path or a .py file, FACTORY a "
         "callable returning the nn.Module; tf2pt proposes the mapping (see `tf2pt map`).",
)
model_kwargs_option = click.option(
    "--model-kwargs", "model_kwargs", default=None, metavar="JSON",
    help='Arguments for FACTORY: a JSON object (keywords), a list (positional), or {"args": [...], "kwargs": {...}}.',
)
input_shape_option = click.option(
    "--input-shape", "input_shape", default=None, metavar="N,C,D,H,W",
    help="Input shape for the forward that finds the model's execution order (default: inferred from its first layer).",
)
target_option = click.option(
    "--target", "-t", "target", default=None, metavar="NAME",
    help="Target model of the mapping (default: the mapping's default target).",
)
optional_mapping_option = click.option(
    "--mapping", "-m", "mapping", default=None, metavar="NAME|FILE.py",
    help="Mapping name (see `tf2pt mappings`) or a path to a mapping file (or give --model).",
)
force_option = click.option("--force", is_flag=True, help="Overwrite existing output files.")
max_output_option = click.option(
    "--max-output-bytes", type=click.IntRange(0), default=None, metavar="N",
    help="Refuse to write more than N bytes of tensors (default: 64x the checkpoint's size plus 1 GiB, "
         "so that a crafted file cannot make a huge output).")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar, fewer messages.")
backend_option = click.option(
    "--backend", type=click.Choice(["native", "tf"]), default="native", show_default=True,
    help="Checkpoint reader: tf2pt's own (no TensorFlow) or tf.train.load_checkpoint (cross-checks).",
)


def handle_errors(func):
    """Run a command body; typed errors become one line on stderr and their exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except errors.ConversionError as exc:
            click.echo(f"tf2pt: error: {exc}", err=True)
            if len(exc.problems) > 1:  # the one line names the first three; list up to 20, count the rest
                click.echo(exc.details(), err=True)
            sys.exit(exc.exit_code)
        except errors.Tf2ptError as exc:
            click.echo(f"tf2pt: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("tf2pt: interrupted; no output was written", err=True)
            sys.exit(errors.EXIT_INTERRUPTED)
        except errors.Interrupted as exc:
            click.echo(f"tf2pt: stopped by signal {exc.signum}; no output was written", err=True)
            sys.exit(128 + exc.signum)
        except MemoryError:
            where = kwargs.get("checkpoint") or "tf2pt"
            click.echo(f"tf2pt: error: {where}: out of memory: this input needs more memory than is free "
                       "(close other programs, or use a machine with more memory)", err=True)
            sys.exit(errors.EXIT_USAGE)
        except BrokenPipeError:  # e.g. `tf2pt inspect ... | head`
            try:
                sys.stdout = open(os.devnull, "w")
            except OSError:
                pass
            sys.exit(0)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except OSError as exc:  # the environment: a full disk, a read-only directory, too many open files
            click.echo(f"tf2pt: error: {_os_error(exc, kwargs.get('checkpoint'))}", err=True)
            sys.exit(errors.EXIT_USAGE)
        except Exception as exc:  # a bug: say so in one line, keep the traceback for TF2PT_DEBUG=1
            if os.environ.get("TF2PT_DEBUG"):
                raise
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            click.echo(f"tf2pt: internal error: {type(exc).__name__}: {first} (this is a bug in tf2pt; "
                       "rerun with TF2PT_DEBUG=1 for the traceback and report it)", err=True)
            sys.exit(errors.EXIT_INTERNAL)

    return wrapper


_OS_HINTS = {"ENOSPC": "free some disk space or write elsewhere", "EROFS": "write to a writable directory",
             "EACCES": "check the file's and the directory's permissions", "EPERM": "check the permissions",
             "EMFILE": "raise the open-file limit (ulimit -n)", "ENFILE": "close other programs' files",
             "EDQUOT": "free some of your disk quota", "EIO": "the disk reported an error; check it",
             "ENAMETOOLONG": "use a shorter path"}


def _os_error(exc: OSError, fallback) -> str:
    """One line for an OSError: the file, what the system said, what to do."""
    import errno

    name = errno.errorcode.get(exc.errno or 0, "")
    where = exc.filename or fallback or "tf2pt"
    hint = _OS_HINTS.get(name, "check the file and the disk")
    return f"{where}: {exc.strerror or exc} ({hint})"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tf2pt")
def cli():
    """Convert TensorFlow and Keras checkpoints to PyTorch weights, exactly and provably.

    \b
    Exit codes: 0 success, 1 verify found a parity failure,
    2 usage or input error (one line on stderr, no output file left behind),
    3 internal error (a bug; TF2PT_DEBUG=1 shows the traceback).
    """


# ---------------------------------------------------------------------------------------------
# inspect / dump
# ---------------------------------------------------------------------------------------------

all_option = click.option("--all", "show_all", is_flag=True, help="Include training-only variables (optimizer slots, EMA, ...).")
filter_option = click.option("--filter", "pattern", default=None, metavar="REGEX",
                             help="Only variables whose name (or readable name) matches REGEX.")


@cli.command("inspect")
@checkpoint_argument
@all_option
@filter_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "markdown"]), default="table",
              show_default=True)
@click.option("--stats", is_flag=True, help="Add min/max/mean/std and NaN/Inf counts (reads the data).")
@click.option("--check-crc", "--verify", "check", is_flag=True,
              help="Also read every tensor and check its CRC32C (the listing itself reads only the index).")
@backend_option
@handle_errors
def inspect_cmd(checkpoint, show_all, pattern, fmt, stats, check, backend):
    """List the variables of CHECKPOINT: name, shape, dtype, parameters, bytes, role.

    CHECKPOINT is a prefix (model.ckpt-1000), its .index, a directory with a `checkpoint` file
    or one bundle, a SavedModel directory, a frozen GraphDef .pb, or a Keras weight file (.h5,
    .keras, .weights.h5, .weights.json). Training-only variables are hidden unless --all.
    """
    from . import table
    from .read import open_checkpoint

    with open_checkpoint(checkpoint, backend=backend) as ckpt:
        if check:
            checked = table.check_all(ckpt)
        shown, hidden = table.select(ckpt, all=show_all, filter=pattern)
        data = table.rows(ckpt, shown, with_stats=stats)
        click.echo(table.render(ckpt, data, hidden, fmt, with_stats=stats))
        if check:
            how = "(GraphDefs carry no checksums)" if ckpt.kind == "graphdef" else "and match their CRC32C"
            click.echo(f"verified: all {checked} tensors read back {how}", err=True)


@cli.command("dump")
@checkpoint_argument
@all_option
@filter_option
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Write a CSV of name, shape, dtype, parameters, bytes, role.")
@click.option("--state-dict", "state_path", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Write the tensors under their TF names, in TF layout: *.safetensors or *.pth.")
@backend_option
@max_output_option
@force_option
@quiet_option
@handle_errors
def dump_cmd(checkpoint, show_all, pattern, csv_path, state_path, backend, max_output_bytes, force, quiet):
    """Dump CHECKPOINT as the NiftyNet tutorial did: a CSV of variables and a TF-named state dict.

    Tensors keep their TF names and layouts (no renaming, no transposes). String tensors have no
    torch form and are listed as not written.
    """
    from . import dump as dumping

    if not csv_path and not state_path:
        raise click.UsageError("nothing to do: give --csv FILE and/or --state-dict FILE")
    from .write import output_format
    from .write.atomic import check_distinct, check_output

    check_distinct({"--csv": csv_path, "--state-dict": state_path})
    for path in (csv_path, state_path):
        check_output(path, force)
    if state_path:
        output_format(state_path)
    result = dumping.dump(checkpoint, csv_path=csv_path, state_path=state_path, all=show_all, filter=pattern,
                          backend=backend, force=force, progress=not quiet, max_output_bytes=max_output_bytes)
    for name, why in result["skipped"]:
        click.echo(f"not written to the state dict: {name} ({why})", err=True)
    if not quiet:
        for path, what in (csv_path, "variables"), (state_path, "tensors"):
            if path:
                count = result["rows"] if what == "variables" else result["tensors"]
                click.echo(f"wrote {count} {what} to {path}", err=True)


# ---------------------------------------------------------------------------------------------
# mappings / convert
# ---------------------------------------------------------------------------------------------


@cli.command("mappings")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@handle_errors
def mappings_cmd(fmt):
    """List the available mappings and their targets."""
    import json

    from .registry import list_mappings

    rows = []
    for m in list_mappings():
        rows.append({
            "name": m.name,
            "description": m.description,
            "targets": [{"name": t.name, "description": t.description, "default": i == 0} for i, t in enumerate(m.targets)],
            "source": m.source.origin,
            "origin": m.origin,
        })
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']}: {row['description']}")
        click.echo(f"  source: {row['source']}")
        for t in row["targets"]:
            click.echo(f"  target {t['name']}{' (default)' if t['default'] else ''}: {t['description']}")


def _finite_json(value):
    """Strict JSON: non-finite floats become the strings "inf", "-inf", "nan"."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    return value


def _write_json(path, data, force):
    import json

    from .write.atomic import atomic_output

    with atomic_output(path, force=force) as tmp:
        with open(tmp, "w") as fh:
            json.dump(_finite_json(data), fh, indent=2, default=str, allow_nan=False)
            fh.write("\n")


def _input_shape(text):
    if not text:
        return None
    try:
        shape = [int(t) for t in text.replace("x", ",").split(",") if t.strip()]
    except ValueError:
        raise click.BadParameter("comma-separated sizes, e.g. 1,1,32,32,32", param_hint="--input-shape") from None
    if not shape or any(s <= 0 for s in shape):
        raise click.BadParameter("positive sizes, e.g. 1,1,32,32,32", param_hint="--input-shape")
    return shape


def _mapping_or_model(mapping, model, model_kwargs):
    if (mapping is None) == (model is None):
        raise click.UsageError("give exactly one of --mapping NAME|FILE.py and --model MODULE:FACTORY")
    if model_kwargs is not None and model is None:
        raise click.UsageError("--model-kwargs goes with --model")


def _propose(checkpoint, model, model_kwargs, input_shape, settle_ties, quiet, mapping_dir=None):
    from .automap import propose_mapping

    proposal = propose_mapping(checkpoint, model, model_kwargs, input_shape=_input_shape(input_shape),
                               run_ties=settle_ties, mapping_dir=mapping_dir)
    if not quiet:
        click.echo(proposal.summary(), err=True)
    return proposal


def _write_text(path, text, force):
    from .write.atomic import atomic_output

    with atomic_output(path, force=force) as tmp:
        with open(tmp, "w") as fh:
            fh.write(text)


def proposed_mapping_path(output: str) -> str:
    """Where ``convert --model`` saves the proposed mapping: beside the output, ``<stem>.mapping.py``."""
    stem, _ = os.path.splitext(output)
    return stem + ".mapping.py"


settle_option = click.option(
    "--settle-ties/--no-settle-ties", "settle_ties", default=True, show_default=True,
    help="Settle same-shape ties by running the original TF graph (a child process) against the model, "
         "where the checkpoint has a graph and TensorFlow is installed; otherwise ties are decided by order "
         "and marked ambiguous.",
)


@cli.command("map")
@checkpoint_argument
@click.option("--model", "model", required=True, metavar="MODULE:FACTORY",
              help="Your PyTorch model: MODULE is an import path or a .py file, FACTORY a callable returning it.")
@model_kwargs_option
@input_shape_option
@click.option("--output", "-o", "output", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="The mapping file to write (*.py).")
@settle_option
@force_option
@quiet_option
@handle_errors
def map_cmd(checkpoint, model, model_kwargs, input_shape, output, settle_ties, force, quiet):
    """Propose a mapping from CHECKPOINT into your own PyTorch model, and write it as a mapping file.

    TF variables are grouped into layers and the model's state into modules; they are matched by
    layer kind, exact shape after the layout transform, and order (graph order against execution
    order). Picks that shape alone could not decide are settled by running both frameworks where
    the graph can run, or marked `# ambiguous: decided by order`. When checkpoint and model do not
    correspond nothing is written and the first point where they part is named (exit 2).
    """
    from .write.atomic import check_output

    if not output.endswith(".py"):
        raise errors.InputError("the mapping file must end in .py", path=output)
    check_output(output, force)
    proposal = _propose(checkpoint, model, model_kwargs, input_shape, settle_ties, quiet,
                        mapping_dir=os.path.dirname(os.path.abspath(output)))
    _write_text(output, proposal.render(), force)
    if not quiet:
        click.echo(f"wrote {output}: {len(proposal.pairs)} layers; review it, then "
                   f"`tf2pt convert {checkpoint} --mapping {output} -o OUT`", err=True)



@cli.command("convert")
@checkpoint_argument
@optional_mapping_option
@model_option
@model_kwargs_option
@input_shape_option
@target_option
@click.option("--output", "-o", "output", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="Output file: *.safetensors (streamed, with provenance metadata) or *.pth (plain tensors).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Also write the full conversion report as JSON.")
@click.option("--strict/--no-strict", default=True, show_default=True,
              help="Fail on any unmapped variable, unfilled key or shape mismatch (default), or convert what matches.")
@click.option("--hash-sources/--no-hash-sources", default=False,
              help="Also record the sha256 of every source file in the safetensors metadata (a second pass "
                   "over the data, computed alongside the conversion). By default the fingerprint is the "
                   "sha256 of the .index plus the CRC32C check of every converted tensor, which costs no extra "
                   "pass. --no-hash-sources is the default (kept as a no-op for one release).")
@max_output_option
@settle_option
@force_option
@quiet_option
@handle_errors
def convert_cmd(checkpoint, mapping, model, model_kwargs, input_shape, target, output, report_path, strict,
                hash_sources, max_output_bytes, force, quiet, settle_ties):
    """Convert CHECKPOINT to PyTorch weights with a mapping, or with your own --model.

    Every TF variable must be mapped or ignored by an explicit rule, every key of the target
    model filled, and every shape equal after the layout transform; all problems are listed
    at once. Output is written atomically and never overwrites a file without --force.

    With --model MODULE:FACTORY, tf2pt proposes the mapping (as `tf2pt map` does), converts with
    it, and saves it beside the output as OUTPUT_STEM.mapping.py for review.
    """
    _mapping_or_model(mapping, model, model_kwargs)
    if model is None:
        return _convert(checkpoint, mapping, target, output, report_path, strict, hash_sources, max_output_bytes, force,
                        quiet)
    from . import write
    from .write.atomic import check_output

    write.output_format(output)
    check_output(output, force)
    check_output(report_path, force)
    mapping_path = proposed_mapping_path(output)
    check_output(mapping_path, force)
    proposal = _propose(checkpoint, model, model_kwargs, input_shape, settle_ties, quiet,
                        mapping_dir=os.path.dirname(os.path.abspath(mapping_path)))
    _write_text(mapping_path, proposal.render(), force)
    try:
        _convert(checkpoint, mapping_path, target, output, report_path, strict, hash_sources, max_output_bytes, force,
                 quiet)
    except BaseException:  # no partial output: the proposal goes with the conversion
        try:
            os.unlink(mapping_path)
        except OSError:
            pass
        raise
    if not quiet:
        click.echo(f"saved the proposed mapping to {mapping_path} (review it; "
                   f"`tf2pt verify {checkpoint} --mapping {mapping_path}` checks it)", err=True)


def _convert(checkpoint, mapping, target, output, report_path, strict, hash_sources, max_output_bytes, force, quiet):
    import time

    from . import write
    from ._progress import progress_bar
    from .conversion import prepare
    from .read import open_checkpoint
    from .write.atomic import check_distinct, check_output, source_paths
    from .write.provenance import BackgroundHashes, fingerprint, provenance

    start = time.perf_counter()
    fmt = write.output_format(output)
    check_distinct({"-o": output, "--report": report_path})
    check_output(output, force)
    check_output(report_path, force)

    source = open_checkpoint(checkpoint)
    try:
        check_distinct({"-o": output, "--report": report_path}, source_paths(source))
    except BaseException:
        source.close()
        raise
    # --hash-sources: sha256 of the sources in a thread that starts before torch is imported and
    # the plan is made, so it overlaps them; by default the cheap fingerprint alone
    hashes = BackgroundHashes(source.files) if hash_sources else None
    # .pth output loads torch to write, so a declared target spec is checked against the model too
    ckpt, entries, report = prepare(source, mapping, target, strict=strict, check_model=fmt == "pth")
    with ckpt:
        if not any(e.source for e in entries):  # --no-strict with nothing that matched
            from .errors import ConversionError

            raise ConversionError(report.problems or ["no TF variable maps to the target"], path=ckpt.path,
                                  hint="nothing was written: the mapping converts none of this checkpoint's weights")
        total = sum(write.nbytes(e.shape, e.dtype) for e in entries)
        write.check_output_budget(total, ckpt, max_output_bytes)
        fp = None if hashes else fingerprint(ckpt)
        with progress_bar(total, "converting", disable=quiet) as advance:
            write.write_entries(ckpt, entries, output,
                                metadata=provenance(ckpt, report, hashes and hashes.placeholder(), fp),
                                force=force, progress=advance,
                                final_metadata=hashes and (lambda: provenance(ckpt, report, hashes.result())),
                                # the writer's second thread only where a core is left beside the hashing
                                prefetch=not hashes or (os.cpu_count() or 1) > hashes.busy + 1)
        if hashes:
            hashes.result()
    report.output = output
    report.seconds = round(time.perf_counter() - start, 3)
    if report_path:
        _write_json(report_path, report.to_dict(), force)
    if not quiet or report.problems:
        click.echo(report.summary(), err=True)
        for problem in report.problems:
            click.echo(f"  problem (not strict, skipped): {problem}", err=True)
    if not quiet:
        click.echo(f"wrote {len(entries)} tensors to {output} in {report.seconds:.2f} s", err=True)


# ---------------------------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------------------------


class _SizesCommand(click.Command):
    """A command whose ``--synthetic`` takes any number of sizes (``--synthetic 1 16 16 3``):
    the integers after it are joined into one value before click parses them."""

    def parse_args(self, ctx, args):
        out, i = [], 0
        while i < len(args):
            out.append(args[i])
            if args[i] == "--synthetic":
                sizes = []
                while i + 1 < len(args) and args[i + 1].lstrip("-").isdigit():
                    sizes.append(args[i + 1])
                    i += 1
                out.append(",".join(sizes))
            i += 1
        return super().parse_args(ctx, out)


def _parse_sizes(value):
    if value is None:
        return None
    try:
        sizes = [int(v) for v in value.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"sizes must be integers, got {value!r}", param_hint="--synthetic") from None
    if not sizes or any(n <= 0 for n in sizes):
        raise click.BadParameter(f"give one or more positive sizes, got {value!r}", param_hint="--synthetic")
    return sizes


@cli.command("verify", cls=_SizesCommand)
@checkpoint_argument
@optional_mapping_option
@model_option
@model_kwargs_option
@input_shape_option
@target_option
@click.option("--volume", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Input volume: .nii/.nii.gz (reoriented to RAS) or .npy (D,H,W) / (C,D,H,W). "
                   "Default: the MNI152 T1 template from nilearn.")
@click.option("--synthetic", default=None, metavar="SIZE...",
              help="Use seeded random inputs: three sizes D H W for a 3-D volume model; for a TF2 SavedModel, "
                   "one size per unknown (None) dimension of its signature's (or Keras model's) inputs (the batch may be "
                   "left out: 1).")
@click.option("--input", "input_file", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Input file: .npy (one input), .npz (one array per input name, for multi-input signatures and "
                   "Keras models) or a PNG/JPEG image, in TF's layout; for a 3-D volume model as --volume.")
@click.option("--signature", default=None, metavar="NAME",
              help="The TF2 SavedModel's signature to run (default: the mapping's, else serving_default).")
@click.option("--crop", type=str, nargs=3, default=None, metavar="D H W",
              help="Centre-crop the volume (after preprocessing). On CPU the mapping's default crop applies "
                   "unless given; `--crop full full full` keeps the whole volume.")
@click.option("--device", default="auto", show_default=True, metavar="auto|cpu|cuda[:N]",
              help="PyTorch device; auto uses CUDA when available.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Write the full report as JSON.")
@click.option("--figure", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Write a PNG of orthogonal slices: input, TF labels, PyTorch labels, |difference|.")
@click.option("--atol", type=float, default=None, help="Max abs error allowed (default: 1e-4 x TF output range).")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=0.9999, show_default=True,
              help="Minimum fraction of voxels whose labels agree.")
@click.option("--per-layer", is_flag=True,
              help="Also compare the mapping's named intermediate layers (VerifySpec.layers: a Keras model's own "
                   "layers, a graph's VerifySpec.layer_tensors, else those the mapping's tf_reference returns; with "
                   "--model: the matched layer pairs).")
@click.option("--allow-tf32", is_flag=True, help="Let PyTorch use TF32 on GPUs (the production setting); off by default.")
@click.option("--tf-input", default=None, metavar="TENSOR", help="Input tensor of the original TF graph (default: the mapping's).")
@click.option("--tf-output", multiple=True, metavar="TENSOR",
              help="Output tensor of the original TF graph (default: the mapping's); for a TF2 SavedModel, an output "
                   "of its signature, for a Keras file a Keras output name; repeatable (default: every output).")
@click.option("--save-reference", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Only run TensorFlow and save input + outputs to this .npz (needs TF, not torch).")
@click.option("--sample-voxels", type=click.IntRange(1), default=None, metavar="N",
              help="With --save-reference: keep TF's labels everywhere but its full output only at N random "
                   "voxels (a compact, compressed reference for large volumes).")
@click.option("--reference", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Take the TF side from a --save-reference file (needs torch, not TF).")
@click.option("--reference-cache", type=click.Path(file_okay=False, path_type=str), default=None, metavar="DIR",
              help="Keep the TF side's output in DIR, keyed by the checkpoint, the input and the TF request; "
                   "a repeated run (e.g. in one CI job) reads it instead of running TensorFlow.")
@click.option("--trust-graph", is_flag=True,
              help="Run the checkpoint's graph even where the ops it would run are not all pure computation "
                   "(file I/O, Python, custom ops). Off by default: see docs/reliability.md.")
@click.option("--max-memory", default=None, metavar="SIZE",
              help="Compare a 3-D volume window by window, TF and PyTorch together within SIZE of memory "
                   "(e.g. 4GiB): the windows are sized from measured probes. See docs/parity.md.")
@click.option("--window", type=click.IntRange(1), nargs=3, default=None, metavar="D H W",
              help="Compare window by window with windows of this size (instead of sizing them by --max-memory).")
@click.option("--window-border", type=click.IntRange(0), default=None, metavar="N",
              help="Voxels of context each window keeps next to another (default: the mapping's receptive-field "
                   "radius, which makes the labels the whole volume's; smaller is faster, parity unaffected).")
@settle_option
@force_option
@quiet_option
@handle_errors
def verify_cmd(checkpoint, mapping, model, model_kwargs, input_shape, target, volume, synthetic, input_file, signature,
               crop, device, json_path, figure, atol, min_agreement, per_layer, allow_tf32, tf_input, tf_output,
               save_reference, sample_voxels, reference, reference_cache, trust_graph, max_memory, window, window_border,
               force, quiet, settle_ties):
    """Run TensorFlow and PyTorch on one volume and report parity.

    With --model MODULE:FACTORY instead of --mapping, the mapping is proposed first (as `tf2pt
    map` does) and verified; it is not saved (use `tf2pt map` for that). --per-layer then
    compares every matched layer whose output the original graph holds with its module's.

    \b
    Exit codes: 0 parity holds, 1 parity failed, 2 usage or input error.
    """
    _mapping_or_model(mapping, model, model_kwargs)
    windowing = {"max_memory": _parse_memory(max_memory), "window": list(window) if window else None,
                 "window_border": window_border}
    if model is not None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="tf2pt-map-") as tmp:
            path = os.path.join(tmp, "proposed_mapping.py")
            proposal = _propose(checkpoint, model, model_kwargs, input_shape, settle_ties, quiet, mapping_dir=tmp)
            if per_layer and not proposal.layer_pairs:
                raise errors.InputError("--per-layer compares the matched layers' outputs in the original graph, "
                                        "and this checkpoint has no graph holding them", path=checkpoint,
                                        hint="verify without --per-layer")
            _write_text(path, proposal.render(), True)
            return _verify(checkpoint, path, target, volume, synthetic, input_file, signature, crop, device, json_path,
                           figure, atol, min_agreement, per_layer, allow_tf32, tf_input, tf_output, save_reference,
                           sample_voxels, reference, reference_cache, trust_graph, force, quiet, windowing)
    return _verify(checkpoint, mapping, target, volume, synthetic, input_file, signature, crop, device, json_path,
                   figure, atol, min_agreement, per_layer, allow_tf32, tf_input, tf_output, save_reference,
                   sample_voxels, reference, reference_cache, trust_graph, force, quiet, windowing)


def _parse_memory(value):
    if value is None:
        return None
    from .units import parse_bytes

    try:
        size = parse_bytes(value)
    except ValueError:
        raise click.BadParameter(f"a size such as 4GiB or 512MiB, got {value!r}", param_hint="--max-memory") from None
    if size <= 0:
        raise click.BadParameter(f"a positive size, got {value!r}", param_hint="--max-memory")
    return size


def _verify(checkpoint, mapping, target, volume, synthetic, input_file, signature, crop, device, json_path, figure,
            atol, min_agreement, per_layer, allow_tf32, tf_input, tf_output, save_reference, sample_voxels, reference,
            reference_cache, trust_graph, force, quiet, windowing):
    synthetic = _parse_sizes(synthetic)
    tf_outputs = list(tf_output)
    tf_output = tf_outputs[0] if len(tf_outputs) == 1 else None
    if crop is not None:
        if all(c.lower() == "full" for c in crop):
            crop = "full"
        else:
            try:
                crop = [int(c) for c in crop]
            except ValueError:
                raise click.BadParameter("three sizes, or `full full full`", param_hint="--crop") from None
    if save_reference and reference:
        raise click.UsageError("--save-reference and --reference are the two halves of one check; give one")
    if sample_voxels and not save_reference:
        raise click.UsageError("--sample-voxels applies to --save-reference")
    if save_reference and any(v is not None for v in windowing.values()):
        raise click.UsageError("--save-reference runs the whole volume; --max-memory/--window/--window-border "
                               "apply to a verify")
    if save_reference:
        from .read import open_checkpoint
        from .verify import save_reference as save_ref

        if len(tf_outputs) > 1 or signature or input_file:
            raise click.UsageError("--save-reference takes a 3-D volume model's TF graph (one --tf-output, --volume); "
                                   "TF2 SavedModel signatures are verified directly")
        from .write.atomic import check_distinct, source_paths

        with open_checkpoint(checkpoint) as ckpt:
            check_distinct({"--save-reference": save_reference}, source_paths(ckpt))

        info = save_ref(checkpoint, mapping, save_reference, volume=volume, synthetic=synthetic, crop=crop,
                        tf_input=tf_input, tf_output=tf_output, per_layer=per_layer, force=force,
                        sample_voxels=sample_voxels, trust_graph=trust_graph)
        if not quiet:
            click.echo(f"saved TF reference to {save_reference}: {info['tf_side']} ({info['tf_side_reason']})", err=True)
        return
    from .read import open_checkpoint
    from .verify import verify
    from .write.atomic import check_distinct, check_output, source_paths

    outputs = {"--json": json_path, "--figure": figure}
    check_distinct(outputs)
    with open_checkpoint(checkpoint) as ckpt:
        check_distinct(outputs, source_paths(ckpt))
    check_output(json_path, force)
    report = verify(checkpoint, mapping, target, volume=volume, synthetic=synthetic, crop=crop, device=device,
                    atol=atol, min_agreement=min_agreement, per_layer=per_layer, allow_tf32=allow_tf32,
                    tf_input=tf_input, tf_output=tf_output, reference=reference, figure=figure, force=force,
                    trust_graph=trust_graph, reference_cache=reference_cache, signature=signature,
                    input_file=input_file, tf_outputs=tf_outputs, **windowing,
                    progress=None if quiet else (lambda text: click.echo(f"tf2pt verify: {text}", err=True)))
    if json_path:
        _write_json(json_path, report.to_dict(), force)
    if not quiet or not report.passed:
        click.echo(report.summary())
    sys.exit(errors.EXIT_OK if report.passed else errors.EXIT_PARITY)


def _raise_on_termination() -> None:
    """SIGTERM and SIGHUP raise :class:`~tf2pt.errors.Interrupted` where they arrive, so that an
    unfinished output's temporary file is removed as for Ctrl-C."""
    import signal

    def handler(signum, _frame):
        raise errors.Interrupted(signum)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), handler)


def main(argv=None):
    """Console-script entry point.

    Once a command that imported torch has finished -- outputs complete, renamed and closed --
    the process ends with ``os._exit``: tearing down an interpreter that loaded torch takes a
    noticeable time (docs/performance.md) and does nothing for tf2pt's outputs.
    """
    _raise_on_termination()
    try:
        cli.main(args=argv, prog_name="tf2pt", standalone_mode=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if "torch" in sys.modules and not os.environ.get("TF2PT_DEBUG"):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
