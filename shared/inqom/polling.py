"""When to ask Inqom again about a document (pure).

    policy = PollPolicy.from_settings(settings)
    policy.next_delay("Processing", polls=3)     # timedelta: first_delay · 2^3, capped
    policy.next_delay("ToReview", polls=3)       # the slow, human-work cadence
    policy.next_delay("Archiving", polls=3)      # a status Inqom's spec does not name: the slow cadence too
    is_known_status("Pending")                   # True: the spec's statuses, Pending and Rejected

Machine states (Received, Processing, Pending) back off exponentially so a document Inqom finishes
after time T costs about log2(T / first_delay) polls; states waiting for people (ToReview,
ManualProcessing) are polled at a slow fixed cadence, and so is any status Inqom answers that we do not
know (it may be a state of people's work, and asking often would learn nothing new). ``None`` (no
answer yet, or an error) backs off like a machine state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from shared.config import Settings
from shared.inqom.client import STATUSES

HUMAN_STATES = frozenset({"ToReview", "ManualProcessing"})
KNOWN_STATUSES = frozenset(STATUSES)


def is_known_status(status: str | None) -> bool:
    return status in KNOWN_STATUSES


@dataclass(frozen=True)
class PollPolicy:
    first_delay: float
    max_interval: float
    review_interval: float

    @classmethod
    def from_settings(cls, settings: Settings) -> "PollPolicy":
        return cls(settings.poll_first_delay, settings.poll_max_interval, settings.poll_review_interval)

    def first_poll(self) -> timedelta:
        return timedelta(seconds=self.first_delay)

    def next_delay(self, status: str | None, polls: int) -> timedelta:
        """Delay after the ``polls``-th poll (counting from 1) answered ``status``."""
        if status in HUMAN_STATES or (status is not None and not is_known_status(status)):
            return timedelta(seconds=self.review_interval)
        exponent = min(max(polls, 0), self._doublings_to_cap())  # 2.0 ** 1024 overflows a float
        return timedelta(seconds=min(self.first_delay * 2 ** exponent, self.max_interval))

    def _doublings_to_cap(self) -> int:
        """The smallest n with first_delay · 2^n ≥ max_interval: more doublings cannot change the delay."""
        return max(0, math.ceil(math.log2(self.max_interval / self.first_delay)))
