"""Open-loop arrivals: requests start on a schedule at a target rate, whatever the completions do.

A closed loop of N users hides queueing (coordinated omission): when the stack slows, users send less.
Here a dispatcher starts each request at its scheduled time — Poisson (exponential gaps), constant, or a
trace's own timestamps — in a greenlet of its own, at most ``max_in_flight`` at once; an arrival over the cap is shed and
recorded as such. Every request carries when it was due and how late it left (schedule lag), so a client
that cannot keep up is seen, not silently bending the load.
"""
from __future__ import annotations

import random
import time
from typing import Any, Callable, Iterable, Iterator

import gevent
from gevent.pool import Group


def gaps(rate_rps: float, process: str, rng: random.Random) -> Iterator[float]:
    """Seconds between arrivals: exponential with mean 1/rate (poisson) or exactly 1/rate (constant)."""
    while True:
        yield rng.expovariate(rate_rps) if process == "poisson" else 1.0 / rate_rps


def scheduled(rate_rps: float, process: str, rng: random.Random) -> Iterator[tuple[float, None]]:
    """A rate's arrivals as (gap, payload) pairs; the payload (a trace entry elsewhere) is None."""
    return ((g, None) for g in gaps(rate_rps, process, rng))


class OpenLoop:
    """Starts ``issue(intended_start_epoch, payload)`` on schedule; ``shed(intended_start_epoch)`` over the cap."""

    def __init__(self, issue: Callable[[float, Any], None], shed: Callable[[float], None]) -> None:
        self.issue, self.shed = issue, shed
        self.in_flight = Group()

    def run(self, arrivals: Iterable[tuple[float, Any]], max_in_flight: int, keep_going: Callable[[], bool]) -> bool:
        """Dispatch ``arrivals`` ((gap in seconds, payload) pairs) until ``keep_going()`` is false (the step
        changed, the run ended): False then; True when the arrivals ran out first (a trace's end)."""
        wall0, mono0 = time.time(), time.perf_counter()
        due = 0.0
        for gap, payload in arrivals:
            due += gap
            wait = mono0 + due - time.perf_counter()
            if wait > 0:
                gevent.sleep(wait)
            if not keep_going():
                return False
            intended = wall0 + due
            if len(self.in_flight) >= max_in_flight:
                self.shed(intended)
            else:
                self.in_flight.spawn(self.issue, intended, payload)
        return True

    def stop(self) -> None:
        """Cut the requests still out (they record themselves as cut, as closed-loop users' are)."""
        self.in_flight.kill(block=False)
