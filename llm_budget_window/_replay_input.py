"""Read a usage log (CSV or JSON Lines) into exact integers for a replay.

Times become integer nanoseconds, tokens integers and USD integer
nano-dollars, all converted exactly (rounding half-to-even only below a
nanosecond or a nano-dollar, as the budget itself does). Every problem with
the file raises ``ReplayInputError`` with a one-line message naming the file
and, for a bad cell, its line (the header of a CSV file is line 1). The file
is read once, front to back, so a pipe or standard input (``-``) works too.
"""

from __future__ import annotations

import csv
import datetime
import itertools
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Literal

from ._types import MAX_AMOUNT, NANOS_PER_UNIT

__all__ = [
    "DEFAULT_COLUMNS",
    "STDIN",
    "Columns",
    "Prices",
    "ReplayInputError",
    "UsageLog",
    "parse_time_ns",
    "read_log",
]

_TOKENS_PER_PRICE_UNIT = 1_000_000

Format = Literal["auto", "csv", "jsonl"]

#: The path that reads the log from standard input.
STDIN = "-"

#: Column names tried, in order, when no column is named on the command line.
#: The first names are those of the shipped Azure trace.
DEFAULT_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "time": ("TIMESTAMP", "timestamp", "time"),
    "input": ("ContextTokens", "input_tokens", "prompt_tokens"),
    "output": ("GeneratedTokens", "output_tokens", "completion_tokens"),
    "tokens": ("tokens", "total_tokens"),
    "usd": ("usd",),
}

#: How a timestamp is written: every call of one log must use the same kind,
#: as seconds from an unknown origin cannot be compared with a date-time.
_TimeKind = Literal["ISO 8601", "seconds"]

_KIND_TEXT: Mapping[_TimeKind, str] = {
    "ISO 8601": "an ISO 8601 date-time",
    "seconds": "a number of seconds",
}

_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_ISO_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r" ?(?:[Zz]|([+-])(\d{2})(?::?(\d{2}))?)?"
)


class ReplayInputError(Exception):
    """A usage log or its columns cannot be read; the message is one line."""


@dataclass(frozen=True)
class Columns:
    """Column (CSV) or key (JSON Lines) names chosen on the command line.

    None means: try the names in ``DEFAULT_COLUMNS``. ``tokens`` names one
    column holding each call's total, instead of an input and an output one.
    """

    time: str | None = None
    input: str | None = None
    output: str | None = None
    tokens: str | None = None
    usd: str | None = None


@dataclass(frozen=True)
class Prices:
    """USD per million tokens, exact; ``tokens`` applies to every token."""

    input: Decimal = Decimal(0)
    output: Decimal = Decimal(0)
    tokens: Decimal = Decimal(0)

    def given(self) -> dict[str, Decimal]:
        """Return the prices that are not zero, by name, in a stable order."""
        named = {"input": self.input, "output": self.output, "tokens": self.tokens}
        return {name: price for name, price in named.items() if price}


@dataclass
class UsageLog:
    """The calls of one log, in file order, as parallel lists.

    ``times_ns`` are nanoseconds on the log's own scale (the Unix epoch for
    ISO 8601 times, read as UTC when they carry no offset); ``stamps`` keep
    each timestamp as written, and ``lines`` each call's line in the file.
    ``token_columns`` are the columns summed into each call's tokens;
    ``usd_column`` is the column USD was read from, and ``prices`` the prices
    it was computed from instead (both None when every call costs 0).
    """

    path: str
    format: Literal["csv", "jsonl"]
    time_column: str
    token_columns: tuple[str, ...]
    usd_column: str | None
    prices: Prices | None
    lines: list[int] = field(default_factory=list)
    stamps: list[str] = field(default_factory=list)
    times_ns: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    usd_nanos: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.times_ns)

    @property
    def name(self) -> str:
        """Return the log's name for messages: its path, or ``<stdin>``."""
        return _display_name(self.path)


def _display_name(path: str) -> str:
    return "<stdin>" if path == STDIN else path


# ---------------------------------------------------------------------------
# Cells. Each parser takes a CSV string or a value decoded from JSON (with
# floats decoded as Decimal, so that nothing is rounded on the way in).


