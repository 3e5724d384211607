"""Deterministic prompt text of a given size in the target's tokens.

Prompts are random sequences of common English words, each one token with or without a leading space in
Llama 3's vocabulary (and a token or two in other BPE vocabularies), so a text's size barely depends on which
words it drew: random ``w<hex>`` words varied so much (2-5 tokens each) that two probe-sized texts of one
size landed 7 % apart. Where the operator gives the model's tokenizer
(``models.<key>.tokenizer``), a text of N tokens is cut from them with that tokenizer, exactly. Without
it, the run calibrates before any load: a probe request per prompt size tells how many tokens the
server counts for the words sent (``usage.prompt_tokens``), and every later prompt of that size uses
that word count. Either way the size is fixed before the first measured request, so no uncalibrated
prompt is ever sent, and a text of a given size never changes during a run (KV reuse depends on it).
"""
from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path
from typing import Callable, Iterable, Optional

from tokenizers import Tokenizer

from configs import ConfigError

PROBE_WORDS = 256
PROBE_ROUNDS, PROBE_TOLERANCE = 4, 0.01   # per size: probe, correct, probe again until within 1 %
FILLER = " a"             # one token in BPE vocabularies that split on spaces (Llama 3, GPT-2, ...)


WORDS = tuple("""time year people way day man thing woman life child world school state family student group
country problem hand part place case week company system program question work government number night point
home water room mother area money story fact month lot right study book eye job word business issue side kind
head house service friend father power hour game line end member law car city community name team minute idea
kid body information back parent face others level office door health person art war history party result
change reason research girl moment air teacher force education foot boy age policy music market sense nation
plan college interest death experience effect use class control care field development role rate heart drug
show leader light voice wife mind price report decision son view relationship town road arm difference value
building action model season tax director position player record paper space ground form event official matter
center site project activity star table need court oil cost industry figure street image phone data picture
practice piece land product doctor wall patient worker news test movie north love support technology step baby
computer type attention film tree source organization hair window population truth cell river stone bridge
cloud forest castle engine signal basket mirror rocket wagon anchor button circle finger flower hammer needle
orange rabbit ribbon silver summer ticket turtle winter yellow""".split())


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(max(0, n)))


def piece_sample(n: int = 40) -> str:
    """The short pieces the workloads send beside a sized text (a user's nonce, a question, a session's
    head), in their own formats: what the probe learns their tokens per word from (a nonce's hex and a
    question's digits cost Llama 3 two or three tokens a word, the text's common words one)."""
    rng = random.Random("sparkrig:pieces")
    return " ".join(f"[user {u} nonce {rng.getrandbits(32):08x}] q{rng.randrange(10 ** 6):06d} u{u} [session {u}]"
                    for u in range(n))


def prefix_hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def load_tokenizer(path: str | Path):
    """A Hugging Face fast tokenizer from a local directory (its tokenizer.json) or the file itself."""
    p = Path(path)
    file = p / "tokenizer.json" if p.is_dir() else p
    try:
        return Tokenizer.from_file(str(file))
    except Exception as exc:            # the tokenizers library raises a bare Exception for bad files
        raise ConfigError(f"tokenizer {file}: cannot be loaded ({str(exc).splitlines()[0][:120]})") from None


