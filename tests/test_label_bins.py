"""The label-bins check: hand-counted cases of bins that fit the logs and bins that would
relabel logs whose labels are already levels."""

import json

import pytest

from taosr.datasets.label_bins import BinnedGrades, count_binned, problem

RATING_BINS_LEVELS = {1.0: 1, 2.0: 2, 3.0: 4, 4.0: 4}  # what {4: 2.75, 3: 2.25, 2: 1.5, 1: 1.0} does to whole grades


def rows(pairs):
    """Accepted rows as the data stage writes them: the binned level and the raw grade in extra."""
    return [{"label": level, "extra": json.dumps({"label_raw": raw})} for raw, level in pairs]


def test_levels_under_rating_bins_are_refused_with_counts_and_the_fix():
    # 10 rows labelled 1-4; the rating bins send both 3s to 4.
    logged = [1, 2, 2, 3, 3, 4, 4, 4, 4, 1]
    counts = count_binned(rows([(str(g), RATING_BINS_LEVELS[float(g)]) for g in logged]))
    assert counts.binned == 10 and counts.whole == {1: 2, 2: 2, 3: 2, 4: 4}
    assert counts.moved == {(3, 4): 2}
    reason = problem(counts)
    assert "already a level 1-4" in reason and "3 -> 4 (2 rows)" in reason
    assert "data.label_bins={}" in reason


def test_mean_ratings_fit_the_bins():
    # Home Depot-shaped grades: means of three ratings on 1-3; whole grades are a minority.
    pairs = [("2.33", 3), ("2.67", 3), ("1.33", 1), ("3", 4), ("2", 2), ("1.67", 2), ("2.5", 3)]
    counts = count_binned(rows(pairs))
    assert counts.binned == 7 and counts.whole == {3: 1, 2: 1}
    assert problem(counts) is None


def test_a_whole_rating_scale_below_four_is_not_taken_for_levels():
    # A 1-3 star scale binned onto 1, 2 and 4: whole numbers, but no 4 among them, and the bins
    # move only the 3s (a third of the rows).
    pairs = [("1", 1), ("2", 2), ("3", 4)] * 3
    assert problem(count_binned(rows(pairs))) is None


def test_bins_that_move_most_whole_grades_are_refused():
    # Grades 1-3 (no 4), mostly whole, and the bins give 6 of 8 whole grades another level.
    pairs = [("1", 2), ("1", 2), ("2", 3), ("2", 3), ("3", 4), ("3", 4), ("2", 2), ("1", 1), ("1.5", 2)]
    counts = count_binned(rows(pairs))
    assert sum(counts.whole.values()) == 8 and sum(counts.moved.values()) == 6
    assert "6 of the 8 labels" in problem(counts)


def test_rows_without_a_binned_grade_are_not_counted():
    counts = count_binned([{"label": 4, "extra": None}, {"label": 3, "extra": json.dumps({"colour": "red"})}])
    assert counts == BinnedGrades()
    assert problem(counts) is None


@pytest.mark.parametrize("raw", ["4.0", 4, 4.0, " 4 "])
def test_a_grade_is_read_as_a_number_whatever_its_spelling(raw):
    counts = count_binned(rows([(raw, 4)]))
    assert counts.whole == {4: 1} and counts.moved == {}
