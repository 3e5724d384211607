"""Deterministic prompt text: the same seed gives the same prompts, sessions and adapters.

Prompts are made of distinct words (``w<hex>``), which most tokenizers split into one or two
tokens; the exact count for the target's tokenizer is learned from ``usage.prompt_tokens`` of the
first answers (:class:`Calibration`) and later prompts are sized with it.
"""
from __future__ import annotations

import hashlib
import random
import threading


def words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.getrandbits(24):06x}" for _ in range(max(0, n)))


def prefix_hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class Calibration:
    """Words to send for a target token count on the target's tokenizer, learned from the server's
    own ``usage.prompt_tokens``: the first answer gives tokens per word, and each answer for a
    target sets that target's correction so the next prompt lands on it (absolute, not
    incremental, so many concurrent answers to the same uncalibrated prompt size agree)."""

    def __init__(self) -> None:
        self.tokens_per_word: float | None = None
        self.corrections: dict[int, int] = {}
        self._lock = threading.Lock()

    def base(self, tokens: int) -> int:
        return round(tokens / (self.tokens_per_word or 1.0))

    def words_for(self, tokens: int) -> int:
        return max(1, self.base(tokens) + self.corrections.get(tokens, 0))

    def observe(self, target: int, words_sent: int, prompt_tokens: int | None) -> None:
        if not prompt_tokens or words_sent <= 0 or not target:
            return
        with self._lock:
            if self.tokens_per_word is None:
                self.tokens_per_word = prompt_tokens / words_sent
            wanted = words_sent + round((target - prompt_tokens) / self.tokens_per_word)
            self.corrections[target] = wanted - self.base(target)
