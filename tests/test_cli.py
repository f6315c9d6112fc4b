"""The replay command: reports on the shipped trace and on small logs, and errors."""

from __future__ import annotations

import bisect
import csv
import datetime
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llm_budget_window.cli import main
from tests.conftest import load_engine

TRACE = Path(__file__).resolve().parents[1] / "data" / "azure_llm_trace_2023_code.csv"
ISSUE_FLAGS = [
    "--window",
    "1m:tokens=200000",
    "--window",
    "10m:usd=5",
    "--price",
    "input=3,output=15",
]
NANOS = 1_000_000_000


def write(tmp_path: Path, text: str, name: str = "log.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def replay_json(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Any:
    """Run the replay in-process with --json and return the decoded report."""
    status = main(["replay", *map(str, argv), "--json"])
    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    return json.loads(out)


# ---------------------------------------------------------------------------
# The shipped trace, against a naive recomputation.


def naive_replay(
    rows: list[tuple[int, int, int]],
    windows: list[tuple[str, int, tuple[int | None, int | None, int | None]]],
) -> tuple[dict[str, Any], list[tuple[int, int, int]]]:
    """Replay (ns, tokens, nano-dollars) rows through (name, ns, caps) windows.

    Recomputes each window's sums from the list of admitted calls, with no
    running state: a call counts in a window while ``now - t < duration``.
    Returns each window's peaks, rejections and first rejection, and the
    admitted calls.
    """
    admitted: list[tuple[int, int, int]] = []
    times: list[int] = []
    latest = rows[0][0]
    result: dict[str, Any] = {
        name: {"peak": [0, 0, 0], "rejected": [0, 0, 0], "first": None}
        for name, _, _ in windows
    }

    def use(duration: int, now: int) -> list[int]:
        inside = admitted[bisect.bisect_right(times, now - duration) :]
        return [sum(r[1] for r in inside), sum(r[2] for r in inside), len(inside)]

    for k, (t, tokens, nanos) in enumerate(rows):
        now = max(t, latest)
        latest = now
        request = (tokens, nanos, 1)
        refused_by = None
        for name, duration, caps in windows:
            used = use(duration, now)
            if any(
                cap is not None and used[axis] + request[axis] > cap
                for axis, cap in enumerate(caps)
            ):
                refused_by = name
                break
        if refused_by is not None:
            counts = result[refused_by]
            counts["rejected"] = [
                a + b for a, b in zip(counts["rejected"], request, strict=True)
            ]
            if counts["first"] is None:
                counts["first"] = k
            continue
        admitted.append((now, tokens, nanos))
        times.append(now)
        for name, duration, _ in windows:
            peak = result[name]["peak"]
            peak[:] = map(max, peak, use(duration, now))
    return result, admitted


def read_trace_independently() -> list[tuple[int, int, int]]:
    """Return the trace's (ns since the first call, tokens, nano-dollars at $3/$15)."""
    rows = []
    with TRACE.open(newline="") as stream:
        for record in csv.DictReader(stream):
            whole, _, digits = record["TIMESTAMP"].partition(".")
            moment = datetime.datetime.strptime(whole, "%Y-%m-%d %H:%M:%S")
            seconds = int(moment.replace(tzinfo=datetime.timezone.utc).timestamp())
            ns = seconds * NANOS + int(digits.ljust(9, "0"))
            context, generated = (
                int(record["ContextTokens"]),
                int(record["GeneratedTokens"]),
            )
            # $3 and $15 per million tokens are 3,000 and 15,000 nano-dollars each.
            rows.append((ns, context + generated, context * 3_000 + generated * 15_000))
    origin = rows[0][0]
    return [(ns - origin, tokens, nanos) for ns, tokens, nanos in rows]


def test_shipped_trace_report_is_identical_on_both_engines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    load_engine("c")

    on_c = replay_json(capsys, TRACE, *ISSUE_FLAGS, "--engine", "c")
    on_py = replay_json(capsys, TRACE, *ISSUE_FLAGS, "--engine", "py")

    assert on_c == on_py


def test_shipped_trace_figures_match_a_naive_recomputation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = read_trace_independently()
    expected, admitted = naive_replay(
        rows,
        [
            ("1m", 60 * NANOS, (200_000, None, None)),
            ("10m", 600 * NANOS, (None, 5 * NANOS, None)),
        ],
    )

    report = replay_json(capsys, TRACE, *ISSUE_FLAGS)

    minute, ten_minutes = report["windows"]
    for window, name, axis, unit in (
        (minute, "1m", "tokens", 1),
        (ten_minutes, "10m", "usd", NANOS),
    ):
        naive = expected[name]
        axis_index = ("tokens", "usd", "requests").index(axis)
        assert window["peaks"][axis]["peak"] == naive["peak"][axis_index] / unit
        assert window["rejected"]["calls"] == naive["rejected"][2]
        assert window["rejected"]["tokens"] == naive["rejected"][0]
        assert window["rejected"]["usd"] == naive["rejected"][1] / NANOS
        assert window["rejected"]["first"]["line"] == naive["first"] + 2
    assert report["admitted"] == {
        "calls": len(admitted),
        "tokens": sum(call[1] for call in admitted),
        "usd": sum(call[2] for call in admitted) / NANOS,
    }
    assert report["input"]["calls"] == len(rows) == 8_819


def test_shipped_trace_with_the_issue_flags_rejects_calls_in_both_windows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = replay_json(capsys, TRACE, *ISSUE_FLAGS)

    minute, ten_minutes = report["windows"]
    assert report["admitted"] == {"calls": 3_239, "tokens": 6_265_954, "usd": 19.807614}
    assert (report["rejected"]["calls"], report["rejected"]["tokens"]) == (
        5_580,
        12_039_916,
    )
    assert minute["peaks"]["tokens"]["peak"] == 199_999
    assert minute["rejected"]["calls"] == 5_577
    assert minute["rejected"]["first"] == {
        "timestamp": "2023-11-16 18:20:21.2423190",
        "seconds": 197.262359,
        "line": 157,
    }
    assert ten_minutes["peaks"]["usd"]["peak"] == 4.99656
    assert ten_minutes["rejected"]["calls"] == 3


def test_module_run_prints_the_text_report_of_the_shipped_trace() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llm_budget_window", "replay", str(TRACE), *ISSUE_FLAGS],
        capture_output=True,
        text=True,
        check=False,
    )

    assert (done.returncode, done.stderr) == (0, "")
    lines = done.stdout.splitlines()
    assert lines[2] == (
        "Admitted 3,239 calls (6,265,954 tokens, $19.807614); "
        "rejected 5,580 (12,039,916 tokens, $38.060748)"
    )
    assert "1m      tokens  200,000   199,999  99.99%" in done.stdout
    assert "10m     usd       $5.00  $4.99656  99.93%" in done.stdout


