"""H2A — run: locust -f locustfiles/h2a.py --headless  (defaults from configs/hypotheses.yaml; STACK, PROFILE,
CONCURRENCY, CONTEXT_TOKENS, DURATION_S, ENDPOINT, SEED and Locust's -u/-t/--host override them)."""
from locustfiles.lib.experiment import experiment

H2AUser, H2AShape = experiment("H2A")
