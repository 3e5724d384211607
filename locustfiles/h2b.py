"""H2B — run: locust -f locustfiles/h2b.py --headless  (defaults from configs/hypotheses.yaml; STACK, PROFILE,
CONCURRENCY, CONTEXT_TOKENS, DURATION_S, ENDPOINT, SEED and Locust's -u/-t/--host override them)."""
from locustfiles.lib.experiment import experiment

H2BUser, H2BShape = experiment("H2B")