def parse_time_ns(cell: object) -> int:
    """Return a timestamp as integer nanoseconds, or raise ValueError.

    Accepts ISO 8601 (``2023-11-16 18:17:03.9799600``, ``...T...Z``,
    ``...+01:00``; no offset reads as UTC) with any number of fractional
    digits, and plain numbers of seconds (Unix epoch seconds, or any origin).
    """
    return _parse_time(cell)[0]


def _parse_time(cell: object) -> tuple[int, _TimeKind]:
    """Return a timestamp as integer nanoseconds and its kind, or raise ValueError."""
    if isinstance(cell, bool):
        raise ValueError(cell)
    if isinstance(cell, (int, Decimal)):
        return _seconds_to_ns(Decimal(cell)), "seconds"
    if not isinstance(cell, str):
        raise ValueError(cell)
    text = cell.strip()
    # LIMITATION: a time without an offset is read as UTC, as the log gives no
    # zone; a log written in local time jumps by an hour at a daylight-saving
    # change. See docs/replay.md, Limitations.
    match = _ISO_TIME.fullmatch(text)
    if match is None:
        return _seconds_to_ns(_decimal(text)), "seconds"
    year, month, day, hour, minute, second, digits, sign, off_h, off_m = match.groups()
    moment = datetime.datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second or 0)
    )
    seconds = (moment.toordinal() - _EPOCH_ORDINAL) * 86_400 + (
        moment.hour * 3600 + moment.minute * 60 + moment.second
    )
    if sign is not None:
        offset = int(off_h) * 3600 + int(off_m or 0) * 60
        seconds -= offset if sign == "+" else -offset
    if not digits:
        fraction_ns = 0
    elif len(digits) <= 9:
        fraction_ns = int(digits.ljust(9, "0"))
    else:
        fraction_ns = round(Fraction(int(digits), 10 ** len(digits)) * NANOS_PER_UNIT)
    return seconds * NANOS_PER_UNIT + fraction_ns, "ISO 8601"


def _decimal(text: str) -> Decimal:
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ValueError(text) from None
    return _bounded(number)


def _bounded(number: Decimal) -> Decimal:
    """Return a finite Decimal below 10**31 in size, or raise ValueError.

    Every amount the budget accepts is far smaller; the bound keeps a cell
    such as ``1e999999999`` from becoming an integer of a billion digits.
    """
    if not number.is_finite() or number.adjusted() > 30:
        raise ValueError(number)
    return number


def _seconds_to_ns(seconds: Decimal) -> int:
    return round(Fraction(_bounded(seconds)) * NANOS_PER_UNIT)


def _parse_count(cell: object) -> int:
    """Return a whole number of tokens, 0 <= n < 2**62, or raise ValueError."""
    if type(cell) is int:
        count = cell
    elif isinstance(cell, str) and cell.isascii() and cell.isdigit():
        count = int(cell)
    elif isinstance(cell, str):
        number = _decimal(cell.strip())
        if number != number.to_integral_value():
            raise ValueError(cell)
        count = int(number)
    elif isinstance(cell, Decimal) and _bounded(cell) == int(cell):
        count = int(cell)
    else:
        raise ValueError(cell)
    if not 0 <= count < MAX_AMOUNT:
        raise ValueError(cell)
    return count


def _parse_usd_nanos(cell: object) -> int:
    """Return dollars as whole nano-dollars, 0 <= n < 2**62, or raise ValueError."""
    if isinstance(cell, str):
        number = _decimal(cell.strip())
    elif isinstance(cell, Decimal) or type(cell) is int:
        number = _bounded(Decimal(cell))
    else:
        raise ValueError(cell)
    if number < 0:
        raise ValueError(cell)
    nanos = round(Fraction(number) * NANOS_PER_UNIT)
    if nanos >= MAX_AMOUNT:
        raise ValueError(cell)
    return nanos


# ---------------------------------------------------------------------------
# Records of either format: the names the first record offers, and a function
# that, given the names the replay reads, yields each record as (line number,
# mapping of name to cell).

_Record = tuple[int, Mapping[str, object]]
_Records = tuple[list[str], Callable[[Sequence[str]], Iterator[_Record]]]


