"""Quality gates of the test plan, each with an explicit reason code, for verdict.json."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import pandas as pd

from .correlate import GRID_S
from .telemetry import ALIGNMENT, ALIGNMENT_TARGETS, raw_name


@dataclass(frozen=True)
class Gate:
    name: str
    status: str            # pass | fail | missing | not_applicable | blocked
    reason: str            # a code such as GATE_ALIGNMENT_LOW, or OK
    detail: str
    missing: tuple = ()    # telemetry series (analysis.telemetry.QUERIES names) the gate needed and lacked

    def as_dict(self) -> dict:
        d = asdict(self)
        d["missing"] = list(self.missing)
        return d


def scraped_times(frames: dict[str, pd.DataFrame], source: str) -> np.ndarray:
    """When ``source`` was really scraped with its target up (ALIGNMENT: raw samples, not a range query's
    lookback fill), sorted."""
    frame = frames.get(raw_name(source))
    if frame is None or frame.empty:
        return np.array([])
    want = ALIGNMENT[source][1]
    if want is not None:
        frame = frame[frame["value"] == want]
    return np.unique(frame["time"].to_numpy(dtype=float))


def fresh_share(times: np.ndarray, start: float, end: float, stale_s: float = 2.0) -> float:
    """Share of the 200 ms grid over [start, end) with a sample no older than ``stale_s``."""
    grid = np.arange(start, end, GRID_S)
    if not len(grid) or not len(times):
        return 0.0
    idx = np.searchsorted(times, grid, side="right") - 1
    fresh = (idx >= 0) & (grid - times[np.clip(idx, 0, None)] <= stale_s)
    return float(fresh.mean())


# below this share a source was not there at all (a last scrape or two at the run's edge aside)
ALIGNMENT_SEEN_MIN = 0.10


def alignment(frames: dict[str, pd.DataFrame], start: float, end: float, tiered: bool,
              stale_s: float = 2.0) -> Gate:
    """Share of the 200 ms grid where each source has a sample no older than ``stale_s`` (two scrapes
    of the slowest, 1 s, job: one late scrape is jitter, two are a gap). Samples are the ones really
    scraped, with their target up: a Prometheus outage or a KVBM that stopped answering is a gap here
    even where a range query or a frozen counter would show a value."""
    shares, missing = {}, []
    for source in ALIGNMENT:
        if source == "kv" and not tiered:
            continue
        share = fresh_share(scraped_times(frames, source), start, end, stale_s)
        if share < ALIGNMENT_SEEN_MIN:
            missing.append(source)
        else:
            shares[source] = share
    if missing:
        return Gate("aligned_samples", "missing", "TELEMETRY_MISSING",
                    "nothing scraped from " + "; ".join(ALIGNMENT_TARGETS[m] for m in missing),
                    tuple(raw_name(m) for m in missing))
    low = {k: v for k, v in shares.items() if v < 0.95}
    detail = ", ".join(f"{k} {v:.1%}" for k, v in shares.items())
    return Gate("aligned_samples", "fail" if low else "pass", "GATE_ALIGNMENT_LOW" if low else "OK", detail)


def repetitions(pooled: pd.DataFrame) -> list[Gate]:
    multi = pooled[pooled["repetitions"] >= 2] if not pooled.empty else pooled
    judged = multi.dropna(subset=["ttft_p99_cov", "ttft_p99_mean"]) if not multi.empty else multi
    if judged.empty and not multi.empty:     # repetitions without a single answered request (the stack died)
        na = "no step has a TTFT p99 in two repetitions to compare"
        return [Gate("cov_p99", "not_applicable", "NO_LATENCY", na),
                Gate("reproducibility_p99", "not_applicable", "NO_LATENCY", na)]
    multi = judged
    if multi.empty:
        na = "fewer than two repetitions per step"
        return [Gate("cov_p99", "not_applicable", "SINGLE_REPETITION", na),
                Gate("reproducibility_p99", "not_applicable", "SINGLE_REPETITION", na)]
    worst = multi.loc[multi["ttft_p99_cov"].idxmax()]
    cov_ok = worst["ttft_p99_cov"] < 0.10
    spread = (multi["ttft_p99_max"] - multi["ttft_p99_min"]) / multi["ttft_p99_mean"]
    widest = multi.loc[spread.idxmax()]
    repro_ok = spread.max() <= 0.05
    return [
        Gate("cov_p99", "pass" if cov_ok else "fail", "OK" if cov_ok else "COV_P99_HIGH",
             f"largest CoV of TTFT p99 across repetitions {worst['ttft_p99_cov']:.1%} at {worst['label']}"),
        Gate("reproducibility_p99", "pass" if repro_ok else "fail", "OK" if repro_ok else "REPRO_P99_SPREAD",
             f"largest p99 spread across repetitions {spread.max():.1%} at {widest['label']}"),
    ]


def goodput(pooled: pd.DataFrame, slo: Optional[dict]) -> Optional[Gate]:
    """Every step's share of good requests (analysis.steps.goodput) at the objective's percentile or above;
    None where the run's objective asks for no gate. A step with no served request has no share: missing,
    never a pass."""
    if not slo or not slo.get("gate"):
        return None
    bounds = ", ".join(f"{k[:-2].upper()} <= {slo[k]:g} s" for k in ("ttft_s", "tpot_s", "e2e_s") if slo.get(k))
    want = (slo.get("percentile") or 100.0) / 100
    judged = pooled.dropna(subset=["good_share"]) if "good_share" in pooled else pooled.iloc[0:0]
    if judged.empty:
        return Gate("goodput", "missing", "NO_SERVED_REQUESTS", f"no step served a request to judge ({bounds})")
    below = judged[judged["good_share"] < want]
    unjudged = len(pooled) - len(judged)
    if not below.empty:
        worst = below.loc[below["good_share"].idxmin()]
        return Gate("goodput", "fail", "GOODPUT_BELOW_OBJECTIVE",
                    f"{len(below)} of {len(pooled)} steps under {want:.0%} good ({bounds}); worst "
                    f"{worst['good_share']:.1%} at {worst['label']}")
    if unjudged:
        return Gate("goodput", "missing", "NO_SERVED_REQUESTS",
                    f"{unjudged} of {len(pooled)} steps served no request to judge; the others at {want:.0%} good "
                    "or more")
    return Gate("goodput", "pass", "OK", f"every step at {want:.0%} good or more ({bounds}); lowest "
                                         f"{judged['good_share'].min():.1%}")


H2A_PROCESS_READ_MAX = 2**20      # bytes/s the UMA-only stack's serving process may read and hold no KV there
PROCESS_COVERAGE_MIN = 0.9         # share of the run (fresh_share's grid) its reads must be observed for


def nvme_flat(process_read: float, process_coverage: float, run_mean: float, idle: float) -> Gate:
    """H2A: the UMA-only stack moves no KV through storage. What says so is the bytes its own serving process
    read (/proc/<pid>/io): the kv_tier2 disk's counters move for every reader (Prometheus, the OS, Stack B
    beside it on a one-disk rig), so a busy disk refutes nothing. Where the process's reads are not observed
    over the run, a disk as quiet as when idle still vouches for them (they are within its reads); a busier
    one leaves the claim unjudged."""
    disk = f"kv_tier2 disk {run_mean:.1f} r/s during the run vs {idle:.1f} r/s idle" \
        if not (math.isnan(run_mean) or math.isnan(idle)) else "kv_tier2 disk r/s not observed for the run and idle"
    if not math.isnan(process_read) and process_coverage >= PROCESS_COVERAGE_MIN:
        ok = process_read <= H2A_PROCESS_READ_MAX
        return Gate("h2a_nvme_flat", "pass" if ok else "fail", "OK" if ok else "H2A_NVME_NOT_FLAT",
                    f"the serving process read {process_read / 2**20:.2f} MiB/s from storage during the run "
                    f"(at most {H2A_PROCESS_READ_MAX / 2**20:g} MiB/s; its /proc/<pid>/io); {disk}")
    unseen = "the serving process's own reads (/proc/<pid>/io) are not observed" if math.isnan(process_read) else \
        f"the serving process's reads are observed for only {process_coverage:.0%} of the run"
    if math.isnan(run_mean) or math.isnan(idle):
        return Gate("h2a_nvme_flat", "missing", "TELEMETRY_MISSING", f"{unseen}, and the {disk}",
                    ("serving_read_bytes", "nvme_reads"))
    if abs(run_mean - idle) <= max(0.10 * idle, 5.0):
        return Gate("h2a_nvme_flat", "pass", "OK", f"{disk} (±10%, at least 5 r/s): every reader's reads, the "
                                                   f"serving process's among them ({unseen})")
    return Gate("h2a_nvme_flat", "missing", "TELEMETRY_MISSING",
                f"{disk}, but {unseen}: the disk's reads are any reader's, so they cannot be the stack's",
                ("serving_read_bytes",))


def tier2_hits_at_knee(share: float, label: Optional[str], onboarded: float, kv_up_share: float = math.nan) -> Gate:
    """``onboarded``: blocks/s onboarded from any tier at that step. Nothing onboarded is no signal
    (its own reason), not a low share; nor is it where KVBM's target was down (its counters held still)."""
    if label is None:
        return Gate("h2b_tier2_hits", "missing", "NO_STEPS", "no steps to judge")
    down = kvbm_down(kv_up_share)
    if down:
        return Gate("h2b_tier2_hits", "missing", "TELEMETRY_MISSING", down, ("kv_target_up",))
    if math.isnan(onboarded):
        return Gate("h2b_tier2_hits", "missing", "TELEMETRY_MISSING", "no KV onboard telemetry at " + label,
                    ("kv_onboard_blocks",))
    if not onboarded > 0:
        return Gate("h2b_tier2_hits", "fail", "H2B_NO_ONBOARD_SIGNAL",
                    f"no KV blocks were onboarded from any tier at {label}: no signal to take a tier2 share of")
    if math.isnan(share):
        return Gate("h2b_tier2_hits", "missing", "TELEMETRY_MISSING", "no onboard share at " + label,
                    ("kv_onboard_share_disk",))
    ok = share >= 0.20
    return Gate("h2b_tier2_hits", "pass" if ok else "fail", "OK" if ok else "H2B_TIER2_HITS_LOW",
                f"tier2 share of onboarded blocks {share:.1%} at {label} (needs >= 20%)")