# ---------------------------------------------------------------------------
# Small logs: one behaviour each.

HEADER = "timestamp,input_tokens,output_tokens\n"


def test_call_at_exactly_the_window_duration_no_longer_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path, HEADER + "100,80,0\n160,80,0\n")

    report = replay_json(capsys, log, "--window", "1m:tokens=100")

    assert report["admitted"]["calls"] == 2


def test_call_a_nanosecond_before_the_duration_still_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path, HEADER + "100,80,0\n159.999999999,80,0\n")

    report = replay_json(capsys, log, "--window", "1m:tokens=100")

    assert report["rejected"]["calls"] == 1


def test_call_reaching_the_cap_exactly_is_admitted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path, HEADER + "0,60,0\n1,30,10\n")

    report = replay_json(capsys, log, "--window", "1m:tokens=100")

    assert (
        report["admitted"]["calls"],
        report["windows"][0]["peaks"]["tokens"]["peak"],
    ) == (2, 100)


def test_call_one_token_over_the_cap_is_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path, HEADER + "0,60,0\n1,30,11\n")

    report = replay_json(capsys, log, "--window", "1m:tokens=100")

    assert report["rejected"]["first"] == {"timestamp": "1", "seconds": 1.0, "line": 3}


def test_rejected_call_counts_nothing_towards_later_calls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path, HEADER + "0,90,0\n1,50,0\n2,10,0\n")

    report = replay_json(capsys, log, "--window", "1m:tokens=100")

    assert (report["admitted"]["calls"], report["admitted"]["tokens"]) == (2, 100)


def test_rejection_counts_against_the_first_declared_window_that_breaches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path, HEADER + "0,90,0\n1,20,0\n")

    report = replay_json(
        capsys, log, "--window", "1h:tokens=100", "--window", "1m:tokens=100"
    )

    assert [w["rejected"]["calls"] for w in report["windows"]] == [1, 0]


def test_rejection_counts_against_the_axis_that_breaches_within_a_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path, "timestamp,tokens,usd\n0,10,0.5\n1,10,0.6\n")

    report = replay_json(capsys, log, "--window", "1m:tokens=1000,usd=1")

    peaks = report["windows"][0]["peaks"]
    assert (peaks["tokens"]["rejected_calls"], peaks["usd"]["rejected_calls"]) == (0, 1)


def test_out_of_order_timestamp_is_counted_at_the_latest_time_seen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # At 30 s the first call would still count; at 60 s, the latest time the
    # budget has seen, it has aged out, so the third call fits.
    log = write(tmp_path, HEADER + "0,100,0\n60,100,0\n30,100,0\n")

    report = replay_json(capsys, log, "--window", "1m:tokens=200")

    assert report["admitted"]["calls"] == 3


def test_peak_names_the_first_call_that_reached_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path, HEADER + "0,50,0\n70,20,30\n130,50,0\n")

    report = replay_json(capsys, log, "--window", "1m:tokens=100")

    assert report["windows"][0]["peaks"]["tokens"] == {
        "cap": 100,
        "peak": 50,
        "reached_at": {"timestamp": "0", "seconds": 0.0, "line": 2},
        "rejected_calls": 0,
    }