def _csv_records(path: str, stream: Iterable[str]) -> _Records:
    reader = csv.reader(stream)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise ReplayInputError(
            f"{path} line {reader.line_num}: not valid CSV ({exc})"
        ) from None
    if header is None:
        raise ReplayInputError(f"{path} is empty")
    names = [name.strip() for name in header]
    width = len(names)

    def rows(needed: Sequence[str]) -> Iterator[_Record]:
        try:
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                # A row of another width is out of step with the header: extra
                # cells would be dropped, and a short row may have lost a cell
                # anywhere. A short row is read only if it has every column read.
                record = dict(zip(names, row, strict=False))
                lost = next((name for name in needed if name not in record), None)
                if len(row) > width or lost is not None:
                    where = f"{path} line {reader.line_num}"
                    raise ReplayInputError(
                        f"{where}: {len(row)} cells, but the header has {width}"
                        + ("" if lost is None else f", so no value for {lost}")
                    )
                yield reader.line_num, record
        except csv.Error as exc:
            raise ReplayInputError(
                f"{path} line {reader.line_num}: not valid CSV ({exc})"
            ) from None

    return names, rows


def _jsonl_records(path: str, stream: Iterable[str]) -> _Records:
    def records() -> Iterator[_Record]:
        for number, text in enumerate(stream, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text, parse_float=Decimal)
            except ValueError as exc:
                raise ReplayInputError(
                    f"{path} line {number}: not valid JSON ({exc})"
                ) from None
            if not isinstance(record, dict):
                raise ReplayInputError(f"{path} line {number}: not a JSON object")
            yield number, record

    remaining = records()
    first = next(remaining, None)
    if first is None:
        raise ReplayInputError(f"{path} is empty")
    # A missing key is reported when its value is read, by _cell.
    return list(first[1]), lambda needed: itertools.chain([first], remaining)


def _detect_format(path: str, first_line: str) -> Literal["csv", "jsonl"]:
    suffix = path.lower().rsplit(".", 1)[-1]
    if suffix in ("jsonl", "ndjson"):
        return "jsonl"
    if suffix == "csv":
        return "csv"
    return "jsonl" if first_line.lstrip().startswith("{") else "csv"


