"""H3 — run: locust -f locustfiles/h3.py --headless  (defaults from configs/hypotheses.yaml; STACK, PROFILE,
CONCURRENCY, CONTEXT_TOKENS, DURATION_S, ENDPOINT, SEED and Locust's -u/-t/--host override them)."""
from locustfiles.lib.experiment import experiment

H3User, H3Shape = experiment("H3")