def test_usd_is_priced_per_million_tokens_rounding_each_call_half_to_even(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # At $0.0005 per million input tokens a token costs half a nano-dollar: one
    # token rounds to 0, three tokens (1.5) to 2 nano-dollars.
    log = write(tmp_path, HEADER + "0,1,0\n1,3,0\n")

    report = replay_json(capsys, log, "--window", "1m", "--price", "input=0.0005")

    assert report["admitted"]["usd"] == 2e-9


def test_output_tokens_are_priced_at_the_output_price(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path, HEADER + "0,1000000,2000000\n")

    report = replay_json(capsys, log, "--window", "1m", "--price", "input=3,output=15")

    assert report["admitted"]["usd"] == 33.0


def test_usd_column_is_read_when_no_price_is_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path, "timestamp,tokens,usd\n0,10,0.1\n1,10,0.2\n")

    report = replay_json(capsys, log, "--window", "1m:usd=0.3")

    assert (
        report["admitted"]["calls"],
        report["windows"][0]["peaks"]["usd"]["peak"],
    ) == (2, 0.3)


def test_named_columns_are_read_instead_of_the_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path, "when,total,cost\n0,7,0.25\n")

    report = replay_json(
        capsys,
        log,
        "--window",
        "1m",
        "--time-column",
        "when",
        "--tokens-column",
        "total",
        "--usd-column",
        "cost",
    )

    assert report["admitted"] == {"calls": 1, "tokens": 7, "usd": 0.25}


def test_iso_timestamps_with_offsets_are_compared_as_instants(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(
        tmp_path,
        HEADER + "2024-03-01T12:00:00Z,80,0\n2024-03-01T13:01:00+01:00,80,0\n",
    )

    report = replay_json(capsys, log, "--window", "1m:tokens=100")

    assert (report["admitted"]["calls"], report["input"]["span_seconds"]) == (2, 60.0)


def test_seven_fractional_digits_are_kept_exactly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(
        tmp_path,
        HEADER + "2023-11-16 18:17:03.9799600,80,0\n2023-11-16 18:18:03.9799599,80,0\n",
    )

    report = replay_json(capsys, log, "--window", "1m:tokens=100")

    assert report["rejected"]["first"]["seconds"] == 59.9999999


def test_json_lines_log_gives_the_same_figures_as_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_log = write(tmp_path, HEADER + "0,60,0\n1.5,50,0\n61,10,5\n")
    jsonl_log = write(
        tmp_path,
        # A blank first line puts each call on the same line number as in CSV.
        "\n"
        '{"timestamp": 0, "input_tokens": 60, "output_tokens": 0}\n'
        '{"timestamp": 1.5, "input_tokens": 50, "output_tokens": 0}\n'
        '{"timestamp": 61, "input_tokens": 10, "output_tokens": 5}\n',
        "log.jsonl",
    )

    from_csv = replay_json(capsys, csv_log, "--window", "1m:tokens=100")
    from_jsonl = replay_json(capsys, jsonl_log, "--window", "1m:tokens=100")

    assert from_jsonl["windows"] == from_csv["windows"]


def test_json_lines_are_recognised_by_content_when_the_name_says_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path, '{"time": "2024-01-01T00:00:00Z", "tokens": 3}\n', "log.txt")

    report = replay_json(capsys, log, "--window", "1m")

    assert (report["input"]["format"], report["admitted"]["tokens"]) == ("jsonl", 3)


def test_window_without_caps_reports_the_peak_of_every_axis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path, "timestamp,tokens,usd\n0,5,1\n1,6,2\n")

    report = replay_json(capsys, log, "--window", "1d")

    peaks = report["windows"][0]["peaks"]
    assert {axis: peak["peak"] for axis, peak in peaks.items()} == {
        "tokens": 11,
        "usd": 3.0,
        "requests": 2,
    }


