"""TR — run: locust -f locustfiles/tr.py --headless  (replays locustfiles/traces/synthetic.jsonl: its schedule,
prompt lengths and prefix sharing; TRACE_FILE, STACK, DURATION_S, ENDPOINT and Locust's -t/--host override)."""
from locustfiles.lib.experiment import experiment

TRUser, TRShape = experiment("TR")