class PromptSizer:
    """Text of ``tokens`` tokens for the served model, from a tokenizer or from a probe calibration."""

    def __init__(self, tokenizer_path: Optional[str | Path] = None) -> None:
        self.tokenizer = load_tokenizer(tokenizer_path) if tokenizer_path else None
        self.tokens_per_word: Optional[float] = None
        self.piece_tokens_per_word: Optional[float] = None    # the short pieces beside a sized text (probe mode)
        self.factors: dict[int, float] = {}       # per probed size: the server's tokens / the size asked for
        self._texts: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()

    @property
    def method(self) -> str:
        return "tokenizer" if self.tokenizer is not None else "probe" if self.tokens_per_word else "none"

    @property
    def ready(self) -> bool:
        return self.method != "none"

    def count(self, text: str) -> Optional[int]:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids) if self.tokenizer else None

    def estimate(self, text: str, opens: bool = False) -> int:
        """Tokens of a short piece sent beside a sized text, as it tokenizes in place: after a space (a
        question after the document), or, ``opens``, at the prompt's very start with a space and the text
        following it (a nonce before the document: that space belongs to the text's first word, which the
        text counts already; counting it here made every such prompt one token short)."""
        if self.tokenizer is not None:
            return self.count(text.rstrip() if opens else " " + text)
        if self.piece_tokens_per_word:         # probed on pieces like these, not on the text's words
            return round(len(text.split()) * self.piece_tokens_per_word)
        return round(len(text.split()) * (self.tokens_per_word or 1.0))

    def text(self, key: str, tokens: int) -> str:
        """The same text for the same key and size, every time and in every process of the run."""
        if not self.ready:
            raise RuntimeError("prompt sizes are not calibrated yet")
        with self._lock:
            cached = self._texts.get((key, tokens))
        if cached is None:
            cached = self._exact(key, tokens) if self.tokenizer else words(random.Random(key), self.words_for(tokens))
            with self._lock:
                if len(self._texts) > 4096:
                    self._texts.clear()
                self._texts[(key, tokens)] = cached
        return cached

    def fresh(self, rng: random.Random, tokens: int) -> str:
        """A new text of this size (thrash prompts, chat turns): not cached."""
        return self._exact(rng, tokens) if self.tokenizer else words(rng, self.words_for(tokens))

    def words_for(self, tokens: int) -> int:
        """Words for ``tokens``, corrected by the probe of the nearest size (a document is probed at the
        step's size; the nonce and question beside it make it a little shorter)."""
        factor = self.factors[min(self.factors, key=lambda k: abs(k - tokens))] if self.factors else 1.0
        return max(1, round(tokens / ((self.tokens_per_word or 1.0) * factor)))

    def _exact(self, seed, tokens: int) -> str:
        """Whole words while they fit (each counted with its leading space, as it appears inside a
        prompt), then one-token fillers up to the size."""
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        out: list[str] = []
        total = 0
        while total < tokens:
            batch = [rng.choice(WORDS) for _ in range(max(8, (tokens - total) // 2))]
            counts = [len(e.ids) for e in self.tokenizer.encode_batch([" " + w for w in batch],
                                                                       add_special_tokens=False)]
            for w, n in zip(batch, counts):
                if total + n > tokens:
                    return " ".join(out) + FILLER * (tokens - total)
                out.append(w)
                total += n
        return " ".join(out)

    def calibrate(self, probe: Callable[[str], Optional[int]], sizes: Iterable[int]) -> str:
        """Learn tokens per word and a per-size correction from the server's own counts (``probe`` sends
        a text and returns ``usage.prompt_tokens``), or check the tokenizer against them. Returns a
        line for the run manifest."""
        sample = words(random.Random("sparkrig:probe"), PROBE_WORDS)
        served = probe(sample)
        if not served:
            raise ConfigError("prompt sizing: the server's answer to a probe carried no usage.prompt_tokens")
        if self.tokenizer is not None:
            ours = self.count(sample)
            agreement = "agrees" if abs(served - ours) <= max(2, ours // 100) else "DISAGREES"
            return (f"prompt sizing: tokenizer; a {PROBE_WORDS}-word probe is {ours} tokens for it and {served} for "
                    f"the server ({agreement})")
        self.tokens_per_word = served / PROBE_WORDS
        pieces = piece_sample()
        counted = probe(pieces)
        self.piece_tokens_per_word = counted / len(pieces.split()) if counted else None
        before, after = [], []
        for size in sorted(set(sizes)):
            got = None
            with self._lock:                        # its own correction, never a neighbour's
                self.factors[size] = 1.0
                self._texts.clear()
            for attempt in range(PROBE_ROUNDS):     # a correction from one probe left 4096 at 3886 on Dynamo
                got = probe(self.text(f"sparkrig:probe:{size}", size))
                if not got:
                    break
                if attempt == 0:
                    before.append(f"{size}->{got}")
                if abs(got - size) <= size * PROBE_TOLERANCE:
                    break
                with self._lock:
                    self.factors[size] *= got / size
                    self._texts.clear()
            after.append(f"{size}->{got}")
        return (f"prompt sizing: probe; {self.tokens_per_word:.3f} tokens per word; sizes before correction "
                f"{', '.join(before)}; after {', '.join(after)}")

    def state(self) -> dict:
        """What a worker process needs to size prompts as the master does."""
        return {"tokens_per_word": self.tokens_per_word, "piece_tokens_per_word": self.piece_tokens_per_word,
                "factors": {str(k): v for k, v in self.factors.items()}}

    def restore(self, state: dict) -> None:
        self.tokens_per_word = state.get("tokens_per_word")
        self.piece_tokens_per_word = state.get("piece_tokens_per_word")
        self.factors = {int(k): v for k, v in (state.get("factors") or {}).items()}