def test_json_report_has_the_documented_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(
        tmp_path, HEADER + "1700000000,100,50\n1700000030.5,100,0\n1700000060,40,10\n"
    )

    report = replay_json(
        capsys,
        log,
        "--window",
        "1m:tokens=200,requests=5",
        "--window",
        "1h",
        "--price",
        "input=1,output=2",
    )

    def at(line: int, stamp: str, seconds: float) -> dict[str, Any]:
        return {"timestamp": stamp, "seconds": seconds, "line": line}

    assert report == {
        "report_format_version": 1,
        "input": {
            "path": str(log),
            "format": "csv",
            "calls": 3,
            "time_column": "timestamp",
            "token_columns": ["input_tokens", "output_tokens"],
            "usd_column": None,
            "prices_per_million_tokens": {"input": 1.0, "output": 2.0},
            "first_timestamp": "1700000000",
            "last_timestamp": "1700000060",
            "span_seconds": 60.0,
        },
        "admitted": {"calls": 2, "tokens": 200, "usd": 0.00026},
        "rejected": {
            "calls": 1,
            "tokens": 100,
            "usd": 0.0001,
            "first": at(3, "1700000030.5", 30.5),
        },
        "windows": [
            {
                "name": "1m",
                "duration_seconds": 60.0,
                "caps": {"tokens": 200, "usd": None, "requests": 5},
                "peaks": {
                    "tokens": {
                        "cap": 200,
                        "peak": 150,
                        "reached_at": at(2, "1700000000", 0.0),
                        "rejected_calls": 1,
                    },
                    "requests": {
                        "cap": 5,
                        "peak": 1,
                        "reached_at": at(2, "1700000000", 0.0),
                        "rejected_calls": 0,
                    },
                },
                "admitted_calls": 2,
                "rejected": {
                    "calls": 1,
                    "tokens": 100,
                    "usd": 0.0001,
                    "first": at(3, "1700000030.5", 30.5),
                },
            },
            {
                "name": "1h",
                "duration_seconds": 3600.0,
                "caps": {"tokens": None, "usd": None, "requests": None},
                "peaks": {
                    "tokens": {
                        "cap": None,
                        "peak": 200,
                        "reached_at": at(4, "1700000060", 60.0),
                        "rejected_calls": 0,
                    },
                    "usd": {
                        "cap": None,
                        "peak": 0.00026,
                        "reached_at": at(4, "1700000060", 60.0),
                        "rejected_calls": 0,
                    },
                    "requests": {
                        "cap": None,
                        "peak": 2,
                        "reached_at": at(4, "1700000060", 60.0),
                        "rejected_calls": 0,
                    },
                },
                "admitted_calls": 2,
                "rejected": {"calls": 0, "tokens": 0, "usd": 0.0, "first": None},
            },
        ],
    }


def test_text_report_is_aligned_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path, HEADER + "0,150,0\n30.5,100,0\n60,40,10\n")

    status = main(
        [
            "replay",
            str(log),
            "--window",
            "1m:tokens=200",
            "--window",
            "1h:usd=1",
            "--price",
            "input=1000,output=2000",
            "--engine",
            "py",
        ]
    )

    assert status == 0
    assert capsys.readouterr().out == (
        f"Replay of {log}: 3 calls from 0 to 60 (60 s)\n"
        "tokens per call: input_tokens + output_tokens; USD per call: priced per "
        "million tokens at input $1000, output $2000; engine: py\n"
        "Admitted 2 calls (200 tokens, $0.21); rejected 1 (100 tokens, $0.10)\n"
        "\n"
        "Peak use against caps\n"
        "window  axis      cap   peak  of cap  first reached at    rejected\n"
        "1m      tokens    200    150  75.00%  0 (+0 s, line 2)           1\n"
        "1h      usd     $1.00  $0.21  21.00%  60 (+60 s, line 4)         0\n"
        "\n"
        "Rejections, each counted against the first window that refused it\n"
        "window  duration  admitted  rejected  rejected tokens  rejected USD  "
        "first rejection\n"
        "1m          60 s         2         1              100         $0.10  "
        "30.5 (+30.5 s, line 3)\n"
        "1h       3,600 s         2         0                0         $0.00  -\n"
    )


# ---------------------------------------------------------------------------
# The plot.


def test_plot_writes_a_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "replay.png"

    replay_json(capsys, TRACE, *ISSUE_FLAGS, "--plot", plot)

    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    log = write(tmp_path, HEADER + "0,1,1\n")

    status = main(
        ["replay", str(log), "--window", "1m", "--plot", str(tmp_path / "p.png")]
    )

    assert (status, capsys.readouterr().err) == (
        2,
        "llm-budget-window replay: error: --plot needs matplotlib, which is not "
        "installed: pip install 'llm-budget-window[plot]'\n",
    )


def test_use_over_time_steps_down_when_a_call_ages_out() -> None:
    from llm_budget_window import Axis
    from llm_budget_window._replay_plot import use_over_time

    times, use = use_over_time(
        [(0, 10, 0), (5 * NANOS, 20, 0)], 60 * NANOS, Axis.TOKENS, 100 * NANOS
    )

    assert (times, use) == (
        [0, 0, 5 * NANOS, 60 * NANOS, 65 * NANOS],
        [0, 10, 30, 20, 0],
    )


# ---------------------------------------------------------------------------
# Errors: one line on stderr naming the flag or the file and line, status 2.

