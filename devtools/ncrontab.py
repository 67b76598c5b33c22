"""NCRONTAB (the Functions timer format, six fields with seconds) → next occurrence.

    Schedule("0 */5 * * * *").next_after(datetime(2026, 1, 1, 10, 2, 30))   # 10:05:00

Fields: second minute hour day month day-of-week (0 = Sunday). Each field accepts ``*``,
numbers, ranges ``a-b``, steps ``*/n`` / ``a-b/n`` and lists ``a,b``. Month and day names and
the five-field form are not supported (the app's schedules do not use them); a bad expression
raises ``ValueError`` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_FIELDS = (("second", 0, 59), ("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12),
           ("day-of-week", 0, 6))


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step <= 0:
            raise ValueError(f"{name}: step must be positive in {part!r}")
        if body == "*":
            start, end = low, high
        elif "-" in body:
            start, end = (int(x) for x in body.split("-", 1))
        else:
            start = int(body)
            end = high if step_text else start
        if not (low <= start <= end <= high):
            raise ValueError(f"{name}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    expression: str

    def __post_init__(self) -> None:
        parts = self.expression.split()
        if len(parts) != 6:
            raise ValueError(f"NCRONTAB needs 6 fields (second minute hour day month day-of-week): {self.expression!r}")
        try:
            parsed = tuple(_parse_field(p, *spec) for p, spec in zip(parts, _FIELDS))
        except ValueError as exc:
            raise ValueError(f"bad NCRONTAB {self.expression!r}: {exc}") from exc
        object.__setattr__(self, "_fields", parsed)

    def matches(self, moment: datetime) -> bool:
        second, minute, hour, day, month, weekday = self._fields  # type: ignore[attr-defined]
        return (moment.second in second and moment.minute in minute and moment.hour in hour
                and moment.day in day and moment.month in month and (moment.isoweekday() % 7) in weekday)

    def next_after(self, moment: datetime) -> datetime:
        """First matching whole second strictly after ``moment`` (searched up to one year ahead)."""
        candidate = moment.replace(microsecond=0) + timedelta(seconds=1)
        limit = candidate + timedelta(days=366)
        while candidate < limit:
            if self.matches(candidate):
                return candidate
            _, minute, hour, day, month, weekday = self._fields  # type: ignore[attr-defined]
            if candidate.month not in month or candidate.day not in day or (candidate.isoweekday() % 7) not in weekday:
                candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0, second=0)
            elif candidate.hour not in hour:
                candidate = (candidate + timedelta(hours=1)).replace(minute=0, second=0)
            elif candidate.minute not in minute:
                candidate = (candidate + timedelta(minutes=1)).replace(second=0)
            else:
                candidate += timedelta(seconds=1)
        raise ValueError(f"NCRONTAB {self.expression!r} has no occurrence within a year")