# Bytes actually read must back at least this share of the bytes KVBM says it onboarded from disk.
READ_BACKING_MIN = 0.5
# KVBM's target must have answered this share of the run for its counters to say anything: a counter
# frozen while its target was down reads as "nothing moved", which nobody measured.
KVBM_UP_MIN = 0.5


@dataclass(frozen=True)
class DiskReads:
    """Bytes really read that could back a claim of KV onboarded from disk, most attributable first: the
    serving process's own (/proc/<pid>/io), the simulator's count for its tier2 file, and the kv_tier2
    device's, which every reader of that disk moves. nan where not observed."""
    process: float = math.nan
    file: float = math.nan
    device: float = math.nan
    other_readers: str = ""        # why the device's reads are known not to be the stack's alone (fio ran)

    def backing(self) -> tuple[float, str]:
        if not math.isnan(self.process):
            return self.process, "the serving process (its /proc/<pid>/io)"
        if not math.isnan(self.file):
            return self.file, "the tier2 file"
        if math.isnan(self.device) or self.other_readers:
            return math.nan, ""
        return self.device, "the kv_tier2 disk (unattributed: any reader of that disk counts)"


def kvbm_down(kv_up_share: float) -> Optional[str]:
    """Why the KV tier counters (KVBM's, or TensorRT-LLM's under its own offload) cannot be taken as measured,
    or None."""
    if math.isnan(kv_up_share):
        return None
    if kv_up_share < KVBM_UP_MIN:
        return (f"the KV tier counters answered only {kv_up_share:.0%} of the run ({ALIGNMENT_TARGETS['kv']}): "
                "they held still, which is not a measured zero")
    return None