GOOD = HEADER + "0,1,1\n"
BAD_ARGUMENTS = [
    pytest.param(
        GOOD,
        ["--window", "1m:tokens"],
        "argument --window: '1m:tokens': expected AXIS=CAP, got 'tokens'",
        id="bad-window-spec",
    ),
    pytest.param(
        GOOD,
        ["--window", "abc"],
        "argument --window: 'abc': expected DURATION[:AXIS=CAP,...] with a duration "
        "such as 30s, 1m, 1.5h or 7d",
        id="bad-duration",
    ),
    pytest.param(
        GOOD,
        ["--window", "1w:usd=1"],
        "argument --window: '1w:usd=1': unknown unit 'w' in '1w' (use s, m, h or d)",
        id="unknown-unit",
    ),
    pytest.param(
        GOOD,
        ["--window", "60"],
        "argument --window: '60': no unit in '60' (use s, m, h or d)",
        id="no-unit",
    ),
    pytest.param(
        GOOD,
        ["--window", "0s"],
        "argument --window: '0s': the duration must be > 0",
        id="zero-duration",
    ),
    pytest.param(
        GOOD,
        ["--window", "1m:calls=5"],
        "argument --window: '1m:calls=5': unknown axis 'calls' "
        "(use tokens, usd or requests)",
        id="unknown-axis",
    ),
    pytest.param(
        GOOD,
        ["--window", "1m:tokens=-5"],
        "argument --window: '1m:tokens=-5': the tokens cap must be >= 0, got '-5'",
        id="negative-cap",
    ),
    pytest.param(
        GOOD,
        ["--window", "1m:requests=2.5"],
        "argument --window: '1m:requests=2.5': the requests cap must be a whole "
        "number, got '2.5'",
        id="fractional-count-cap",
    ),
    pytest.param(
        GOOD,
        ["--window", "1m:usd=lots"],
        "argument --window: '1m:usd=lots': the usd cap must be a number, got 'lots'",
        id="non-numeric-cap",
    ),
    pytest.param(
        GOOD,
        ["--window", "1m:tokens=1,tokens=2"],
        "argument --window: '1m:tokens=1,tokens=2': the tokens cap is given twice",
        id="repeated-axis",
    ),
    pytest.param(
        GOOD,
        ["--window", "1m:tokens=1", "--window", "1m:usd=1"],
        "argument --window: '1m' is given twice; give all of a window's caps in one "
        "--window",
        id="repeated-window",
    ),
    pytest.param(
        GOOD,
        [],
        "the following arguments are required: --window",
        id="no-window",
    ),
    pytest.param(
        GOOD,
        ["--window", "1m", "--price", "input=-3"],
        "argument --price: 'input=-3': the input price must be a number of USD per "
        "million tokens >= 0, got '-3'",
        id="bad-price",
    ),
    pytest.param(
        GOOD,
        ["--window", "1m", "--price", "cached=1"],
        "argument --price: 'cached=1': unknown price 'cached' "
        "(use input, output or tokens)",
        id="unknown-price",
    ),
    pytest.param(
        GOOD,
        ["--window", "1m", "--engine", "rust"],
        "argument --engine: invalid choice: 'rust' (choose from 'auto', 'c', 'py')",
        id="unknown-engine",
    ),
    pytest.param(
        GOOD,
        ["--window", "1m", "--tokens-column", "t", "--input-column", "i"],
        "argument --tokens-column: not allowed with --input-column or --output-column",
        id="total-and-split-columns",
    ),
    pytest.param(
        GOOD,
        ["--window", "1m", "--price", "input=1", "--usd-column", "usd"],
        "argument --usd-column: not allowed with --price (both would set the USD "
        "of a call)",
        id="price-and-usd-column",
    ),
]


@pytest.mark.parametrize(("log_text", "flags", "message"), BAD_ARGUMENTS)
def test_bad_flag_is_one_line_naming_the_flag_with_status_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    log_text: str,
    flags: list[str],
    message: str,
) -> None:
    log = write(tmp_path, log_text)

    status = main(["replay", str(log), *flags])

    out, err = capsys.readouterr()
    assert (status, out, err) == (
        2,
        "",
        f"llm-budget-window replay: error: {message}\n",
    )


