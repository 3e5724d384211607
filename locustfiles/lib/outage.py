"""Outages seen by the load generator: a stack that refuses connections, answers 429 or 5xx, answers 404
for the very model the run was started on (listed by /models at the start), or answers with an empty
body, request after request. A real Dynamo frontend whose worker died answers 404 with an empty body
while its /health stays 200: that is an outage too. A closed loop of users without think time would
otherwise send thousands of requests a second at it (and write a record for each); after OUTAGE_AFTER
such failures in a row, users back off exponentially until a request gets through again."""
from __future__ import annotations

import threading
import time
from typing import Optional

from configs.runfiles import EMPTY_BODY, RequestRecord, utc

OUTAGE_AFTER = 20                  # failures in a row (across this process's users) that make an outage
FIRST_BACKOFF_S, MAX_BACKOFF_S = 0.25, 8.0


# failures that say nothing about whether the stack answers now: a stream cut as the stack died, one
# Locust cut itself; they neither extend nor end an outage
NEUTRAL = ("stream_cut", "cancelled_by_step")


def is_outage_failure(rec: RequestRecord, model: Optional[str]) -> bool:
    """An answer that says the stack cannot serve now; a 404 for another name (an adapter unknown to
    the stack) is the stack's answer about that name."""
    return rec.error_class in ("connection", EMPTY_BODY) or rec.status == 429 or rec.status >= 500 or \
        (rec.status == 404 and rec.model == model)


class OutageTracker:
    def __init__(self, model: Optional[str] = None) -> None:
        self.model = model
        self.in_a_row = 0
        self.since = float("inf")          # when the first failure of the current run of them was sent
        self.current: Optional[dict] = None
        self._lock = threading.Lock()

    def observe(self, rec: RequestRecord) -> tuple[float, Optional[dict]]:
        """(seconds to back off, the outage that this answer ended or None)."""
        with self._lock:
            if rec.error_class in NEUTRAL:
                return 0.0, None
            if not is_outage_failure(rec, self.model):          # the stack answered (a 400 is an answer too)
                if rec.start_time < self.since:    # sent before the failures began: it says nothing of now
                    return 0.0, None
                self.in_a_row, self.since = 0, float("inf")
                return 0.0, self._end()
            self.in_a_row += 1
            self.since = min(self.since, rec.start_time)
            if self.in_a_row < OUTAGE_AFTER:
                return 0.0, None
            if self.current is None:
                now = time.time()
                self.current = {"start": now, "started_at": utc(now), "kind": rec.error_class or f"http_{rec.status}",
                                "failures": self.in_a_row}
            else:
                self.current["failures"] += 1
            doublings = (self.in_a_row - OUTAGE_AFTER) // OUTAGE_AFTER
            return min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** min(doublings, 10)), None

    def end(self) -> Optional[dict]:
        with self._lock:
            return self._end()

    def _end(self) -> Optional[dict]:
        if self.current is None:
            return None
        now = time.time()
        ended, self.current = {**self.current, "end": now, "ended_at": utc(now)}, None
        return ended
