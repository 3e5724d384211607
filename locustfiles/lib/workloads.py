"""The four workload classes of the test plan. Each user owns a Workload; ``next()`` gives the
request to send, ``done()`` hears how it went (sessions grow with the assistant's answers).

All randomness comes from a per-user ``random.Random(seed, user)``, so a seed fixes prompts,
session choices and the adapter sequence.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Optional

from configs import WorkloadParams
from configs.plan import REHYDRATE_PHASES

from .prompts import PromptSizer, prefix_hash

TRACE_BLOCK = 512                 # tokens per hash id in Mooncake traces


@dataclass
class Request:
    path: str                      # relative to the OpenAI base, e.g. "completions"
    body: dict
    prompt_words: int
    target_tokens: Optional[int]       # the whole prompt's size in tokens, where the workload sets one
    adapter: Optional[str] = None
    session_id: Optional[str] = None
    turn: Optional[int] = None
    prefix_hash: Optional[str] = None
    turn_tokens: Optional[int] = None  # a chat turn's own size; the whole prompt (template, history) is larger


class Workload:
    name = ""
    wants_text = False          # whether done() needs the generated text (collecting it parses every chunk)

    def __init__(self, model: str, user: int, seed: int, sizer: PromptSizer) -> None:
        self.model, self.user, self.seed = model, user, seed
        self.rng = random.Random(f"{seed}:{self.name}:{user}")
        self.sizer = sizer

    def next(self, params: WorkloadParams, phase: str) -> Request:
        raise NotImplementedError

    def done(self, request: Request, ok: bool, text: str, prompt_tokens: Optional[int]) -> None:
        """Hears how a request went; sessions grow with the answers."""


class FixedContext(Workload):
    """Prompts of N tokens for the target's tokenizer: one context document per size, followed by a
    short question that changes every request. Each user keeps sending the same document, so its KV
    can be reused (from whichever tier holds it) and the working set is users x N; ``nonce_per_user``
    puts a per-user nonce first so users cannot share each other's prefix. The question has a fixed
    width, so every prompt of a size has the same token count."""
    name = "fixed_context"

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.nonce = f"[user {self.user} nonce {self.rng.getrandbits(32):08x}]"
        self.sent = 0

    def question(self) -> str:
        return f"q{self.sent % 1_000_000:06d} u{self.user}"

    def next(self, params, phase):
        head = self.nonce + " " if params.nonce_per_user else ""
        self.sent += 1
        question = self.question()
        overhead = self.sizer.estimate(head, opens=True) + self.sizer.estimate(question) if head else \
            self.sizer.estimate(question)
        document = self.sizer.text(f"{self.seed}:document:{params.context_tokens}",
                                   max(1, params.context_tokens - overhead))
        prompt = f"{head}{document} {question}"
        return Request("completions", {"model": self.model, "prompt": prompt, "max_tokens": params.max_tokens},
                       len(prompt.split()), params.context_tokens, prefix_hash=prefix_hash(prompt[:256]))


@dataclass
class Session:
    id: str
    messages: list = field(default_factory=list)
    turns: int = 0


class SessionedChat(Workload):
    """Multi-turn chat whose history grows each turn; with probability ``reuse_ratio`` a user goes
    back to one of its older sessions, whose KV others have pushed out meanwhile (rehydration)."""
    name = "sessioned_chat"
    wants_text = True
    session_field = "user"          # OpenAI's own per-end-user field: every frontend accepts it

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.sessions: list[Session] = []
        self.current: Optional[Session] = None

    def _new_session(self) -> Session:
        s = Session(f"u{self.user}-s{len(self.sessions)}-{self.rng.getrandbits(24):06x}")
        self.sessions.append(s)
        return s

    def next(self, params, phase):
        older = [s for s in self.sessions if s is not self.current and s.turns < params.session_turns]
        if older and self.rng.random() < params.reuse_ratio:
            self.current = self.rng.choice(older)
        elif self.current is None or self.current.turns >= params.session_turns:
            self.current = self._new_session()
        s = self.current
        per_turn = max(1, params.context_tokens // params.session_turns)
        content = self.sizer.fresh(self.rng, per_turn)
        s.messages.append({"role": "user", "content": content})
        body = {"model": self.model, "messages": list(s.messages), "max_tokens": params.max_tokens,
                self.session_field: s.id}
        # no target for the whole prompt: the chat template and the answers so far make it what the server
        # counts (the record's prompt_tokens); the turn's own size is the target
        return Request("chat/completions", body, len(content.split()), None, session_id=s.id, turn=s.turns,
                       prefix_hash=prefix_hash(s.messages[0]["content"][:256]), turn_tokens=per_turn)

    def done(self, request, ok, text, prompt_tokens):
        s = next((x for x in self.sessions if x.id == request.session_id), None)
        if s is None:
            return
        if ok:
            s.messages.append({"role": "assistant", "content": text})
            s.turns += 1
        else:
            s.messages.pop()              # the turn did not happen; try it again later


def adapter_names(count: int) -> list[str]:
    """The simulator's and the seeds' naming: lora-000, lora-001, …"""
    return [f"lora-{i:03d}" for i in range(count)]


class LoraChurn(FixedContext):
    """Fixed-context requests, each for an adapter chosen by the churn mode."""
    name = "lora_churn"

    def __init__(self, model, user, seed, sizer, adapters: list[str], via_proxy: bool) -> None:
        super().__init__(model, user, seed, sizer)
        if not adapters:
            raise ValueError("lora_churn needs adapters: set adapter_count or LORA_ADAPTER_LIST")
        self.adapters, self.via_proxy = adapters, via_proxy
        self.turn = user

    def pick(self, params: WorkloadParams) -> str:
        mode = params.lora_churn_mode
        if mode == "round_robin":
            self.turn += 1
            return self.adapters[self.turn % len(self.adapters)]
        if mode == "hot_cold":
            hot = max(1, math.ceil(params.lora_hot_ratio * len(self.adapters)))
            pool = self.adapters[:hot] if self.rng.random() < params.lora_hot_prob or hot == len(self.adapters) \
                else self.adapters[hot:]
            return self.rng.choice(pool)
        return self.rng.choice(self.adapters)

    def next(self, params, phase):
        req = super().next(params, phase)
        req.adapter = self.pick(params)
        if self.via_proxy:
            req.body["adapter_id"] = req.adapter     # the adapter proxy strips it and does the tier2 I/O
        else:
            req.body["model"] = req.adapter          # vLLM / Dynamo convention: the adapter is the model
        return req


class RehydrateReplay(Workload):
    """populate → thrash → replay. Populate sends a fixed list of long session prefixes, thrash sends
    unique prompts until those prefixes are pushed out of the fast tiers, replay sends the populate
    list again: a tiered stack should onboard them from disk. The list is the deterministic request
    manifest (``session_id``, ``prefix_hash``) shared by every user of the run, one per context size."""
    name = "rehydrate_replay"

    def __init__(self, model, user, seed, sizer, manifests: dict[int, list[dict]], send_session_id: bool) -> None:
        super().__init__(model, user, seed, sizer)
        self.manifests, self.send_session_id = manifests, send_session_id
        self.cursor = {phase: 0 for phase in REHYDRATE_PHASES}

    def next(self, params, phase):
        if phase == "thrash":
            prompt = self.sizer.fresh(self.rng, params.context_tokens)
            return Request("completions", {"model": self.model, "prompt": prompt, "max_tokens": params.max_tokens},
                           len(prompt.split()), params.context_tokens, prefix_hash=prefix_hash(prompt[:256]))
        manifest = self.manifests[params.context_tokens]
        item = manifest[(self.user + self.cursor[phase] * params.concurrency) % len(manifest)]
        self.cursor[phase] += 1
        body = {"model": self.model, "prompt": item["prompt"], "max_tokens": params.max_tokens}
        if self.send_session_id:
            body["session_id"] = item["session_id"]
        return Request("completions", body, item["words"], params.context_tokens, session_id=item["session_id"],
                       prefix_hash=item["prefix_hash"])


def rehydrate_manifest(seed: int, sessions: int, sizer: PromptSizer, context_tokens: int) -> list[dict]:
    out = []
    for i in range(sessions):
        head = f"[session {i}] "
        size = max(1, context_tokens - sizer.estimate(head, opens=True))
        prompt = head + sizer.text(f"{seed}:rehydrate:{i}", size)
        out.append({"session_id": f"rh-{seed}-{context_tokens}-{i:04d}", "prompt": prompt, "words": len(prompt.split()),
                    "prefix_hash": prefix_hash(prompt)})
    return out


class TraceReplay(Workload):
    """Requests of a production-like trace: a prompt is its blocks of TRACE_BLOCK tokens (equal ids give equal
    text, so shared prefixes stay shared) cut to the entry's input length; the answer is the entry's output
    length, at most the step's max_tokens. The schedule comes from the trace too (see arrivals)."""
    name = "trace_replay"

    def request_for(self, entry, params) -> Request:
        blocks, left = [], entry.input_length
        for block_id in entry.hash_ids:
            if left <= 0:
                break
            n = min(TRACE_BLOCK, left)            # a text cut shorter is a prefix of the full block's
            blocks.append(self.sizer.text(f"{self.seed}:trace-block:{block_id}", n))
            left -= n
        if left > 0:                              # longer than its blocks: the rest is its own
            blocks.append(self.sizer.text(f"{self.seed}:trace-tail:{entry.timestamp_ms}", left))
        prompt = " ".join(blocks)
        body = {"model": self.model, "prompt": prompt, "max_tokens": min(entry.output_length, params.max_tokens)}
        return Request("completions", body, len(prompt.split()), entry.input_length,
                       prefix_hash=prefix_hash(prompt[:256]))