BAD_LOGS = [
    pytest.param(
        HEADER + "0,1,1\n1,ten,1\n",
        [],
        "{log} line 3: input_tokens is not a token count "
        "(a whole number, 0 <= n < 2**62): 'ten'",
        id="non-numeric-tokens",
    ),
    pytest.param(
        HEADER + "0,1,1\n1,-4,1\n",
        [],
        "{log} line 3: input_tokens is not a token count "
        "(a whole number, 0 <= n < 2**62): '-4'",
        id="negative-tokens",
    ),
    pytest.param(
        HEADER + "0,1,1\n1,4611686018427387904,0\n",
        [],
        "{log} line 3: input_tokens is not a token count "
        "(a whole number, 0 <= n < 2**62): '4611686018427387904'",
        id="too-many-tokens",
    ),
    pytest.param(
        HEADER + "0,1,1\n4611686018.427387904,1,1\n",
        [],
        "{log} line 3: timestamp '4611686018.427387904' is more than 2**62 ns "
        "(about 146 years) from the first call's",
        id="timestamp-too-far",
    ),
    pytest.param(
        HEADER + "0,1,1\n\nlater,1,1\n",
        [],
        "{log} line 4: timestamp is not a timestamp (ISO 8601 or seconds): 'later'",
        id="bad-timestamp",
    ),
    pytest.param(
        HEADER + "2023-02-30 10:00:00,1,1\n",
        [],
        "{log} line 2: timestamp is not a timestamp (ISO 8601 or seconds): "
        "'2023-02-30 10:00:00'",
        id="impossible-date",
    ),
    pytest.param(
        HEADER + "0,1\n",
        [],
        "{log} line 2: 2 cells, but the header has 3, so no value for output_tokens",
        id="short-row",
    ),
    pytest.param(
        "timestamp,tokens,usd\n0,1,free\n",
        [],
        "{log} line 2: usd is not an amount of USD >= 0: 'free'",
        id="bad-usd",
    ),
    pytest.param("", [], "{log} is empty", id="empty-file"),
    pytest.param(HEADER, [], "{log} has no calls, only a header", id="header-only"),
    pytest.param(
        HEADER + "0,1,1\n",
        ["--time-column", "when"],
        "{log}: no column 'when' (named by --time-column); it has 'timestamp', "
        "'input_tokens', 'output_tokens'",
        id="missing-named-column",
    ),
    pytest.param(
        "at,input_tokens,output_tokens\n0,1,1\n",
        [],
        "{log}: no time column (looked for 'TIMESTAMP', 'timestamp', 'time'; name "
        "one with --time-column); it has 'at', 'input_tokens', 'output_tokens'",
        id="missing-time-column",
    ),
    pytest.param(
        "timestamp,input_tokens\n0,1\n",
        ["--input-column", "input_tokens"],
        "{log}: no output column (looked for 'GeneratedTokens', 'output_tokens', "
        "'completion_tokens'; name one with --output-column); it has 'timestamp', "
        "'input_tokens'",
        id="missing-output-column",
    ),
    pytest.param(
        "timestamp,usd\n0,1\n",
        [],
        "{log}: no token columns (looked for 'ContextTokens'+'GeneratedTokens', "
        "'input_tokens'+'output_tokens', 'prompt_tokens'+'completion_tokens', or one "
        "of 'tokens', 'total_tokens'; name them with --input-column and "
        "--output-column, or --tokens-column); it has 'timestamp', 'usd'",
        id="missing-token-columns",
    ),
    pytest.param(
        HEADER + "0,1,1\n",
        ["--window", "10m:usd=5"],
        "argument --window: '10m' caps USD, but {log} has no usd column: give "
        "--price or --usd-column",
        id="usd-cap-without-usd",
    ),
    pytest.param(
        "timestamp,tokens\n0,1\n",
        ["--price", "input=3"],
        "--price: {log} has one total tokens column ('tokens'), so input and output "
        "prices do not apply; price it with tokens=...",
        id="split-price-on-total-column",
    ),
]


@pytest.mark.parametrize(("log_text", "flags", "message"), BAD_LOGS)
def test_bad_log_is_one_line_naming_the_file_and_line_with_status_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    log_text: str,
    flags: list[str],
    message: str,
) -> None:
    log = write(tmp_path, log_text)

    status = main(["replay", str(log), "--window", "1m", *flags])

    out, err = capsys.readouterr()
    expected = message.format(log=log)
    assert (status, out, err) == (
        2,
        "",
        f"llm-budget-window replay: error: {expected}\n",
    )


def test_row_with_more_cells_than_the_header_is_one_line_naming_the_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path, HEADER + "0,1,1\n1,2,2,9\n")

    status = main(["replay", str(log), "--window", "1m"])

    assert (status, capsys.readouterr().err) == (
        2,
        f"llm-budget-window replay: error: {log} line 3: 4 cells, but the header "
        "has 3\n",
    )


def test_row_short_of_a_column_the_replay_reads_is_one_line_naming_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(
        tmp_path, "timestamp,input_tokens,output_tokens,usd\n0,1,1,0.5\n1,2,2\n"
    )

    status = main(["replay", str(log), "--window", "1m"])

    assert (status, capsys.readouterr().err) == (
        2,
        f"llm-budget-window replay: error: {log} line 3: 3 cells, but the header "
        "has 4, so no value for usd\n",
    )


def test_row_short_only_of_columns_the_replay_does_not_read_is_replayed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path, "timestamp,tokens,note\n0,1,first\n1,2\n")

    report = replay_json(capsys, log, "--window", "1m")

    assert report["admitted"] == {"calls": 2, "tokens": 3, "usd": 0.0}


def test_seconds_after_an_iso_timestamp_is_one_line_naming_the_first_such_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(
        tmp_path,
        HEADER
        + "2024-03-01T12:00:00Z,1,1\n2024-03-01T12:00:05Z,1,1\n"
        + "1709294410,1,1\n1709294420,1,1\n",
    )

    status = main(["replay", str(log), "--window", "1m"])

    assert (status, capsys.readouterr().err) == (
        2,
        f"llm-budget-window replay: error: {log} line 4: timestamp '1709294410' is "
        "a number of seconds, but the first call's, '2024-03-01T12:00:00Z' (line 2), "
        "is an ISO 8601 date-time; write every timestamp the same way\n",
    )


