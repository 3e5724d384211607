"""H4A — run: locust -f locustfiles/h4a.py --headless  (defaults from configs/hypotheses.yaml; STACK, PROFILE,
CONCURRENCY, CONTEXT_TOKENS, DURATION_S, ENDPOINT, SEED and Locust's -u/-t/--host override them)."""
from locustfiles.lib.experiment import experiment

H4AUser, H4AShape = experiment("H4A")
