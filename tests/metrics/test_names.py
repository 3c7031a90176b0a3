"""Metric names: a kind and a sample count, parsed without torch."""

from __future__ import annotations

import pytest

from facegan.errors import FaceganError
from facegan.metrics.names import Metric, as_metrics, parse_metrics


def test_names_carry_their_counts_in_order_without_repeats():
    assert parse_metrics("fid10k, KID2k,pr500,fid10k") == [
        Metric("fid10k", "fid", 10_000), Metric("kid2k", "kid", 2_000), Metric("pr500", "pr", 500)]
    assert parse_metrics(["fid50k"]) == [Metric("fid50k", "fid", 50_000)]
    assert as_metrics([Metric("kid8", "kid", 8)]) == [Metric("kid8", "kid", 8)]
    assert as_metrics("kid8") == [Metric("kid8", "kid", 8)]


def test_value_keys_and_direction():
    fid, kid, pr = parse_metrics("fid2k,kid2k,pr2k")
    assert fid.value_keys() == ["fid2k"] and kid.value_keys() == ["kid2k", "kid2k_std"]
    assert pr.value_keys() == ["pr2k_precision", "pr2k_recall"]
    assert pr.higher_is_better and not fid.higher_is_better and not kid.higher_is_better


@pytest.mark.parametrize(("names", "message"), [
    ("is10k", r"unknown metric 'is10k': give fid, kid or pr followed by a sample count"),
    ("fid", r"unknown metric 'fid'"),
    ("fid3", r"fid3 measures 3 images; give at least 4"),
    ("fid10000000k", r"fid10000000k measures 10,000,000,000 images, more than the 1,000,000 facegan allows"),
    ([], r"no metric given"),
    ("fid2k,", r"unknown metric ''"),
])
def test_nonsense_is_one_sentence_before_anything_runs(names, message):
    with pytest.raises(FaceganError, match=message):
        parse_metrics(names)
