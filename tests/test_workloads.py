"""Workload library units: seeded determinism, churn modes, sessions, calibration, stream errors."""
import collections
import json

import pytest

from configs import ConfigError, WorkloadParams
from locustfiles.lib import workloads
from configs.vocabulary.series import LATENCY_BUCKETS as BUCKETS
from locustfiles.lib.prompts import PromptSizer
from configs.runfiles import RecordWriter, RequestRecord, read_records
from locustfiles.lib.stream import error_message

MODEL = "m"


def sizer(tokens_per_word=1.0):
    s = PromptSizer()
    s.tokens_per_word = tokens_per_word
    return s


def sequence(workload, params, n=5):
    return [json.dumps(workload.next(params, "run").body, sort_keys=True) for _ in range(n)]


def test_same_seed_same_prompts_and_adapters():
    p = WorkloadParams(context_tokens=64, adapter_count=8, lora_churn_mode="uniform")
    names = workloads.adapter_names(8)
    a = workloads.LoraChurn(MODEL, 3, 42, sizer(), names, False)
    b = workloads.LoraChurn(MODEL, 3, 42, sizer(), names, False)
    c = workloads.LoraChurn(MODEL, 3, 43, sizer(), names, False)
    assert sequence(a, p) == sequence(b, p)
    assert sequence(a, p) != sequence(c, p)
    other_user = workloads.FixedContext(MODEL, 4, 42, sizer())
    assert sequence(workloads.FixedContext(MODEL, 3, 42, sizer()), p) != sequence(other_user, p)


def test_fixed_context_reuses_a_users_document_and_nonce_separates_users():
    p = WorkloadParams(context_tokens=64, nonce_per_user=True)
    users = [workloads.FixedContext(MODEL, u, 42, sizer()) for u in range(4)]
    first = [w.next(p, "run").body["prompt"] for w in users]
    assert len({f.split("]")[0] for f in first}) == 4                # no prefix shared across users
    again = users[0].next(p, "run").body["prompt"].split()
    assert again[:-2] == first[0].split()[:-2] and again[-2:] != first[0].split()[-2:]   # same document, new question
    shared = WorkloadParams(context_tokens=64, nonce_per_user=False)
    a, b = (workloads.FixedContext(MODEL, u, 42, sizer()).next(shared, "run").body["prompt"] for u in (0, 1))
    assert a.split()[:-2] == b.split()[:-2]                           # without the nonce, users share it


def test_hot_cold_churn_follows_the_ratio():
    p = WorkloadParams(adapter_count=20, lora_churn_mode="hot_cold", lora_hot_ratio=0.2, lora_hot_prob=0.9)
    w = workloads.LoraChurn(MODEL, 0, 1, sizer(), workloads.adapter_names(20), True)
    picks = collections.Counter(w.pick(p) for _ in range(5000))
    hot = sum(picks[n] for n in workloads.adapter_names(4))
    assert 0.87 < hot / 5000 < 0.93
    rr = workloads.LoraChurn(MODEL, 0, 1, sizer(), workloads.adapter_names(3), True)
    p_rr = WorkloadParams(adapter_count=3, lora_churn_mode="round_robin")
    assert [rr.pick(p_rr) for _ in range(4)] == ["lora-001", "lora-002", "lora-000", "lora-001"]
    req = rr.next(p_rr, "run")
    assert req.body["adapter_id"] == req.adapter and req.body["model"] == MODEL   # via the proxy


def made_up_server(text):
    """A tokenizer we can compute: 1.3 tokens per word, plus 7."""
    return int(len(text.split()) * 1.3) + 7


