"""The `lowbit` command: one Typer app assembled from the commands each package owns.

    lowbit.sim.cli     config list|show, trace info, sim, validate (and the shared flag conventions)
    lowbit.sim.compile compile (a workload into a program file; --disasm prints one)
    lowbit.models.cli  trace (capture), models list, fp4-sensitivity, train-tiny, eval-tiny, bench-gpu
    lowbit.rtl.cli     rtl, verify
    lowbit.cost.cli    synth, report
    lowbit.explore.cli sweep run|show
Those modules import nothing heavy at module level, so `lowbit --help` starts without torch, amaranth or
triton; a command whose optional extra is missing says which one to install (lowbit.sim.extras).
"""

from __future__ import annotations

import signal
import sys
import threading

import typer

from lowbit.cost import cli as cost_cli
from lowbit.explore import cli as explore_cli
from lowbit.models import cli as models_cli
from lowbit.rtl import cli as rtl_cli
from lowbit.sim import cli as sim_cli
from lowbit.sim import compile as compile_cli
from lowbit.sim.errors import LowbitError, one_line

try:  # typer vendors click (typer >= 0.20); older typer uses click itself
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import UsageError


def build_app() -> typer.Typer:
    app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                      help="lowbit: co-design toolkit for low-bit (ternary, FP4) LLM accelerators.")
    sim_cli.register(app)
    compile_cli.register(app)
    # `lowbit trace --model ... --out DIR` captures (models: needs torch); `lowbit trace info DIR` reads (sim).
    trace_app = typer.Typer(help="Capture a trace from PyTorch (`lowbit trace --model ...`) or inspect one (`info`).")
    models_cli.register_trace(trace_app)
    sim_cli.register_trace(trace_app)
    app.add_typer(trace_app, name="trace")
    models_cli.register(app)
    rtl_cli.register(app)
    cost_cli.register(app)
    explore_cli.register(app)
    return app


app = build_app()


class Interrupted(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM arrived: unwinds like KeyboardInterrupt (temp files removed, child process
    groups ended) but is not swallowed by the CLI framework, so the command can say so and exit 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (docs/errors.md): 0 success, 2 a LowbitError (one line on
    stderr), 130/143 interrupted by SIGINT/SIGTERM; anything else is a bug (traceback, status 1)."""
    cmd = typer.main.get_command(app)
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is not signal.SIG_IGN:  # an ignored signal (nohup, `cmd &`) stays ignored
                handlers[sig] = signal.signal(sig, _raise_interrupted)
    try:
        # not standalone: usage errors come here (one line below) instead of click's multi-line box
        rv = cmd.main(args=argv, prog_name="lowbit", standalone_mode=False)
        return rv if isinstance(rv, int) else 0  # `--help` and typer.Exit return their status
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `lowbit`, `lowbit config`: the help text
            e.show()
        else:
            cmd_name = e.ctx.command_path if e.ctx is not None else "lowbit"
            print(f"error: {one_line(e.format_message())} (see `{cmd_name} --help`)", file=sys.stderr)
        return e.exit_code
    except LowbitError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except (KeyboardInterrupt, Interrupted) as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"error: interrupted ({signal.Signals(signum).name}); unfinished outputs were not written",
              file=sys.stderr)
        return 128 + signum
    except MemoryError:
        print("error: out of memory; use a smaller workload (docs/errors.md lists the size bounds)", file=sys.stderr)
        return 2
    except OSError as e:  # the environment (unreadable input, full disk on a path no writer wraps): one line
        where = f": {e.filename}" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)
    return 0


def run() -> None:
    """Console-script entry point (`lowbit = "lowbit.cli:run"`)."""
    sys.exit(main())