def kv_up_share(frames: dict, start: float, end: float) -> float:
    """Share of the run KVBM's target answered its scrapes; nan where the exporter never said."""
    if frames.get(raw_name("kv")) is None or frames[raw_name("kv")].empty:
        return float("nan")
    return fresh_share(scraped_times(frames, "kv"), start, end)


FILTER_HINT = ("KVBM's disk-offload filter was on (a block reaches the disk only on its second offload within "
               "600 s), so blocks offloaded once never reach it: set the profile's disk_offload_filter: false "
               "(DYN_KVBM_DISABLE_DISK_OFFLOAD_FILTER=true on the worker)")


def mechanism(written: float, read: float, reads: DiskReads, kv_up_share: float = math.nan,
              filter_on: bool = False) -> Gate:
    """KVBM's counters say what it believes it moved; the pass needs bytes that were really read, by the
    serving process where that is observed. KV read back from a tier written before this run (H4B after
    H2B) is the mechanism too, so "nothing written" fails only when nothing was read either. A claim
    nothing backs fails; a claim nothing can check, or counters from a target that was down, is missing
    telemetry."""
    down = kvbm_down(kv_up_share)
    if down:
        return Gate("ssd_mechanism", "missing", "TELEMETRY_MISSING", down, ("kv_target_up",))
    if math.isnan(written) and math.isnan(read):
        return Gate("ssd_mechanism", "missing", "TELEMETRY_MISSING", "no KV tier telemetry",
                    ("kv_offload_disk_bytes", "kv_onboard_disk_bytes"))
    if not read > 0:
        if not written > 0:
            if filter_on:
                return Gate("ssd_mechanism", "fail", "DISK_OFFLOAD_FILTER_ON",
                            f"no KV bytes written to or read from the disk tier: {FILTER_HINT}")
            return Gate("ssd_mechanism", "fail", "GATE_NO_SSD_MECHANISM_SIGNAL",
                        "no KV bytes read back from the disk tier (its writes are not counted by this offload)"
                        if math.isnan(written) else "no KV bytes written to or read from the disk tier")
        return Gate("ssd_mechanism", "fail", "REHYDRATE_SIGNAL_ABSENT_WRITE_ONLY",
                    f"{written / 2**20:.1f} MiB written to the disk tier, nothing read back")
    backing, where = reads.backing()
    if math.isnan(backing):
        why = f"; the kv_tier2 disk's reads cannot stand in: {reads.other_readers}" if reads.other_readers else ""
        return Gate("ssd_mechanism", "missing", "TELEMETRY_MISSING",
                    f"KVBM reports {read / 2**20:.1f} MiB onboarded from disk, but the serving process's reads "
                    f"are not observed{why}", ("serving_read_bytes",))
    if backing < READ_BACKING_MIN * read:
        return Gate("ssd_mechanism", "fail", "DISK_READS_NOT_BACKED",
                    f"KVBM reports {read / 2**20:.1f} MiB onboarded from disk, but only {backing / 2**20:.1f} MiB "
                    f"were read by {where}")
    wrote = f"{written / 2**20:.1f} MiB written, " if written > 0 else \
        "writes not counted (TensorRT-LLM's offload has no disk-write counter), " if math.isnan(written) else \
        "nothing written in this run (a tier written earlier), "
    return Gate("ssd_mechanism", "pass", "OK",
                f"disk tier: {wrote}{read / 2**20:.1f} MiB read back ({backing / 2**20:.1f} MiB read by {where})")


