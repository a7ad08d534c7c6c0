"""What every command-line tool in ``tools/`` shares: how it reports an error, the exit status it
ends with, and how it shows progress. Standard library only.

Exit statuses (argparse's own refusal of arguments is 2 as well):

* :data:`EXIT_OK` (0): everything done;
* :data:`EXIT_SOME_FAILED` (1): the run went through, but some of its items failed, each reported
  (an unreadable image), or it fell short of its goal (a demo below its target);
* :data:`EXIT_ERROR` (2): the run stopped on an error: nothing, or nothing more, was done (bad
  arguments; an input, checkpoint or config that cannot be used; an output that cannot be written).

Every error is one ``error: <what was wrong>`` line on stderr (:func:`fail`; argparse's own for
arguments, with :func:`int_at_least` for counts), and progress is one line per step,
``[<label> <done>/<total>] <text>`` (:class:`Progress`, :class:`Phases`).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, Dict, List, Optional, TextIO

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_ERROR = 2


def fail(message: object, status: int = EXIT_ERROR) -> int:
    """Print ``error: <message>`` on stderr and return ``status``, for ``return fail(...)`` in a
    tool's ``main``.

    Args:
        message: What went wrong (an exception prints its text).
        status: The exit status to return.
    """
    print(f"error: {message}", file=sys.stderr, flush=True)
    return status


def collect_errors(failed: List[str]) -> Callable[[Exception], None]:
    """A handler for the errors of single items (an unreadable image) that a run reports and goes
    on: each is printed as by :func:`fail` and its text appended to ``failed``.

    Args:
        failed: Collects the error texts; the run ends with :data:`EXIT_SOME_FAILED` if any.
    """
    def report(err: Exception) -> None:
        failed.append(str(err))
        fail(err)

    return report


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for ints >= ``minimum``: argparse refuses anything else with
    ``argument --x: must be an int >= <minimum>, got '<text>'`` (exit status 2).

    Args:
        minimum: The smallest value allowed.
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an int >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def add_channel_options(parser: argparse.ArgumentParser, stats_default: str) -> None:
    """``--in-channels N``, ``--mean M...`` and ``--std S...`` (one value per input channel), as
    the image tools take them.

    Args:
        parser: The tool's parser.
        stats_default: What ``--mean``/``--std`` default to for RGB models.
    """
    parser.add_argument("--in-channels", type=int_at_least(1), default=None, metavar="N",
                        help="input channels of the model (default: the checkpoint's); an RGB "
                             "checkpoint is adapted to N, and every input is read with N channels")
    for name, metavar in (("mean", "M"), ("std", "S")):
        parser.add_argument(f"--{name}", nargs="+", type=float, default=None, metavar=metavar,
                            help=f"normalisation {name} for pixels in [0, 1], one per input "
                                 f"channel (default: {stats_default}; required for other than 3 "
                                 "channels)")


class Progress:
    """Progress of a run of ``total`` steps, one line per report: ``[<label> <done>/<total>]
    <text>``.

    Args:
        label: The tool's or run's name, at the start of every line.
        total: Number of steps.
        unit: With a unit, :meth:`advance` adds the rate, e.g. ``(3.03 images/s)``.
        enabled: ``False`` prints nothing.
        stream: Where the lines go (default stderr, read at each line).
    """

    def __init__(self, label: str, total: int, unit: Optional[str] = None, enabled: bool = True,
                 stream: Optional[TextIO] = None) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.enabled = enabled
        self.stream = stream
        self.done = 0
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the start."""
        return time.perf_counter() - self._start

    def line(self, text: str) -> None:
        """Print ``text`` under the current count."""
        if self.enabled:
            print(f"[{self.label} {self.done}/{self.total}] {text}",
                  file=self.stream or sys.stderr, flush=True)

    def advance(self, n: int = 1, text: str = "") -> None:
        """Count ``n`` more steps done (or begun, for phases) and print the new count with
        ``text`` and, with a unit, the rate so far."""
        self.done += n
        if self.unit is not None:
            rate = self.done / max(self.elapsed(), 1e-9)
            text = f"{text} ({rate:.2f} {self.unit}/s)".lstrip()
        self.line(text)


class Phases:
    """The phases of a long run (a demo), each a :class:`Progress` step: announced when it begins,
    summed up with its time when it ends, on stdout between the logs of the runs.

    Args:
        label: The run's name, at the start of every line.
        total: Number of phases.
    """

    def __init__(self, label: str, total: int) -> None:
        self.progress = Progress(label, total, stream=sys.stdout)
        self.times: Dict[str, float] = {}
        self._phase_start = time.perf_counter()

    def begin(self, what: str) -> None:
        """Announce the next phase; :meth:`end` names it when it is done.

        Args:
            what: What the phase does, for the progress line.
        """
        self._phase_start = time.perf_counter()
        self.progress.advance(1, f"{what} ...")

    def end(self, name: str, summary: str) -> None:
        """Record the phase's time under ``name`` (a key of ``times``) and print its summary.

        Args:
            name: Key of the phase's time.
            summary: Its result, for the progress line.
        """
        self.times[name] = round(time.perf_counter() - self._phase_start, 1)
        self.progress.line(f"{summary} ({self.times[name]:.0f} s; {self.elapsed():.0f} s total)")

    def elapsed(self) -> float:
        """Seconds since the start."""
        return self.progress.elapsed()
