"""The ``llm-budget-window`` command: replay a usage log through a budget.

    llm-budget-window replay LOG --window 1m:tokens=50000,usd=1 --window 1h:usd=10
        [--price input=3,output=15] [--json] [--plot FILE.png] [--engine c|py]

Every error, in a flag or in the log, is one line on stderr naming the flag
or the file and line, with exit status 2. See docs/replay.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NoReturn

from ._replay import (
    Budget,
    SpecError,
    parse_prices,
    parse_window,
    render_json,
    render_text,
    replay,
)
from ._replay_input import Columns, Prices, ReplayInputError, read_log
from ._replay_plot import PlotError, plot_report, require_matplotlib
from ._types import Window

__all__ = ["main"]

PROG = "llm-budget-window"

EngineFactory = Callable[[Iterable[Window]], Budget]

#: Characters a CSV cell may hold during a replay, instead of the csv module's
#: default of 131,072, which a column of prompt text easily exceeds. The
#: largest value a C long holds on every platform.
CSV_CELL_LIMIT = 2**31 - 1


class CommandLineError(Exception):
    """A one-line error for stderr; the command then exits with status 2."""


def _replay_error(message: str) -> CommandLineError:
    return CommandLineError(f"{PROG} replay: error: {message}")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and do not exit by themselves."""

    def error(self, message: str) -> NoReturn:
        raise CommandLineError(f"{self.prog}: error: {message}")


def _window_argument(text: str) -> Window:
    try:
        return parse_window(text)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _price_argument(text: str) -> Prices:
    try:
        return parse_prices(text)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the whole command line."""
    parser = _Parser(
        prog=PROG, description="Cap LLM spend over several rolling time windows."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "replay",
        help="replay a usage log through a budget and report what it refused",
        description=(
            "Feed every call of a usage log (CSV or JSON Lines), in file order and "
            "at its own timestamp, through a budget of rolling windows; report the "
            "peak use of every capped axis and the calls that would have been "
            "rejected."
        ),
    )
    run.add_argument("log", metavar="LOG", help="the usage log, CSV or JSON Lines")
    run.add_argument(
        "--window",
        metavar="SPEC",
        action="append",
        required=True,
        type=_window_argument,
        help=(
            "a window as DURATION[:AXIS=CAP,...], DURATION a number and a unit "
            "s, m, h or d, AXIS tokens, usd or requests; e.g. 1m:tokens=50000,usd=1. "
            "Repeat for more windows; declaration order decides which window a "
            "rejection is counted against"
        ),
    )
    run.add_argument(
        "--price",
        metavar="NAME=USD,...",
        type=_price_argument,
        help=(
            "price calls at USD per million tokens: input=3,output=15 (or "
            "tokens=X for every token); without it, USD comes from a usd column"
        ),
    )
    columns = run.add_argument_group("columns (CSV) or keys (JSON Lines)")
    columns.add_argument(
        "--time-column", metavar="NAME", help="default: TIMESTAMP, timestamp, time"
    )
    columns.add_argument(
        "--input-column",
        metavar="NAME",
        help="input tokens; default: ContextTokens, input_tokens, prompt_tokens",
    )
    columns.add_argument(
        "--output-column",
        metavar="NAME",
        help="output tokens; default: GeneratedTokens, output_tokens, "
        "completion_tokens",
    )
    columns.add_argument(
        "--tokens-column",
        metavar="NAME",
        help="one column of total tokens per call, instead of input and output",
    )
    columns.add_argument(
        "--usd-column", metavar="NAME", help="USD per call; default: usd"
    )
    run.add_argument(
        "--format",
        choices=("auto", "csv", "jsonl"),
        default="auto",
        help="default: from the file name (.csv, .jsonl, .ndjson), else its content",
    )
    run.add_argument(
        "--json", action="store_true", help="print the report as JSON instead"
    )
    run.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw use against caps over time (needs the plot extra)",
    )
    run.add_argument(
        "--engine",
        choices=("auto", "c", "py"),
        default="auto",
        help="c: the compiled core; py: the pure-Python twin; default: as imported",
    )
    return parser


def _load_engine(name: str) -> tuple[str, EngineFactory]:
    """Return the id and the BudgetWindows class of the engine asked for."""
    if name == "py":
        from ._budget_py import BudgetWindows as PyBudgetWindows

        return "py", PyBudgetWindows
    if name == "c":
        try:
            from ._budget_c import BudgetWindows as CBudgetWindows
        except ImportError:
            raise _replay_error(
                "argument --engine: the compiled core is not built in this "
                "installation; use --engine py"
            ) from None
        return "c", CBudgetWindows
    from . import IMPLEMENTATION, BudgetWindows

    return IMPLEMENTATION, BudgetWindows


def _check_flags(args: argparse.Namespace) -> None:
    """Reject combinations of flags that argparse cannot judge by itself."""
    seen: set[str] = set()
    for window in args.window:
        if window.name in seen:
            raise _replay_error(
                f"argument --window: {window.name!r} is given twice; give all of "
                "a window's caps in one --window"
            )
        seen.add(window.name)
    if args.tokens_column and (args.input_column or args.output_column):
        raise _replay_error(
            "argument --tokens-column: not allowed with --input-column or "
            "--output-column"
        )
    if args.price and args.usd_column:
        raise _replay_error(
            "argument --usd-column: not allowed with --price (both would set the "
            "USD of a call)"
        )


@contextlib.contextmanager
def _csv_cells_up_to(limit: int) -> Iterator[None]:
    """Raise the csv module's field size limit, process-wide, for the block only."""
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _run_replay(args: argparse.Namespace) -> int:
    _check_flags(args)
    engine_name, engine = _load_engine(args.engine)
    if args.plot:
        require_matplotlib()

    columns = Columns(
        time=args.time_column,
        input=args.input_column,
        output=args.output_column,
        tokens=args.tokens_column,
        usd=args.usd_column,
    )
    with _csv_cells_up_to(CSV_CELL_LIMIT):
        log = read_log(
            args.log, columns=columns, prices=args.price, file_format=args.format
        )
    if log.prices is None and log.usd_column is None:
        for window in args.window:
            if window.usd_cap is not None:
                raise _replay_error(
                    f"argument --window: {window.name!r} caps USD, but {log.name} "
                    "has no usd column: give --price or --usd-column"
                )

    try:
        report = replay(log, args.window, engine, keep_timeline=bool(args.plot))
    except OverflowError as exc:
        raise _replay_error(f"{log.name}: {exc}") from None

    if args.plot:
        plot_report(report, args.plot)
    sys.stdout.write(
        render_json(report) + "\n" if args.json else render_text(report, engine_name)
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status (2 for any error).

    ``argv`` defaults to ``sys.argv[1:]``. Reports go to stdout; each error
    is one line on stderr.
    """
    try:
        args = build_parser().parse_args(argv)
        return _run_replay(args)
    except CommandLineError as exc:
        print(exc, file=sys.stderr)
    except (ReplayInputError, PlotError) as exc:
        print(_replay_error(str(exc)), file=sys.stderr)
    return 2
