"""H1 — run: locust -f locustfiles/h1.py --headless  (defaults from configs/hypotheses.yaml; STACK, PROFILE,
CONCURRENCY, CONTEXT_TOKENS, DURATION_S, ENDPOINT, SEED and Locust's -u/-t/--host override them)."""
from locustfiles.lib.experiment import experiment

H1User, H1Shape = experiment("H1")
