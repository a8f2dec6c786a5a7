"""Shared command-line behaviour of all steps.

A step is a subclass of :class:`Step` with a ``name`` (console script
``iactpipe-<name>``, config schema ``schemas/config/<name>.yaml``), an
``add_arguments`` for its inputs/outputs, and a ``run(ctx)``.  This module
gives every step the same conventions:

- ``--config FILE`` (repeatable) merged in order, then every config key that
  has a ``cli`` option in the schema can be overridden on the command line;
  unknown keys and wrong types exit 2 with one line naming the key;
- ``--dump-config`` prints the resolved configuration and exits;
- outputs are written under a temporary name and renamed at the end; on any
  error they are removed, so no half file is ever left;
- every HDF5 output gets its provenance (see :mod:`iactpipe.provenance`);
- user errors (:class:`~iactpipe.errors.IactpipeError`) print one line and exit
  1 (data) or 2 (usage/config); bugs keep their traceback.
"""

import argparse
import logging
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import tables

from . import __version__
from .config import dump_yaml, iter_leaves, load_config_schema, resolve_config, set_dotted
from .errors import DataError, IactpipeError, UsageError
from .io.tables import no_unpickling
from .provenance import Activity, is_fits, is_hdf5, write_fits_provenance, write_hdf5_provenance

__all__ = ["Step", "RunContext", "progress"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _install_sigterm_handler(step, state):
    """On SIGTERM (batch systems, cwltool, toil) remove the temporary outputs and exit 143 at once.

    Done in the handler itself rather than by raising: an exception raised while numba compiles
    or inside library code can be caught or delayed there.  Returns the previous handler.
    """

    def handler(signum, frame):
        step._cleanup(state.get("ctx"))
        print(f"iactpipe-{step.name}: terminated (SIGTERM)", file=sys.stderr, flush=True)
        os._exit(143)

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread (e.g. called from a test runner thread)
        return None


def _check_writable(path, overwrite):
    """Fail early, with one line, if ``path`` cannot become an output file."""
    if path.is_dir():
        raise UsageError(f"{path}: is a directory, expected an output file name")
    if path.exists() and not overwrite:
        raise UsageError(f"{path}: output file exists (use --overwrite to replace it)")
    if not path.parent.exists():
        raise UsageError(f"{path}: output directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise UsageError(f"{path}: output directory {path.parent} is not writable")


class Output:
    """An output file written under a temporary name, renamed on success."""

    def __init__(self, path, role, data_levels=()):
        self.path = Path(path)
        self.role = role
        self.data_levels = tuple(data_levels)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}")


class RunContext:
    """What a step's ``run`` gets: parsed args, resolved config, inputs and outputs."""

    def __init__(self, step, args, config, activity, log):
        self.step = step
        self.args = args
        self.config = config
        self.activity = activity
        self.log = log
        self.outputs = []
        self.provenance_log = None
        self.created_dirs = []
        #: printed on stdout once the outputs are in place (e.g. a report's path and a one-line verdict)
        self.summary = None

    def input(self, path, role="input", provenance=True):
        """Check that an input file exists and is readable; record it for provenance."""
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: no such file")
        if path.is_dir():
            raise DataError(f"{path}: is a directory, expected a file")
        if not os.access(path, os.R_OK):
            raise DataError(f"{path}: permission denied")
        if path.stat().st_size == 0:
            raise DataError(f"{path}: file is empty")
        if provenance:
            self.activity.add_input(path, role)
        return path

    def output_dir(self, path):
        """An output directory (reports): created if absent, removed again on failure if it is still empty."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise UsageError(f"{path}: exists and is not a directory")
        if not path.exists():
            if not path.parent.exists():
                raise UsageError(f"{path}: parent directory {path.parent} does not exist")
            try:
                path.mkdir()
            except OSError as err:
                raise UsageError(f"{path}: cannot create the output directory ({err.strerror})") from None
            self.created_dirs.append(path)
        return path

    def output(self, path, role="output", data_levels=()):
        """Register an output; returns the temporary path the step must write to."""
        out = Output(path, role, data_levels)
        _check_writable(out.path, self.args.overwrite)
        self.outputs.append(out)
        return out.tmp


class _StepName(logging.Filter):
    """Labels each record with the step that logged it: ``iactpipe.dl0-to-dl1`` -> ``iactpipe-dl0-to-dl1``."""

    def filter(self, record):
        name = record.name
        record.step = "iactpipe-" + name[len("iactpipe."):] if name.startswith("iactpipe.") else name
        return True


def _configure_logging(level):
    """One stderr handler for all steps run in this process; each run sets its own level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_StepName())
    handler.setFormatter(logging.Formatter("%(step)s %(levelname)s: %(message)s"))
    logging.basicConfig(handlers=[handler])  # no-op when the root logger already has handlers
    logging.getLogger().setLevel(getattr(logging, level))