def test_iso_timestamp_after_seconds_is_one_line_naming_the_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(
        tmp_path,
        '{"timestamp": 1709294400, "tokens": 1}\n'
        '{"timestamp": "2024-03-01 12:00:10", "tokens": 1}\n',
        "log.jsonl",
    )

    status = main(["replay", str(log), "--window", "1m"])

    assert (status, capsys.readouterr().err) == (
        2,
        f"llm-budget-window replay: error: {log} line 2: timestamp "
        "'2024-03-01 12:00:10' is an ISO 8601 date-time, but the first call's, "
        "'1709294400' (line 1), is a number of seconds; write every timestamp the "
        "same way\n",
    )


def test_json_numbers_and_numeric_strings_are_the_same_kind_of_timestamp(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(
        tmp_path,
        '{"timestamp": 100, "tokens": 1}\n{"timestamp": "102.5", "tokens": 1}\n',
        "log.jsonl",
    )

    report = replay_json(capsys, log, "--window", "1m")

    assert report["input"]["span_seconds"] == 2.5


def test_json_array_line_is_one_line_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path, '{"timestamp": 0, "tokens": 1}\n[1, 2]\n', "log.jsonl")

    status = main(["replay", str(log), "--window", "1m"])

    assert (status, capsys.readouterr().err) == (
        2,
        f"llm-budget-window replay: error: {log} line 2: not a JSON object\n",
    )


def test_json_number_line_is_one_line_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path, '{"timestamp": 0, "tokens": 1}\n5\n', "log.jsonl")

    status = main(["replay", str(log), "--window", "1m"])

    assert (status, capsys.readouterr().err) == (
        2,
        f"llm-budget-window replay: error: {log} line 2: not a JSON object\n",
    )


def test_bad_json_line_is_one_line_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(
        tmp_path,
        '{"timestamp": 0, "tokens": 1}\n{"timestamp": 1, "tokens": }\n',
        "log.jsonl",
    )

    status = main(["replay", str(log), "--window", "1m"])

    assert (status, capsys.readouterr().err) == (
        2,
        f"llm-budget-window replay: error: {log} line 2: not valid JSON "
        "(Expecting value: line 1 column 28 (char 27))\n",
    )


def test_missing_file_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.csv"

    status = main(["replay", str(missing), "--window", "1m"])

    assert (status, capsys.readouterr().err) == (
        2,
        f"llm-budget-window replay: error: cannot read {missing}: "
        "No such file or directory\n",
    )


def run_module(*argv: str, stdin: bytes = b"") -> tuple[int, str, str]:
    """Run ``python -m llm_budget_window`` with ``stdin`` piped in."""
    done = subprocess.run(
        [sys.executable, "-m", "llm_budget_window", *argv],
        input=stdin,
        capture_output=True,
        check=False,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.mark.skipif(sys.platform == "win32", reason="no /dev/stdin on Windows")
def test_log_piped_to_dev_stdin_replays() -> None:
    status, out, err = run_module(
        "replay", "/dev/stdin", "--window", "1m", stdin=(HEADER + "0,1,1\n").encode()
    )

    assert (status, err) == (0, "")
    assert out.splitlines()[0] == "Replay of /dev/stdin: 1 call from 0 to 0 (0 s)"


def test_dash_reads_the_log_from_standard_input() -> None:
    status, out, err = run_module(
        "replay",
        "-",
        "--window",
        "1m",
        "--json",
        stdin=b'{"timestamp": 0, "tokens": 3}\n{"timestamp": 2, "tokens": 4}\n',
    )

    assert (status, err) == (0, "")
    report = json.loads(out)
    assert (report["input"]["path"], report["input"]["format"]) == ("-", "jsonl")
    assert report["admitted"] == {"calls": 2, "tokens": 7, "usd": 0.0}


def test_bad_row_on_standard_input_names_stdin_and_the_line() -> None:
    status, out, err = run_module(
        "replay", "-", "--window", "1m", stdin=(HEADER + "0,1,1\n1,x,1\n").encode()
    )

    assert (status, out, err) == (
        2,
        "",
        "llm-budget-window replay: error: <stdin> line 3: input_tokens is not a "
        "token count (a whole number, 0 <= n < 2**62): 'x'\n",
    )


def test_dash_without_a_standard_input_is_one_line_naming_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", None)

    status = main(["replay", "-", "--window", "1m"])

    assert (status, capsys.readouterr().err) == (
        2,
        "llm-budget-window replay: error: cannot read <stdin>: it is not open as a "
        "file\n",
    )


def test_blank_standard_input_is_empty() -> None:
    status, out, err = run_module("replay", "-", "--window", "1m", stdin=b"\n \n")

    assert (status, out, err) == (
        2,
        "",
        "llm-budget-window replay: error: <stdin> is empty\n",
    )


def test_lines_ending_in_a_lone_carriage_return_are_separate_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "log.csv"
    log.write_bytes(b"timestamp,tokens\r0,1\r5,2\r")

    report = replay_json(capsys, log, "--window", "1m")

    assert (report["admitted"]["tokens"], report["input"]["span_seconds"]) == (3, 5)


def test_byte_order_mark_before_the_header_is_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "log.csv"
    log.write_bytes(b"\xef\xbb\xbftimestamp,tokens\r\n0,1\r\n")

    report = replay_json(capsys, log, "--window", "1m")

    assert report["input"]["time_column"] == "timestamp"


def test_latin_1_log_is_one_line_naming_the_line_that_is_not_utf_8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "log.csv"
    log.write_bytes("timestamp,tokens,note\n0,1,ok\n1,1,café\n".encode("latin-1"))

    status = main(["replay", str(log), "--window", "1m"])

    assert (status, capsys.readouterr().err) == (
        2,
        f"llm-budget-window replay: error: {log} line 3: not UTF-8 text "
        "(invalid continuation byte); save the log as UTF-8\n",
    )


def test_csv_cell_longer_than_the_csv_module_default_limit_replays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt = "x" * 1_000_000
    log = write(tmp_path, f"timestamp,tokens,prompt\n0,1,{prompt}\n1,2,short\n")

    report = replay_json(capsys, log, "--window", "1m")

    assert report["admitted"] == {"calls": 2, "tokens": 3, "usd": 0.0}


def test_replay_leaves_the_csv_field_size_limit_as_it_found_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = csv.field_size_limit()
    log = write(tmp_path, f"timestamp,tokens,prompt\n0,1,{'x' * 200_000}\n")

    replay_json(capsys, log, "--window", "1m")

    assert csv.field_size_limit() == before


def test_csv_cell_over_the_limit_is_one_line_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from llm_budget_window import cli

    monkeypatch.setattr(cli, "CSV_CELL_LIMIT", 10)
    log = write(tmp_path, "timestamp,tokens,prompt\n0,1,short\n1,1,much too long\n")

    status = main(["replay", str(log), "--window", "1m"])

    assert (status, capsys.readouterr().err) == (
        2,
        f"llm-budget-window replay: error: {log} line 3: not valid CSV "
        "(field larger than field limit (10))\n",
    )


def test_directory_as_the_log_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["replay", str(tmp_path), "--window", "1m"])

    assert (status, capsys.readouterr().err) == (
        2,
        f"llm-budget-window replay: error: cannot read {tmp_path}: Is a directory\n",
    )


