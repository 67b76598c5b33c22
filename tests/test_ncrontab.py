from datetime import datetime

import pytest

from devtools.ncrontab import Schedule


@pytest.mark.parametrize("expression, now, expected", [
    ("0 */5 * * * *", datetime(2026, 1, 1, 10, 2, 30), datetime(2026, 1, 1, 10, 5, 0)),
    ("0 */5 * * * *", datetime(2026, 1, 1, 10, 5, 0), datetime(2026, 1, 1, 10, 10, 0)),
    ("*/2 * * * * *", datetime(2026, 1, 1, 10, 0, 1, 500), datetime(2026, 1, 1, 10, 0, 2)),
    ("0 30 2 * * *", datetime(2026, 1, 1, 3, 0, 0), datetime(2026, 1, 2, 2, 30, 0)),
    ("0 0 9 * * 1-5", datetime(2026, 11, 27, 10, 0, 0), datetime(2026, 11, 30, 9, 0, 0)),  # Fri → Mon
    ("15,45 0 12 1 * *", datetime(2026, 1, 1, 12, 0, 20), datetime(2026, 1, 1, 12, 0, 45)),
])
def test_next_occurrence(expression, now, expected):
    assert Schedule(expression).next_after(now) == expected


def test_search_is_bounded_to_a_year():
    with pytest.raises(ValueError, match="no occurrence"):
        Schedule("0 0 0 29 2 *").next_after(datetime(2026, 3, 1))  # next 29 February is in 2028


@pytest.mark.parametrize("expression", ["* * * * *", "61 * * * * *", "*/0 * * * * *", "a * * * * *"])
def test_bad_expressions_name_the_problem(expression):
    with pytest.raises(ValueError, match="NCRONTAB"):
        Schedule(expression)
