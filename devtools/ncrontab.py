"""NCRONTAB (the Functions timer format, six fields with seconds) → next occurrence, parsed by croniter.

    Schedule("0 */5 * * * *").next_after(datetime(2026, 1, 1, 10, 2, 30))   # 10:05:00

Fields: second minute hour day month day-of-week (0 = Sunday); day and day-of-week must both
match, as in NCRONTAB. A bad expression raises ``ValueError`` naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from croniter import CroniterBadDateError, CroniterError, croniter

_HORIZON = timedelta(days=366)


@dataclass(frozen=True)
class Schedule:
    expression: str

    def __post_init__(self) -> None:
        if len(self.expression.split()) != 6:  # croniter would also read the five-field form
            raise ValueError(f"NCRONTAB needs 6 fields (second minute hour day month day-of-week): {self.expression!r}")
        try:
            self._iter(datetime(2000, 1, 1))
        except (CroniterError, ValueError) as exc:
            raise ValueError(f"bad NCRONTAB {self.expression!r}: {exc}") from exc

    def _iter(self, start: datetime) -> croniter:
        return croniter(self.expression, start, second_at_beginning=True, day_or=False)

    def next_after(self, moment: datetime) -> datetime:
        """First matching whole second strictly after ``moment`` (searched up to one year ahead)."""
        start = moment.replace(microsecond=0)
        try:
            found = self._iter(start).get_next(datetime)
        except CroniterBadDateError:
            found = None
        if found is None or found - start > _HORIZON:
            raise ValueError(f"NCRONTAB {self.expression!r} has no occurrence within a year")
        return found
