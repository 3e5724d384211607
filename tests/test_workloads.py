"""Workload library units: seeded determinism, churn modes, sessions, calibration, stream errors."""
import collections
import json

from configs import WorkloadParams
from locustfiles.lib import workloads
from locustfiles.lib.metrics import BUCKETS
from locustfiles.lib.prompts import Calibration
from locustfiles.lib.records import RecordWriter, RequestRecord, read_records
from locustfiles.lib.stream import error_message

MODEL = "m"


def sequence(workload, params, n=5):
    return [json.dumps(workload.next(params, "run").body, sort_keys=True) for _ in range(n)]


def test_same_seed_same_prompts_and_adapters():
    p = WorkloadParams(context_tokens=64, adapter_count=8, lora_churn_mode="uniform")
    names = workloads.adapter_names(8)
    a = workloads.LoraChurn(MODEL, 3, 42, Calibration(), names, False)
    b = workloads.LoraChurn(MODEL, 3, 42, Calibration(), names, False)
    c = workloads.LoraChurn(MODEL, 3, 43, Calibration(), names, False)
    assert sequence(a, p) == sequence(b, p)
    assert sequence(a, p) != sequence(c, p)
    other_user = workloads.FixedContext(MODEL, 4, 42, Calibration())
    assert sequence(workloads.FixedContext(MODEL, 3, 42, Calibration()), p) != sequence(other_user, p)


def test_fixed_context_reuses_a_users_document_and_nonce_separates_users():
    p = WorkloadParams(context_tokens=64, nonce_per_user=True)
    users = [workloads.FixedContext(MODEL, u, 42, Calibration()) for u in range(4)]
    first = [w.next(p, "run").body["prompt"] for w in users]
    assert len({f.split("]")[0] for f in first}) == 4                # no prefix shared across users
    again = users[0].next(p, "run").body["prompt"].split()
    assert again[:-2] == first[0].split()[:-2] and again[-2:] != first[0].split()[-2:]   # same document, new question
    shared = WorkloadParams(context_tokens=64, nonce_per_user=False)
    a, b = (workloads.FixedContext(MODEL, u, 42, Calibration()).next(shared, "run").body["prompt"] for u in (0, 1))
    assert a.split()[:-2] == b.split()[:-2]                           # without the nonce, users share it


def test_hot_cold_churn_follows_the_ratio():
    p = WorkloadParams(adapter_count=20, lora_churn_mode="hot_cold", lora_hot_ratio=0.2, lora_hot_prob=0.9)
    w = workloads.LoraChurn(MODEL, 0, 1, Calibration(), workloads.adapter_names(20), True)
    picks = collections.Counter(w.pick(p) for _ in range(5000))
    hot = sum(picks[n] for n in workloads.adapter_names(4))
    assert 0.87 < hot / 5000 < 0.93
    rr = workloads.LoraChurn(MODEL, 0, 1, Calibration(), workloads.adapter_names(3), True)
    p_rr = WorkloadParams(adapter_count=3, lora_churn_mode="round_robin")
    assert [rr.pick(p_rr) for _ in range(4)] == ["lora-001", "lora-002", "lora-000", "lora-001"]
    req = rr.next(p_rr, "run")
    assert req.body["adapter_id"] == req.adapter and req.body["model"] == MODEL   # via the proxy


def test_calibration_lands_on_the_target_after_one_answer():
    cal = Calibration()
    w = workloads.FixedContext(MODEL, 0, 1, cal)
    p = WorkloadParams(context_tokens=500, nonce_per_user=True)
    tokens = lambda req: int(len(req.body["prompt"].split()) * 1.3) + 7     # a made-up tokenizer
    first = w.next(p, "run")
    for _ in range(3):                      # concurrent answers to the same uncalibrated size agree
        w.done(first, True, "", tokens(first))
    assert abs(tokens(w.next(p, "run")) - 500) <= 2


def test_sessions_grow_and_reuse_older_ones():
    p = WorkloadParams(context_tokens=60, session_turns=3, reuse_ratio=0.0, max_tokens=4)
    w = workloads.SessionedChat(MODEL, 0, 7, Calibration())
    ids, sizes = [], []
    for _ in range(4):
        r = w.next(p, "run")
        ids.append(r.session_id)
        sizes.append(len(r.body["messages"]))
        assert r.body["user"] == r.session_id
        w.done(r, True, "answer", None)
    assert ids[0] == ids[1] == ids[2] != ids[3] and sizes == [1, 3, 5, 1]
    back = workloads.SessionedChat(MODEL, 0, 7, Calibration())
    first = back.next(p, "run")
    back.done(first, True, "a", None)
    back.current.turns = p.session_turns        # finished: the next request opens a new session
    second = back.next(p, "run")
    back.done(second, True, "a", None)
    returned = back.next(WorkloadParams(context_tokens=60, session_turns=5, reuse_ratio=1.0), "run")
    assert returned.session_id == first.session_id        # reuse_ratio=1: back to the older session


def test_rehydrate_manifest_is_deterministic():
    a = workloads.rehydrate_manifest(5, 10, 20)
    assert a == workloads.rehydrate_manifest(5, 10, 20) != workloads.rehydrate_manifest(6, 10, 20)
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