def test_os_error_without_a_reason_says_what_failed_instead_of_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from llm_budget_window import _replay_input

    def failing_open(*args: object, **kwargs: object) -> None:
        raise OSError

    monkeypatch.setattr(_replay_input, "open", failing_open, raising=False)
    log = write(tmp_path, GOOD)

    status = main(["replay", str(log), "--window", "1m"])

    assert (status, capsys.readouterr().err) == (
        2,
        f"llm-budget-window replay: error: cannot read {log}: OSError, with no "
        "reason given\n",
    )


def test_unwritable_plot_is_one_line_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    log = write(tmp_path, GOOD)
    plot = tmp_path / "missing-dir" / "p.png"

    status = main(["replay", str(log), "--window", "1m", "--plot", str(plot)])

    assert (status, capsys.readouterr().err) == (
        2,
        f"llm-budget-window replay: error: --plot: cannot write {plot}: "
        "No such file or directory\n",
    )


def test_engine_c_without_the_compiled_core_is_one_line_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "llm_budget_window._budget_c", None)
    log = write(tmp_path, GOOD)

    status = main(["replay", str(log), "--window", "1m", "--engine", "c"])

    assert (status, capsys.readouterr().err) == (
        2,
        "llm-budget-window replay: error: argument --engine: the compiled core is "
        "not built in this installation; use --engine py\n",
    )


def test_module_run_of_a_bad_flag_exits_2_with_one_line_and_no_traceback(
    tmp_path: Path,
) -> None:
    log = write(tmp_path, GOOD)

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm_budget_window",
            "replay",
            str(log),
            "--window",
            "1x",
        ],
        capture_output=True,
        text=True,
        check=False,
    )

    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        "llm-budget-window replay: error: argument --window: '1x': unknown unit 'x' "
        "in '1x' (use s, m, h or d)\n",
    )


@pytest.mark.parametrize(
    "billionths", [0, 1, 999_999_999, 10**9, 3_435_948_056_000, (1 << 52) - 1]
)
def test_replay_passes_times_and_usd_below_2_52_billionths_as_exact_floats(
    billionths: int,
) -> None:
    from llm_budget_window._replay import _exact_units
    from llm_budget_window._types import to_nanos

    value = _exact_units(billionths)
    assert type(value) is float
    assert to_nanos(value, "now") == billionths


def test_replay_passes_times_from_2_52_billionths_on_as_fractions() -> None:
    from fractions import Fraction

    from llm_budget_window._replay import _exact_units

    assert _exact_units(1 << 52) == Fraction(1 << 52, 10**9)
    assert type(_exact_units(1 << 52)) is Fraction


def test_text_report_of_one_call_says_call_not_calls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path, HEADER + "0,5,5\n")

    status = main(["replay", str(log), "--window", "1m:tokens=100"])

    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    assert lines[0] == f"Replay of {log}: 1 call from 0 to 0 (0 s)"
    assert (
        lines[2] == "Admitted 1 call (10 tokens, $0.00); rejected 0 (0 tokens, $0.00)"
    )
