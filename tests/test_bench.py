"""The benchmark's own arithmetic: how ratios read, what a row holds, and what it samples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_builder.index import FsaIndex
from lambda_src.local.bench import Measure, run, sample_points, seconds_to_done, table


def test_a_time_ratio_is_a_speedup_and_a_cold_start_ratio_a_multiple():
    assert Measure("batch", 0.5, "s", 2.0).ratio == pytest.approx(4.0)
    assert Measure("cold", 3.0, "s", 2.0, ratio_kind="multiple").ratio == pytest.approx(1.5)
    assert Measure("size", 164.0, "MB", 175.0).ratio == pytest.approx(164 / 175)
    assert Measure("rss", 246.0, "MB").ratio is None


def test_a_row_has_every_field_the_issue_names_and_a_missed_target_shows():
    row = Measure("publish_1000", 1.5, "s", 9.0, "one Publish per posting", ">= 4x", True).row()
    assert {"name", "value", "unit", "baseline", "ratio", "target", "ok"} <= set(row)
    json.dumps(row)  # one JSON object per measure
    missed = Measure("x", 2.0, "s", 3.0, "b", ">= 3x", False).row()
    lines = table([row, missed]).splitlines()
    assert lines[1].rstrip().endswith("ok") and lines[2].rstrip().endswith("MISSED")


def test_sampled_points_are_kept_codes_moved_exactly(small_index, haversine):
    index = FsaIndex.open(small_index)
    lat, lon, codes = sample_points(index, 3, seed=1, move_m=150)
    for a, b, code in zip(lat, lon, codes, strict=True):
        located = index.locate_postal_code(code)
        assert located is not None and located.method == "postal_code"
        assert haversine(located.lat, located.lon, a, b) == pytest.approx(0.150, abs=1e-6)
    same = sample_points(index, 3, seed=1)
    assert same[2] == codes and not np.allclose(same[0], lat)


def test_bad_runs_is_one_clear_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(["--runs", "0"])
    assert exit_info.value.code == 2
    assert "--runs must be at least 1, got 0" in capsys.readouterr().err


def test_a_measuring_process_that_dies_is_one_clear_line(monkeypatch, capsys):
    def die(argv):
        return seconds_to_done("raise SystemExit('index gone')")

    monkeypatch.setattr("lambda_src.local.bench.main", die)
    assert run([]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: a measuring process exited with 1: index gone"
