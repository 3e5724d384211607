"""Write the synthetic request trace shipped with the rig (Mooncake's JSONL format), deterministically.

    python locustfiles/traces/make_trace.py [--out locustfiles/traces/synthetic.jsonl]

Each line: ``timestamp`` (ms from the start), ``input_length`` and ``output_length`` (tokens) and
``hash_ids``: ids of the prompt's 512-token blocks; equal ids are equal blocks, so requests that share a
leading run of ids share a prefix the KV cache can reuse. The distribution, chosen to look like a chat
service with a shared system prompt:

- arrivals: Poisson at 2 requests/s for 120 s (about 240 requests);
- every prompt starts with the same 2-block system prompt (ids 0 and 1);
- 24 conversations, picked with Zipf-like popularity (weight 1/rank); a conversation's prompt is its own
  history, growing by one block per turn up to 12 blocks, so a returning conversation reuses all but its
  newest block;
- input_length: the blocks' tokens minus 0-511 (the last block is partial); output_length: lognormal
  around 128 tokens, 16 to 1024.
"""
from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

BLOCK = 512
SYSTEM_BLOCKS = (0, 1)


def generate(seed: int = 7, rate: float = 2.0, seconds: float = 120.0, conversations: int = 24) -> list[dict]:
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(conversations)]
    turns = [0] * conversations
    next_id = len(SYSTEM_BLOCKS)
    history: list[list[int]] = [[] for _ in range(conversations)]
    out, t = [], 0.0
    while True:
        t += rng.expovariate(rate)
        if t > seconds:
            return out
        c = rng.choices(range(conversations), weights)[0]
        if len(history[c]) < 12:
            history[c].append(next_id)
            next_id += 1
        turns[c] += 1
        ids = list(SYSTEM_BLOCKS) + history[c]
        out.append({"timestamp": round(t * 1000), "input_length": len(ids) * BLOCK - rng.randrange(BLOCK),
                    "output_length": max(16, min(1024, round(math.exp(rng.gauss(math.log(128), 0.6))))),
                    "hash_ids": ids})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).with_name("synthetic.jsonl")))
    args = ap.parse_args()
    lines = [json.dumps(e, separators=(",", ":")) for e in generate()]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} requests to {args.out}")


if __name__ == "__main__":
    main()
