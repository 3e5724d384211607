"""The shape of a run: it walks the plan's slots, step_duration_s each, at each step's concurrency (one
dispatcher for an open-loop step), and tells the workers when the slot changes."""
from __future__ import annotations

import os
import sys

from locust import LoadTestShape
from locust.runners import MasterRunner

from . import state
from .state import MSG_SLOT


class PlanShape(LoadTestShape):
    """Walks the plan: each slot lasts step_duration_s at the step's concurrency. Locust's own
    -u/-r fix the user count and spawn rate for every step, and -t ends the run early."""
    abstract = True
    use_common_options = True

    def tick(self):
        st = state.of(self.runner.environment)
        if st.failed:
            return None
        options = self.runner.environment.parsed_options
        elapsed = self.get_run_time()
        limit = getattr(options, "run_time", None)
        if limit and elapsed >= limit:             # Locust would only apply -t after the shape ends
            st.stop_reason = f"-t {limit}s run-time limit reached before the last step"
            return None
        index = int(elapsed // st.plan.step_duration_s)
        if index >= len(st.slots):
            st.completed = True
            return None
        if index != st.slot:
            st.enter_slot(index)
            if isinstance(self.runner, MasterRunner):
                self.runner.send_message(MSG_SLOT, index)
        params = st.slots[index].step.params
        if params.arrival_rate_rps > 0 or st.trace:   # open loop: one dispatcher starts every request
            st.note_load(self.runner.user_count, 1)
            return 1, max(1, self.runner.user_count)
        users = _explicit("-u", "--users", "LOCUST_USERS", int) or params.concurrency
        st.note_load(self.runner.user_count, users)
        # Locust ramps down at the spawn rate too: a rate of the new count took 31 s to go from 32 users
        # to 1, the step measured meanwhile. The larger of the two counts makes either move within a second.
        rate = _explicit("-r", "--spawn-rate", "LOCUST_SPAWN_RATE", float) or max(users, self.runner.user_count)
        return users, rate


def _explicit(short: str, long: str, env: str, kind):
    """An option the operator actually gave: Locust fills -u/-r with 1 in headless mode, so the
    parsed value cannot tell "-u 1" from nothing."""
    args = sys.argv
    for i, a in enumerate(args):
        if a in (short, long) and i + 1 < len(args):
            return kind(args[i + 1])
        if a.startswith(long + "="):
            return kind(a.split("=", 1)[1])
    return kind(os.environ[env]) if os.environ.get(env) else None


