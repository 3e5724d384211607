"""The workload library behind the hypothesis locustfiles: streaming client, workloads, shapes, runs."""