class Step:
    """Base class of all step command-line tools."""

    name = "step"
    description = ""

    def add_arguments(self, parser):
        """Add the step's own (non-config) arguments: inputs and outputs."""

    def run(self, ctx):
        raise NotImplementedError

    def config_schema(self):
        """The step's config schema (``schemas/config/<name>.yaml``, dashes as underscores)."""
        return load_config_schema(self.name.replace("-", "_"))

    # -- machinery ---------------------------------------------------------
    def build_parser(self):
        parser = _Parser(prog=f"iactpipe-{self.name}", description=self.description)
        self.add_arguments(parser)
        common = parser.add_argument_group("common options")
        common.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                            help="YAML configuration file (repeatable; later files override earlier ones)")
        common.add_argument("--overwrite", action="store_true", help="replace existing output files")
        common.add_argument("--log-level", default="INFO",
                            choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging verbosity")
        common.add_argument("--provenance-log", metavar="FILE",
                            help="also write this run's provenance record as JSON to FILE")
        common.add_argument("--dump-config", action="store_true",
                            help="print the resolved configuration as YAML and exit")
        common.add_argument("--version", action="version", version=f"iactpipe {__version__}")
        schema = self.config_schema()
        group = parser.add_argument_group("configuration (override config-file keys)")
        for key, node in iter_leaves(schema):
            if "cli" not in node:
                continue
            dest = "cfg__" + key.replace(".", "__")
            doc = node.get("doc", "")
            if node["type"] == "quantity":
                doc += f" [{node['unit']}; a number or e.g. '1 {node['unit']}']"
            if "enum" in node:
                doc += f" ({', '.join(map(str, node['enum']))})"
            kwargs = dict(dest=dest, default=None, help=doc.replace("%", "%%"))
            if node["type"] != "boolean":
                kwargs["metavar"] = key.rsplit(".", 1)[-1].upper()
            if node["type"] == "boolean":
                group.add_argument(node["cli"], action=argparse.BooleanOptionalAction, **kwargs)
            elif node["type"] == "array":
                item = node.get("items", {"type": "string"})["type"]
                group.add_argument(node["cli"], nargs="+", type=_cli_type(item), **kwargs)
            else:
                group.add_argument(node["cli"], type=_cli_type(node["type"]), **kwargs)
        return parser

    def main(self, argv=None):
        """Entry point of the console script; returns the exit code."""
        argv = sys.argv[1:] if argv is None else list(argv)
        log = logging.getLogger(f"iactpipe.{self.name}")
        ctx = None
        state = {}
        previous_sigterm = _install_sigterm_handler(self, state)
        try:
            parser = self.build_parser()
            args = parser.parse_args(argv)
            _configure_logging(args.log_level)
            overrides = {}
            for key, value in vars(args).items():
                if key.startswith("cfg__") and value is not None:
                    set_dotted(overrides, key[5:].replace("__", "."), value)
            config = resolve_config(self.config_schema(), args.config, overrides)
            if args.dump_config:
                dump_yaml(config, sys.stdout)
                return 0
            activity = Activity(self.name, config, [f"iactpipe-{self.name}", *argv])
            ctx = state["ctx"] = RunContext(self, args, config, activity, log)
            if args.provenance_log:
                ctx.provenance_log = Output(args.provenance_log, "provenance log")
                _check_writable(ctx.provenance_log.path, args.overwrite)
            t0 = time.perf_counter()
            # opening a table unpickles its enum attributes: that would import ctapipe (~0.5 s), where installed
            with no_unpickling():
                self.run(ctx)
                activity.finish()
                self._finalize(ctx)
            log.info("done in %.1f s", time.perf_counter() - t0)
            return 0
        except IactpipeError as err:
            self._cleanup(ctx)
            print(f"iactpipe-{self.name}: error: {err}", file=sys.stderr)
            return err.exit_code
        except BrokenPipeError:
            # output piped into e.g. `head`, which closed early: not an error
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
            return 0
        except (OSError, tables.HDF5ExtError) as err:
            # the environment failed us (disk full, permissions, unreadable file): one line, exit 1
            self._cleanup(ctx)
            message = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
            print(f"iactpipe-{self.name}: error: {message}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            self._cleanup(ctx)
            print(f"iactpipe-{self.name}: interrupted", file=sys.stderr)
            return 130
        except BaseException:
            self._cleanup(ctx)
            raise
        finally:
            if previous_sigterm is not None:
                signal.signal(signal.SIGTERM, previous_sigterm)

    def _finalize(self, ctx):
        import json

        for out in ctx.outputs:
            if not out.tmp.exists():
                raise DataError(f"{out.path}: step produced no output")
            product = ctx.activity.add_output(out.path, out.role)
            if is_hdf5(out.tmp):
                write_hdf5_provenance(out.tmp, ctx.activity, product, out.data_levels)
            elif is_fits(out.tmp, name=out.path):
                write_fits_provenance(out.tmp, ctx.activity, product)
            out.product_uuid = product
        log_file = ctx.provenance_log
        if log_file is not None:
            log_file.tmp.write_text(json.dumps(ctx.activity.record, indent=2) + "\n")
        for out in [*ctx.outputs, *([log_file] if log_file else [])]:
            os.replace(out.tmp, out.path)
        if ctx.summary:
            print(ctx.summary, flush=True)

    @staticmethod
    def _cleanup(ctx):
        if ctx is None:
            return
        for out in [*ctx.outputs, *([ctx.provenance_log] if ctx.provenance_log else [])]:
            try:
                out.tmp.unlink()
            except FileNotFoundError:
                pass
        for path in reversed(ctx.created_dirs):
            try:
                path.rmdir()  # only if empty: nothing else was in it
            except OSError:
                pass


def _cli_type(kind):
    return {"integer": int, "number": float, "string": str, "quantity": _quantity_text}[kind]


def _quantity_text(text):
    """CLI quantities: a bare number stays a number (schema unit), else the string is parsed later."""
    try:
        return float(text)
    except ValueError:
        return text


def progress(iterable, total=None, desc="", interval=0.5):
    """Yield from ``iterable``, redrawing a progress line on stderr (at most every ``interval`` s)
    only if stderr is a terminal; quiet in batch jobs."""
    if not sys.stderr.isatty():
        yield from iterable
        return
    total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
    t0 = last = time.perf_counter()
    n = 0
    for n, item in enumerate(iterable, 1):
        yield item
        now = time.perf_counter()
        if now - last >= interval or n == total:
            last = now
            frac = f"{n}/{total}" if total else f"{n}"
            print(f"\r{desc} {frac} ({n / max(now - t0, 1e-9):.1f}/s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