_BOM = b"\xef\xbb\xbf"
_LONE_CR = re.compile("\r(?!\n)")
_LONE_CR_BYTES = re.compile(b"\r(?!\n)")
_TEXT_LINE = re.compile("[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


def _text_lines(path: str, stream: Iterable[bytes]) -> Iterator[str]:
    """Yield the UTF-8 lines of a byte stream, line ends kept, in one pass.

    Lines end at ``\n``, ``\r\n`` or a lone ``\r``, as in a file opened with
    ``newline=""`` (what the csv module asks for); a leading byte order mark is
    dropped. Decoding line by line, rather than through a text wrapper, lets a
    byte that is not UTF-8 be reported with its line.
    """
    number = 0
    for raw in stream:
        if number == 0 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = number + 1 + len(_LONE_CR_BYTES.findall(raw, 0, exc.start))
            raise ReplayInputError(
                f"{path} line {line}: not UTF-8 text ({exc.reason}); "
                "save the log as UTF-8"
            ) from None
        if "\r" in text and _LONE_CR.search(text):
            pieces = _TEXT_LINE.findall(text)
            number += len(pieces)
            yield from pieces
        else:
            number += 1
            yield text


# ---------------------------------------------------------------------------
# Choosing the columns.


@dataclass(frozen=True)
class _Plan:
    """Which column holds what, for one log."""

    time: str
    input: str | None
    output: str | None
    tokens: str | None
    usd: str | None


def _pick(
    names: Sequence[str], given: str | None, role: str, flag: str, path: str
) -> str | None:
    """Return the column for one role: the one given, or the first default present."""
    if given is not None:
        if given not in names:
            raise ReplayInputError(
                f"{path}: no column {given!r} (named by {flag}); "
                f"it has {', '.join(map(repr, names))}"
            )
        return given
    return next((name for name in DEFAULT_COLUMNS[role] if name in names), None)


def _missing(path: str, role: str, flag: str, names: Sequence[str]) -> ReplayInputError:
    looked = ", ".join(map(repr, DEFAULT_COLUMNS[role]))
    return ReplayInputError(
        f"{path}: no {role} column (looked for {looked}; name one with {flag}); "
        f"it has {', '.join(map(repr, names))}"
    )


def _plan(
    path: str, names: Sequence[str], columns: Columns, prices: Prices | None
) -> _Plan:
    time = _pick(names, columns.time, "time", "--time-column", path)
    if time is None:
        raise _missing(path, "time", "--time-column", names)

    total: str | None = None
    first_in = _pick(names, columns.input, "input", "--input-column", path)
    first_out = _pick(names, columns.output, "output", "--output-column", path)
    split_named = columns.input is not None or columns.output is not None
    if columns.tokens is not None:
        total = _pick(names, columns.tokens, "tokens", "--tokens-column", path)
        first_in = first_out = None
    elif split_named or (first_in is not None and first_out is not None):
        if first_in is None:
            raise _missing(path, "input", "--input-column", names)
        if first_out is None:
            raise _missing(path, "output", "--output-column", names)
    else:
        total = _pick(names, None, "tokens", "--tokens-column", path)
        if total is None:
            looked = ", ".join(
                f"{i!r}+{o!r}"
                for i, o in zip(
                    DEFAULT_COLUMNS["input"], DEFAULT_COLUMNS["output"], strict=True
                )
            )
            raise ReplayInputError(
                f"{path}: no token columns (looked for {looked}, or one of "
                f"{', '.join(map(repr, DEFAULT_COLUMNS['tokens']))}; name them with "
                "--input-column and --output-column, or --tokens-column); "
                f"it has {', '.join(map(repr, names))}"
            )
        first_in = first_out = None

    if prices is not None:
        if total is not None and (prices.input or prices.output):
            raise ReplayInputError(
                f"--price: {path} has one total tokens column ({total!r}), so "
                "input and output prices do not apply; price it with tokens=..."
            )
        usd = None
    else:
        usd = _pick(names, columns.usd, "usd", "--usd-column", path)
    return _Plan(time, first_in, first_out, total, usd)


# ---------------------------------------------------------------------------
# Reading.


def read_log(
    path: str,
    *,
    columns: Columns = Columns(),
    prices: Prices | None = None,
    file_format: Format = "auto",
) -> UsageLog:
    """Read every call of a CSV or JSON Lines usage log, in file order.

    ``path`` may be ``-`` (``STDIN``) for standard input; the log is read
    once, front to back, so a pipe works. Tokens per call are input + output
    tokens (or the one total column). USD per call is priced from the tokens
    when ``prices`` is given (per million tokens, rounded once per call to a
    nano-dollar), else read from the USD column if there is one, else 0. A CSV
    cell may be as long as the csv module's ``field_size_limit()``. Raises
    ReplayInputError.
    """
    name = _display_name(path)
    try:
        if path == STDIN:
            stdin = getattr(sys.stdin, "buffer", None)
            if stdin is None:
                raise ReplayInputError(f"cannot read {name}: it is not open as a file")
            return _read_stream(path, name, stdin, columns, prices, file_format)
        with open(path, "rb") as stream:
            return _read_stream(path, name, stream, columns, prices, file_format)
    except OSError as exc:
        raise ReplayInputError(f"cannot read {name}: {_reason(exc)}") from None


def _reason(exc: OSError) -> str:
    """Return why an operating-system call failed, never ``None``."""
    return exc.strerror or str(exc) or f"{type(exc).__name__}, with no reason given"


def _read_stream(
    path: str,
    name: str,
    stream: Iterable[bytes],
    columns: Columns,
    prices: Prices | None,
    file_format: Format,
) -> UsageLog:
    # Detect the format from the first line that is not blank, keeping the
    # lines read so far instead of seeking back, which a pipe cannot do.
    lines = _text_lines(name, stream)
    head: list[str] = []
    for line in lines:
        head.append(line)
        if line.strip():
            break
    else:
        raise ReplayInputError(f"{name} is empty")
    chosen = _detect_format(path, head[-1]) if file_format == "auto" else file_format
    text = itertools.chain(head, lines)
    names, read_records = (
        _csv_records(name, text) if chosen == "csv" else _jsonl_records(name, text)
    )
    plan = _plan(name, names, columns, prices)
    token_columns = (
        (plan.tokens,)
        if plan.tokens is not None
        else tuple(column for column in (plan.input, plan.output) if column is not None)
    )
    usd_column = plan.usd if prices is None else None
    records = read_records(
        [plan.time, *token_columns, *([] if usd_column is None else [usd_column])]
    )
    # LIMITATION: every call is read into memory (about 250 bytes a call)
    # before the replay starts, because the report and the plot refer back to
    # the calls' timestamps and lines. See docs/replay.md, Limitations.
    log = UsageLog(path, chosen, plan.time, token_columns, plan.usd, prices)

    # Nano-dollars per token, as integers over one common denominator, so that
    # pricing a call is integer arithmetic with a single rounding.
    scale = Fraction(NANOS_PER_UNIT, _TOKENS_PER_PRICE_UNIT)
    rates = prices or Prices()
    per_token = [
        Fraction(rates.input + rates.tokens) * scale,
        Fraction(rates.output + rates.tokens) * scale,
        Fraction(rates.tokens) * scale,
    ]
    denominator = math.lcm(*(rate.denominator for rate in per_token))
    rate_in, rate_out, rate_all = (
        rate.numerator * (denominator // rate.denominator) for rate in per_token
    )

    first_kind: _TimeKind | None = None
    for number, record in records:
        where = f"{name} line {number}"

        stamp = _cell(record, plan.time, where)
        try:
            time_ns, kind = _parse_time(stamp)
        except (ValueError, OverflowError):
            raise ReplayInputError(
                f"{where}: {plan.time} is not a timestamp (ISO 8601 or seconds): "
                f"{stamp!r}"
            ) from None
        if first_kind is None:
            first_kind = kind
        elif kind != first_kind:
            raise ReplayInputError(
                f"{where}: {plan.time} {stamp!r} is {_KIND_TEXT[kind]}, but the "
                f"first call's, {log.stamps[0]!r} (line {log.lines[0]}), is "
                f"{_KIND_TEXT[first_kind]}; write every timestamp the same way"
            )
        if log.times_ns and abs(time_ns - log.times_ns[0]) >= MAX_AMOUNT:
            raise ReplayInputError(
                f"{where}: {plan.time} {stamp!r} is more than 2**62 ns "
                "(about 146 years) from the first call's"
            )

        if plan.tokens is not None:
            tokens = _count(record, plan.tokens, where)
            priced = tokens * rate_all
        else:
            assert plan.input is not None
            assert plan.output is not None
            input_tokens = _count(record, plan.input, where)
            output_tokens = _count(record, plan.output, where)
            tokens = input_tokens + output_tokens
            priced = input_tokens * rate_in + output_tokens * rate_out
        if tokens >= MAX_AMOUNT:
            raise ReplayInputError(f"{where}: {tokens} tokens is too many for one call")

        if prices is not None:
            nanos = _divide_half_even(priced, denominator)
        elif plan.usd is not None:
            cell = _cell(record, plan.usd, where)
            try:
                nanos = _parse_usd_nanos(cell)
            except ValueError:
                raise ReplayInputError(
                    f"{where}: {plan.usd} is not an amount of USD >= 0: {cell!r}"
                ) from None
        else:
            nanos = 0
        if nanos >= MAX_AMOUNT:
            raise ReplayInputError(f"{where}: the USD of this call is too large")

        log.lines.append(number)
        log.stamps.append(stamp if isinstance(stamp, str) else str(stamp))
        log.times_ns.append(time_ns)
        log.tokens.append(tokens)
        log.usd_nanos.append(nanos)

    if not log.times_ns:
        raise ReplayInputError(f"{name} has no calls, only a header")
    return log


def _divide_half_even(numerator: int, denominator: int) -> int:
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2):
        quotient += 1
    return quotient


def _cell(record: Mapping[str, object], name: str, where: str) -> object:
    cell = record.get(name)
    if cell is None:
        raise ReplayInputError(f"{where}: no value for {name}")
    return cell


def _count(record: Mapping[str, object], name: str, where: str) -> int:
    cell = _cell(record, name, where)
    try:
        return _parse_count(cell)
    except (ValueError, OverflowError):
        raise ReplayInputError(
            f"{where}: {name} is not a token count "
            f"(a whole number, 0 <= n < 2**62): {cell!r}"
        ) from None
