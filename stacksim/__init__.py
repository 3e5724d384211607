"""Embedded Stack A / Stack B simulator: OpenAI API, continuous batching, tiered KV with real tier2 I/O."""
