"""The one vocabulary of names, so a rename is one edit and a miss fails a test instead of emptying a panel:

- ``stacks``: the real stacks' names we read or emulate, per release (Dynamo frontend, worker, KVBM;
  trtllm-serve);
- ``series``: our own series (exporters, load generator, simulator) with type, help and labels;
- ``rules``: the recording rules and alerts over them; ``prometheus/build.py`` writes
  ``prometheus/rules/*.rules.yml`` from it, and dashboards and the analysis query the recorded names.

Outside this package no module spells a metric name (``tests/test_vocabulary.py`` greps for strays).
"""