def test_probe_calibration_fixes_each_size_before_load():
    s = PromptSizer()
    with pytest.raises(RuntimeError):
        s.text("k", 100)                       # never an uncalibrated prompt
    note = s.calibrate(made_up_server, [500, 4096])
    assert "probe" in note and s.ready
    w = workloads.FixedContext(MODEL, 0, 1, s)
    for size in (500, 4096):
        p = WorkloadParams(context_tokens=size, nonce_per_user=True)
        first, second = w.next(p, "run"), w.next(p, "run")
        assert abs(made_up_server(first.body["prompt"]) - size) <= max(3, size // 100)
        assert first.body["prompt"].split()[:-2] == second.body["prompt"].split()[:-2]   # the document stays


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A real Hugging Face tokenizer file (byte-level BPE trained here), as a model directory holds it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [f"w{i:06x} a the q{i:06d} u{i % 50} [user nonce]" for i in range(0, 2 ** 20, 977)]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    d = tmp_path_factory.mktemp("model")
    tok.save(str(d / "tokenizer.json"))
    return d


def test_tokenizer_sizes_prompts_exactly(tokenizer_dir):
    s = PromptSizer(tokenizer_dir)
    count = s.count
    for size in (64, 1000, 4096):
        text = s.text("doc", size)
        assert count(" " + text) == size and s.text("doc", size) == text
    w = workloads.FixedContext(MODEL, 3, 1, s)
    p = WorkloadParams(context_tokens=2048, nonce_per_user=True)
    prompts = [w.next(p, "run").body["prompt"] for _ in range(3)]
    assert all(abs(count(x) - 2048) <= 2 for x in prompts)
    assert len({count(x) for x in prompts}) == 1        # fixed-width question: one size for every request
    agrees = s.calibrate(count, [2048])
    assert "agrees" in agrees


def test_a_broken_tokenizer_is_one_line(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ConfigError, match="tokenizer .*cannot be loaded"):
        PromptSizer(tmp_path)


def test_sessions_grow_and_reuse_older_ones():
    p = WorkloadParams(context_tokens=60, session_turns=3, reuse_ratio=0.0, max_tokens=4)
    w = workloads.SessionedChat(MODEL, 0, 7, sizer())
    ids, sizes = [], []
    for _ in range(4):
        r = w.next(p, "run")
        ids.append(r.session_id)
        sizes.append(len(r.body["messages"]))
        assert r.body["user"] == r.session_id
        w.done(r, True, "answer", None)
    assert ids[0] == ids[1] == ids[2] != ids[3] and sizes == [1, 3, 5, 1]
    back = workloads.SessionedChat(MODEL, 0, 7, sizer())
    first = back.next(p, "run")
    back.done(first, True, "a", None)
    back.current.turns = p.session_turns        # finished: the next request opens a new session
    second = back.next(p, "run")
    back.done(second, True, "a", None)
    returned = back.next(WorkloadParams(context_tokens=60, session_turns=5, reuse_ratio=1.0), "run")
    assert returned.session_id == first.session_id        # reuse_ratio=1: back to the older session


def test_rehydrate_manifest_is_deterministic():
    a = workloads.rehydrate_manifest(5, 10, sizer(), 20)
    assert a == workloads.rehydrate_manifest(5, 10, sizer(), 20) != workloads.rehydrate_manifest(6, 10, sizer(), 20)
    assert len({x["prefix_hash"] for x in a}) == 10


def test_error_messages_come_from_the_server():
    assert error_message(400, b'{"error": {"message": "unknown field `session_id`"}}') == "unknown field `session_id`"
    assert error_message(422, b'{"detail": "bad"}') == "bad"
    assert error_message(503, b"overloaded") == "overloaded"
    assert error_message(500, b"") == "HTTP 500"


def test_buckets_resolve_a_doubling():
    assert BUCKETS[0] == 0.005 and BUCKETS[-1] == 120.0
    assert all(b / a <= 1.2001 for a, b in zip(BUCKETS, BUCKETS[1:-1]))


def test_records_survive_partial_lines(tmp_path):
    w = RecordWriter(tmp_path / "requests.jsonl")
    rec = RequestRecord("r", "H0", "stackA", "fixed_context", 0, 0, "run", 1, 64, 0, "w", "completions", MODEL)
    w.write(rec)
    w.close()
    with open(tmp_path / "requests.jsonl", "a") as f:
        f.write('{"run_id": "r", "cut')                     # what a crash mid-write would leave
    assert [r["run_id"] for r in read_records(tmp_path / "requests.jsonl")] == ["r"]


def test_outages_back_off_and_end_when_the_stack_answers():
    """Refusals and 429/503 in a row become an outage with growing back-off; the first answer ends it."""
    from locustfiles.lib.outage import MAX_BACKOFF_S, OUTAGE_AFTER, OutageTracker

    def rec(status, error_class):
        r = RequestRecord("r", "H0", "stackB", "fixed_context", 0, 0, "run", 1, 64, 0, "w", "completions", MODEL)
        r.status, r.error_class = status, error_class
        return r
    t = OutageTracker()
    delays = [t.observe(rec(503, "http_503"))[0] for _ in range(OUTAGE_AFTER * 12)]
    assert delays[:OUTAGE_AFTER - 1] == [0.0] * (OUTAGE_AFTER - 1) and delays[OUTAGE_AFTER - 1] > 0
    assert delays == sorted(delays) and delays[-1] == MAX_BACKOFF_S
    assert t.observe(rec(200, "stream_cut")) == (0.0, None) and t.current is not None   # says nothing either way
    assert t.observe(rec(400, "http_400"))[0] == 0.0                # a 400 is an answer, not an outage
    assert t.current is None
    for _ in range(OUTAGE_AFTER):
        t.observe(rec(0, "connection"))
    delay, ended = t.observe(rec(200, None))
    assert delay == 0.0 and ended["kind"] == "connection" and ended["failures"] == OUTAGE_AFTER


def test_a_dead_worker_behind_a_live_frontend_is_an_outage():
    """A real Dynamo frontend whose worker died answers 404 with an empty body (its /health stays 200): a
    404 for the run's own model, any 5xx and a 200 with no body are outages; a 404 for an adapter the
    stack does not know, or a 400, are answers (#24.1)."""
    from locustfiles.lib.outage import OUTAGE_AFTER, OutageTracker

    def rec(status, error_class, model=MODEL):
        r = RequestRecord("r", "H0", "stackB", "fixed_context", 0, 0, "run", 1, 64, 0, "w", "completions", model)
        r.status, r.error_class = status, error_class
        return r
    for failure in (rec(404, "http_404"), rec(500, "http_500"), rec(502, "http_502"), rec(200, "empty_body")):
        t = OutageTracker(MODEL)
        assert [t.observe(failure)[0] for _ in range(OUTAGE_AFTER + 1)][-1] > 0, failure
        assert t.current["failures"] == OUTAGE_AFTER + 1
    for answer in (rec(404, "http_404", model="lora-007"), rec(400, "http_400")):
        t = OutageTracker(MODEL)
        assert all(t.observe(answer) == (0.0, None) for _ in range(OUTAGE_AFTER * 2)) and t.current is None
    # a request sent before the worker died and answered after: no end to the outage (the real frontend's
    # first outage used to end 0.1 s in on one such answer)
    t = OutageTracker(MODEL)
    for i in range(OUTAGE_AFTER + 1):
        failure = rec(404, "http_404")
        failure.start_time = 100.0 + i
        t.observe(failure)
    late = rec(200, None)
    late.start_time = 99.0
    assert t.observe(late) == (0.0, None) and t.current is not None
    fresh = rec(200, None)
    fresh.start_time = 130.0
    assert t.observe(fresh)[1]["failures"] == OUTAGE_AFTER + 1 and t.current is None


def test_the_shipped_trace_is_what_its_script_makes_and_bad_traces_are_one_line(tmp_path):
    import importlib.util

    from conftest import ROOT
    from locustfiles.lib import trace
    spec = importlib.util.spec_from_file_location("make_trace", ROOT / "locustfiles" / "traces" / "make_trace.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    shipped = (ROOT / "locustfiles" / "traces" / "synthetic.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in shipped] == make.generate()
    entries = trace.load(ROOT / "locustfiles" / "traces" / "synthetic.jsonl")
    assert len(entries) == len(shipped) and all(e.hash_ids[:2] == (0, 1) for e in entries)   # shared system prompt
    gaps = [g for g, _ in trace.arrivals(entries, 0.5, 0)]
    assert gaps[1] == pytest.approx((entries[1].timestamp_ms - entries[0].timestamp_ms) / 1000 * 0.5)
    assert min(g for g, _ in trace.arrivals(entries, 1.0, 2.0)) >= 0.5           # the rate cap
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [0]}\n{"timestamp": 1}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: expected timestamp, input_length"):
        trace.load(bad)