# A B1 (CPU tier only) run that moved more than this through the disk tier has a disk tier after all.
B1_DISK_READ_BYTES = 1 << 20


def b1_disk_off(onboarded_from_disk: float, read_bytes: float, kv_up_share: float = math.nan) -> Gate:
    """Mechanism sanity of a B1 run: KVBM onboarded nothing from disk and (where observed) the tier2 file or
    disk was not read beyond a small threshold; otherwise B1 is not what it claims to be. Counters of a
    target that was down for most of the run held still: no disk traffic seen there is none measured."""
    if down := kvbm_down(kv_up_share):
        return Gate("b1_disk_off", "missing", "TELEMETRY_MISSING", down, ("kv_target_up",))
    if math.isnan(onboarded_from_disk) and math.isnan(read_bytes):
        return Gate("b1_disk_off", "missing", "TELEMETRY_MISSING", "no disk-tier telemetry for a B1 run",
                    ("kv_onboard_disk_bytes",))
    if onboarded_from_disk > 0 or read_bytes > B1_DISK_READ_BYTES:
        return Gate("b1_disk_off", "fail", "B1_DISK_TIER_NOT_DISABLED",
                    f"a B1 (CPU tier only) run onboarded {onboarded_from_disk:g} from disk and read "
                    f"{0 if math.isnan(read_bytes) else read_bytes / 2**20:.1f} MiB from the disk tier")
    return Gate("b1_disk_off", "pass", "OK", "no disk-tier traffic in a B1 run")


