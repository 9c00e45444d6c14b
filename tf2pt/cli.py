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
mapping_option = click.option(
    "--mapping", "-m", "mapping", required=True, metavar="NAME|FILE.py",
    help="Mapping name (see `tf2pt mappings`) or a path to a mapping file.",
)
target_option = click.option(
    "--target", "-t", "target", default=None, metavar="NAME",
    help="Target model of the mapping (default: the mapping's default target).",
)
force_option = click.option("--force", is_flag=True, help="Overwrite existing output files.")
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
            click.echo(exc.details(), err=True)
            sys.exit(exc.exit_code)
        except errors.Tf2ptError as exc:
            click.echo(f"tf2pt: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("tf2pt: interrupted; no output was written", err=True)
            sys.exit(errors.EXIT_INTERRUPTED)
        except BrokenPipeError:  # e.g. `tf2pt inspect ... | head`
            try:
                sys.stdout = open(os.devnull, "w")
            except OSError:
                pass
            sys.exit(0)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tf2pt")
def cli():
    """Convert TensorFlow checkpoints to PyTorch weights, exactly and provably.

    \b
    Exit codes: 0 success, 1 verify found a parity failure,
    2 usage or input error (one line on stderr, no output file left behind).
    """


def main(argv=None):
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="tf2pt", standalone_mode=True)
    except SystemExit:
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
