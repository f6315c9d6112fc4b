"""Draw a replay's use of each reported axis against its cap, over time.

Needs matplotlib (the ``plot`` extra); this module imports it only when it
draws, and nothing imports this module's drawing unless ``--plot`` is given.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from ._replay import ReplayReport, _amount_text, _seconds_text
from ._types import AXES, Axis

__all__ = ["PlotError", "plot_report", "require_matplotlib", "use_over_time"]

_AXIS_LABELS = {Axis.TOKENS: "tokens", Axis.USD: "USD", Axis.REQUESTS: "calls"}
_TICK_FORMATS = {
    Axis.TOKENS: "{x:,.0f}",
    Axis.USD: "${x:,.2f}",
    Axis.REQUESTS: "{x:,.0f}",
}
_NANOS_PER_UNIT = 1_000_000_000


class PlotError(Exception):
    """The plot cannot be drawn or written; the message is one line."""


def require_matplotlib() -> None:
    """Raise PlotError unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotError(
            "--plot needs matplotlib, which is not installed: "
            "pip install 'llm-budget-window[plot]'"
        ) from None


def use_over_time(
    admitted: Sequence[tuple[int, int, int]],
    duration_ns: int,
    axis: Axis,
    until_ns: int,
) -> tuple[list[int], list[int]]:
    """Return a window's use on one axis as a step function of time.

    ``admitted`` is the replay's timeline of admitted calls (ns, tokens,
    nano-dollars). The result is (times in ns, use from that time on, in
    tokens, nano-dollars or calls), with a step at every call and at every
    moment a call ages out, up to ``until_ns``.
    """
    field = AXES.index(axis)
    changes: list[tuple[int, int]] = []
    for at, *amounts in admitted:
        amount = 1 if axis is Axis.REQUESTS else amounts[field]
        changes.append((at, amount))
        changes.append((at + duration_ns, -amount))
    changes.sort(key=lambda change: change[0])

    times, use, total = [0], [0], 0
    for at, group in itertools.groupby(changes, key=lambda change: change[0]):
        if at > until_ns:
            break
        total += sum(amount for _, amount in group)
        times.append(at)
        use.append(total)
    return times, use


def _time_unit(span_ns: int) -> tuple[str, int]:
    """Return the unit and its length in ns that keep the time axis readable."""
    for name, seconds in (("days", 86_400), ("hours", 3600), ("minutes", 60)):
        if span_ns >= 3 * seconds * _NANOS_PER_UNIT:
            return name, seconds * _NANOS_PER_UNIT
    return "seconds", _NANOS_PER_UNIT


def plot_report(report: ReplayReport, path: str) -> None:
    """Write the plot to ``path``, in the format its suffix names (PNG, SVG...).

    One panel per reported axis of each window: the use over time, the cap,
    and the calls refused on that axis of that window. The report must have
    been made with ``keep_timeline=True``. Raises PlotError.
    """
    require_matplotlib()
    from matplotlib.figure import Figure
    from matplotlib.ticker import StrMethodFormatter

    timeline = report.timeline
    assert timeline is not None, "replay(..., keep_timeline=True) draws a timeline"
    log = report.log
    span_ns = log.times_ns[-1] - log.times_ns[0]
    unit, unit_ns = _time_unit(span_ns)
    panels = [
        (i, window_report, peak)
        for i, window_report in enumerate(report.windows)
        for peak in window_report.peaks
    ]

    figure = Figure(figsize=(10, 1.0 + 2.6 * len(panels)), layout="constrained")
    figure.suptitle(f"Replay of {log.name}: use of each window against its caps")
    grid = figure.subplots(len(panels), 1, sharex=True, squeeze=False)
    for chart, (i, window_report, peak) in zip(grid[:, 0], panels, strict=True):
        window = window_report.window
        times, use = use_over_time(
            timeline.admitted, window.duration_ns, peak.axis, span_ns
        )
        scale = _NANOS_PER_UNIT if peak.axis is Axis.USD else 1
        chart.step(
            [t / unit_ns for t in times],
            [amount / scale for amount in use],
            where="post",
            linewidth=0.8,
            label="use",
        )
        if peak.cap is not None:
            chart.axhline(
                peak.cap,
                color="tab:red",
                linestyle="--",
                linewidth=1,
                label=f"cap {_amount_text(peak.axis, peak.cap)}",
            )
            refused = [
                at / unit_ns
                for at, window_index, axis in timeline.rejected
                if window_index == i and axis is peak.axis
            ]
            if refused:
                chart.plot(
                    refused,
                    [peak.cap] * len(refused),
                    linestyle="none",
                    marker="|",
                    markersize=9,
                    color="black",
                    label=f"{len(refused):,} calls rejected here",
                )
        chart.set_title(
            f"window {window.name} ({_seconds_text(window.duration_ns)} s): "
            f"{peak.axis.value}, peak {_amount_text(peak.axis, peak.peak)}",
            loc="left",
            fontsize="medium",
        )
        chart.set_ylabel(_AXIS_LABELS[peak.axis])
        # Headroom above the cap keeps its line and the rejection marks visible.
        top = max(peak.cap or 0, max(use) / scale)
        chart.set_ylim(0, top * 1.15 or 1)
        chart.set_xlim(0, max(span_ns, unit_ns // 10) / unit_ns)
        chart.yaxis.set_major_formatter(StrMethodFormatter(_TICK_FORMATS[peak.axis]))
        chart.grid(alpha=0.3)
        chart.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    grid[-1, 0].set_xlabel(f"{unit} since the first call ({log.stamps[0]})")

    try:
        figure.savefig(path, dpi=110)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise PlotError(f"--plot: cannot write {path}: {reason}") from None