MAX_ERROR_RATE = 0.05        # more failed requests than this and a run measured failures, not the stack


def run_state(manifest: dict, error_rate: float) -> list[Gate]:
    gates = []
    complete = manifest["status"] == "complete"
    gates.append(Gate("run_complete", "pass" if complete else "fail", "OK" if complete else "RUN_INCOMPLETE",
                      manifest.get("stop_reason") or manifest["status"]))
    outages = manifest.get("outages") or []
    errors_ok = not error_rate > MAX_ERROR_RATE and not outages       # a stack that was out is no clean run, whatever the rate
    # nan: no request whose outcome is the server's (none recorded, or every one shed or cut by the client)
    detail = "no request reached the server to succeed or fail" if math.isnan(error_rate) else \
        f"{error_rate:.1%} of requests failed"
    if outages:
        kinds = ", ".join(sorted({o["kind"] for o in outages}))
        lasted = sum((o.get("end") or o["start"]) - o["start"] for o in outages)
        detail += (f"; {len(outages)} outage(s) of the stack ({kinds}): {sum(o['failures'] for o in outages)} "
                   f"requests failed in a row over {lasted:.0f} s, the load backed off")
    if math.isnan(error_rate) and not outages:
        gates.append(Gate("errors", "missing", "NO_SERVED_REQUESTS", detail))
    else:
        gates.append(Gate("errors", "pass" if errors_ok else "fail",
                          "OK" if errors_ok else "STACK_OUTAGE" if outages else "RUN_ERRORS_PRESENT", detail))
    if lost := manifest.get("loadgen_outages"):
        gates.append(Gate("loadgen", "fail", "LOADGEN_WORKER_LOST", "; ".join(
            f"worker {o['worker']} lost in slot {o['slot']}: {o['users_left']} of {o['target_concurrency']} users "
            "went on" for o in lost) + ": the steps from then ran below their target load"))
    if manifest.get("blocked"):
        gates.append(Gate("blocked", "blocked", "BLOCKED", manifest["blocked"]["reason"]))
    if manifest.get("session_id_ignored"):
        gates.append(Gate("session_id", "fail", "SESSION_ID_IGNORED", "the frontend accepted session_id but drops "
                          "every field it does not know: no session metadata reached the KV layer"))
    return gates


def verdict(gates: list[Gate]) -> str:
    """A blocked run is "blocked" unless its requests failed: an error rate is never hidden behind it."""
    if any(g.name == "errors" and g.status == "fail" for g in gates):
        return "fail"
    if any(g.status == "blocked" for g in gates):
        return "blocked"
    if any(g.status in ("fail", "missing") for g in gates):
        return "fail"
    return "pass"
