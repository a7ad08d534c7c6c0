"""swinv2_backbone.cli: the one way the tools report errors, exit, check counts and show
progress."""
import argparse
import io

import pytest

from swinv2_backbone.cli import (EXIT_ERROR, EXIT_SOME_FAILED, Phases, Progress, collect_errors,
                                 fail, int_at_least)


def test_fail_prints_one_error_line_and_returns_the_status(capsys):
    assert fail(ValueError("no images match 'x/*.png'")) == EXIT_ERROR == 2
    assert fail("3 images unreadable", EXIT_SOME_FAILED) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == "error: no images match 'x/*.png'\nerror: 3 images unreadable\n"


def test_collected_errors_are_printed_and_kept_in_order(capsys):
    failed = []
    report = collect_errors(failed)
    report(ValueError("a.png: truncated"))
    report(OSError("b.png: empty"))
    assert failed == ["a.png: truncated", "b.png: empty"]
    assert capsys.readouterr().err == "error: a.png: truncated\nerror: b.png: empty\n"


@pytest.mark.parametrize("minimum, text, value", [(1, "1", 1), (1, "64", 64), (0, "0", 0)])
def test_int_at_least_takes_ints_from_the_minimum(minimum, text, value):
    assert int_at_least(minimum)(text) == value


@pytest.mark.parametrize("minimum, text", [(1, "0"), (0, "-1"), (1, "2.5"), (1, "x"), (1, "")])
def test_int_at_least_refuses_through_argparse(minimum, text, capsys):
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--n", type=int_at_least(minimum))
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--n", text])
    assert exit_.value.code == EXIT_ERROR
    assert (f"tool: error: argument --n: must be an int >= {minimum}, got {text!r}"
            in capsys.readouterr().err)


def test_progress_counts_steps_with_their_rate_and_can_be_silenced():
    stream = io.StringIO()
    progress = Progress("extract_features", 3, unit="images", stream=stream)
    progress.advance(1, "images written")
    progress.advance(2)
    lines = stream.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["[extract_features 1/3] images written",
                                                       "[extract_features 3/3]"]
    assert all(line.endswith(" images/s)") for line in lines)
    quiet = io.StringIO()
    silent = Progress("x", 2, unit="images", enabled=False, stream=quiet)
    silent.advance(2)
    assert silent.done == 2 and quiet.getvalue() == ""


def test_phases_announce_each_phase_and_record_its_time(capsys):
    phases = Phases("demo", 2)
    phases.begin("generating the toy dataset")
    phases.end("data", "toy dataset: 6 images")
    phases.begin("training")
    phases.end("train", "trained")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[demo 1/2] generating the toy dataset ..."
    assert lines[1].startswith("[demo 1/2] toy dataset: 6 images (")
    assert lines[1].endswith(" s total)")
    assert lines[2] == "[demo 2/2] training ..."
    assert set(phases.times) == {"data", "train"} and all(t >= 0 for t in phases.times.values())
