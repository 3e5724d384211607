"""The simulator's deterministic tokenizer, chat template, prefix-block hashes and generated text.

Token rule (documented in docs/simulator.md): a token is a run of up to 32 letters, digits and
underscores, or any single other non-space character. ``"Hello, world!"`` is 4 tokens. The cap
(real BPE vocabularies have no token of unbounded length) lets an over-long prompt be refused from
its character count, before any tokenizing.
A chat prompt is rendered as ``[role] content`` per message followed by ``[assistant]``,
so each message costs 3 framing tokens plus its content, and the prompt 3 more.
"""
from __future__ import annotations

import hashlib
import random
import re
from typing import Iterable, Sequence

MAX_TOKEN_CHARS = 32
TOKEN_RE = re.compile(r"\w{1,%d}|[^\w\s]" % MAX_TOKEN_CHARS)
_VOCAB = ("the", "cache", "block", "tier", "token", "storage", "latency", "queue", "memory", "model",
          "request", "stream", "prefix", "session", "batch", "disk", "host", "device", "spill", "knee")


def tokenize(text: str) -> list[str]:
    return TOKEN_RE.findall(text)


def render_chat(messages: Sequence[dict]) -> str:
    parts = [f"[{m.get('role', 'user')}] {content_text(m.get('content', ''))}" for m in messages]
    parts.append("[assistant]")
    return "\n".join(parts)


def content_text(content) -> str:
    """OpenAI content is a string or a list of parts; only text parts carry tokens here."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def block_hashes(tokens: Sequence[str], block_tokens: int, salt: str = "") -> list[bytes]:
    """Chained hashes of the full blocks: each covers its own tokens and its parent's hash.

    ``salt`` separates caches that must never share KV (a LoRA adapter's KV differs from the base model's).
    """
    out: list[bytes] = []
    parent = hashlib.blake2b(salt.encode(), digest_size=16).digest()
    for start in range(0, len(tokens) - block_tokens + 1, block_tokens):
        h = hashlib.blake2b(parent, digest_size=16)
        h.update("\x1f".join(tokens[start:start + block_tokens]).encode())
        parent = h.digest()
        out.append(parent)
    return out


def generated_tokens(seed: int, prompt_tokens: Iterable[str], n: int) -> list[str]:
    """Deterministic output for a prompt under a seed: the same request always streams the same text."""
    h = hashlib.blake2b(str(seed).encode(), digest_size=8)
    for t in prompt_tokens:
        h.update(t.encode())
    rng = random.Random(h.digest())
    return [" " + rng.choice(_VOCAB) for _ in range(n)]
