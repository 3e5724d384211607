import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

import configs
from configs import ConfigError, parse_size, plan_run
from configs.paths import ensure_data_dir, safe_join
from configs.tier_env import render, tier_env
from conftest import ROOT, run_module


@pytest.fixture(scope="module")
def cfg():
    return configs.load()


def test_shipped_config_loads_and_every_hypothesis_plans(cfg):
    assert set(cfg.profiles) == {"comfy", "spill", "stress"}
    assert set(cfg.hypotheses) == {"H0", "H1", "H2A", "H2B", "H3", "H4A", "H4B", "H5", "H6", "H7", "H8", "H9", "TR"}
    for hid, hyp in cfg.hypotheses.items():
        plan = plan_run(cfg, hid, {})
        assert plan.steps, hid
        assert plan.seed == 42 and hyp.expected
        assert plan.openai_base == cfg.stacks[plan.stack_name].openai_base
        assert all(s.index == i for i, s in enumerate(plan.steps))


def test_stacks_match_the_real_endpoints(cfg):
    a, b = cfg.stacks["stackA"], cfg.stacks["stackB"]
    assert a.openai_base == "http://127.0.0.1:8355/v1" and not a.kv_tiering
    assert b.openai_base == "http://127.0.0.1:9000/v1" and b.metrics_url == "http://127.0.0.1:9000/metrics"
    assert b.kvbm_metrics_url == "http://127.0.0.1:6880/metrics"
    assert cfg.models[a.model].handle == "nvidia/Llama-3.3-70B-Instruct-NVFP4"
    assert cfg.models["l8b"].handle == "nvidia/Llama-3.1-8B-Instruct-NVFP4"


def test_the_shipped_spill_and_stress_profiles_reach_the_disk_tier_where_the_plan_wants_storage(cfg):
    """The plan's T0/T1 sizes held every H2B step's working set in 64 KiB blocks: a plain H2B run on the
    simulator onboarded nothing (#26.4). Each storage hypothesis must have steps that can spill, and a
    run that cannot says so before it starts."""
    from configs.spill import fits, prediction, working_set_blocks
    for hid in ("H2B", "H3", "H4B", "H6", "H7", "H8"):
        plan = plan_run(cfg, hid, {"STACK": "stackB"})
        assert any(f.spills for f in fits(plan)), hid
        assert prediction(plan).startswith("spill: "), hid
    h2b = plan_run(cfg, "H2B", {})
    assert [f.spills for f in fits(h2b)] == [False, False, False, False, True]
    assert fits(plan_run(cfg, "H2B", {"TIER_MODE": "B1"})) is None      # no disk tier: nothing to predict
    assert fits(plan_run(cfg, "H2A", {})) is None                       # Stack A
    small = prediction(plan_run(cfg, "H2B", {"CONCURRENCY": "2"}))
    assert small.startswith("spill: no step can reach the disk tier") and "2 users x 4224 tokens = 264 KV blocks" \
        in small and "the larger of tier0 and tier1, 3072 blocks (144MiB, 192MiB: KVBM writes through" in small
    shared = plan_run(cfg, "H2B", {})
    one = dataclasses.replace(shared.steps[-1], params=dataclasses.replace(shared.steps[-1].params,
                                                                           nonce_per_user=False))
    assert working_set_blocks(one) == 132                       # one prompt all users share


def test_sweeps_follow_the_plan(cfg):
    h0 = plan_run(cfg, "H0", {})
    assert [s.params.concurrency for s in h0.steps] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    h2b = plan_run(cfg, "h2b", {})
    assert [s.params.context_tokens for s in h2b.steps] == [256, 512, 1024, 2048, 4096]
    h4b = plan_run(cfg, "H4B", {})
    assert [s.fio_profile for s in h4b.steps] == [None, "moderate", "heavy"]
    heavy = cfg.fio_profiles["heavy"]
    assert (heavy.rw, heavy.rwmixread, heavy.bs, heavy.iodepth, heavy.numjobs) == ("randrw", 70, 16384, 32, 4)
    h6 = plan_run(cfg, "H6", {})
    assert len(h6.steps) == 8
    assert h6.steps[1].profile.tier1_bytes == 144 * 2**20 and h6.steps[1].profile.eviction_policy == "lfu"
    assert h6.steps[-1].profile.tier1_bytes == 384 * 2**20


@pytest.mark.parametrize("text,expected", [
    ("8GiB", 8 * 2**30), ("512MiB", 512 * 2**20), ("64KiB", 65536), ("1.5GB", 1_500_000_000),
    ("4096", 4096), (123, 123), ("2 TiB", 2 * 2**40), ("10gb", 10_000_000_000),
])
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["-1GiB", -5, "lots", "1.5KiB7", "", "0.3", True, "8XB"])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_env_overrides(cfg):
    env = {"STACK": "B", "CONCURRENCY": "1,4,16", "DURATION_S": "20", "SEED": "7",
           "ENDPOINT": "http://10.0.0.5:9000/v1/completions", "PROFILE": "stress", "MODEL": "l8b"}
    plan = plan_run(cfg, "H0", env)
    assert plan.stack_name == "stackB"
    assert [s.params.concurrency for s in plan.steps] == [1, 4, 16]
    assert plan.step_duration_s == 20 and plan.seed == 7
    assert plan.openai_base == "http://10.0.0.5:9000/v1"
    assert plan.profile_name == "stress" and plan.steps[0].profile == cfg.profiles["stress"]
    assert plan.model_handle == "nvidia/Llama-3.1-8B-Instruct-NVFP4"
    # A single value for a parameter that is not swept becomes the fixed value.
    h2b = plan_run(cfg, "H2B", {"CONCURRENCY": "8", "CONTEXT_TOKENS": "2048"})
    assert len(h2b.steps) == 1 and h2b.steps[0].params.concurrency == 8
    assert h2b.steps[0].params.context_tokens == 2048


@pytest.mark.parametrize("env,needle", [
    ({"STACK": "C"}, "STACK='C'"),
    ({"STACK": "stackA"}, "runs on stackB only"),
    ({"PROFILE": "gentle"}, "PROFILE='gentle': expected one of comfy, spill, stress"),
    ({"CONCURRENCY": "many"}, "CONCURRENCY='many'"),
    ({"CONCURRENCY": "0"}, "positive integer"),
    ({"DURATION_S": "-3"}, "DURATION_S"),
    ({"SEED": "x"}, "SEED='x': expected an integer"),
    ({"ENDPOINT": "localhost:9000"}, "ENDPOINT"),
    ({"ENDPOINT": "http://h:1/v1/chat/completions?x=1"}, "must not carry a query"),
    ({"ENDPOINT": "http://h:99999/v1"}, "invalid port"),
    ({"CONCURRENCY": "99999999999999999999"}, "positive integer up to 100000"),
])
def test_bad_env_overrides(cfg, env, needle):
    with pytest.raises(ConfigError) as err:
        plan_run(cfg, "H2B", env)
    assert needle in str(err.value)


def test_unknown_hypothesis(cfg):
    with pytest.raises(ConfigError, match="unknown hypothesis 'H42'"):
        plan_run(cfg, "H42", {})


BAD_OVERLAYS = [
    ("profiles:\n  spill:\n    tier3_bytes: 1GiB\n", "profiles.spill.tier3_bytes: unknown key"),
    ("profiles:\n  spill:\n    kv_block_size_tokens: lots\n",
     "profiles.spill.kv_block_size_tokens: expected an integer, got 'lots'"),
    ("profiles:\n  spill:\n    tier1_bytes: -1GiB\n", "profiles.spill.tier1_bytes: size must not be negative"),
    ("profiles:\n  spill:\n    tier1_bytes: a lot\n", "profiles.spill.tier1_bytes: expected a size such as 8GiB"),
    ("hypotheses:\n  H2B:\n    profile: gentle\n", "hypotheses.H2B.profile: unknown profile 'gentle'"),
    ("profiles:\n  spill:\n    eviction_policy: fifo\n", "eviction_policy: expected one of 'lru', 'lfu', 'segmented'"),
    ("stacks:\n  stackA:\n    openai_base: 8355\n", "stacks.stackA.openai_base: expected a string"),
    ("hypotheses:\n  H0:\n    sweep: {colour: [red]}\n", "hypotheses.H0.sweep.colour: cannot sweep this key"),
    ("hypotheses:\n  H0:\n    sweep: {concurrency: [1, two]}\n", "hypotheses.H0.sweep.concurrency.1: expected an integer"),
    ("profiles:\n  tiny:\n    description: x\n", "profiles.tiny.tier0_bytes: missing key"),
    ("profiles: [1, 2]\n", "profiles: expected a mapping"),
    ("profiles:\n  spill: {tier1_bytes: 1GiB\n", "not valid YAML"),
    ("- just\n- a list\n", "expected a mapping at the top level"),
    # range checks are blamed on the file and key that set the value, not on the shipped file
    ("exporters: {port: 70000}\n", "overlay.yaml: exporters.port: must be a TCP port"),
    ("exporters: {ports: {nvme: 0}}\n", "overlay.yaml: exporters.ports.nvme: must be a TCP port"),
    ("engine: {time_scale: .nan}\n", "overlay.yaml: engine.time_scale: expected a finite number"),
    ("engine: {iteration_base_ms: .inf}\n", "engine.iteration_base_ms: expected a finite number"),
    ("engine: {lora_bytes: 100TiB}\n", "engine.lora_bytes: must be at most 64 GiB"),
    ("results_dir: ''\n", "results_dir: must not be empty"),
    ("profiles:\n  spill: {tier2_path: /}\n", "profiles.spill.tier2_path: / is a system directory"),
    ("profiles:\n  spill: {tier2_path: /etc}\n", "/etc is a system directory"),
    ("profiles:\n  spill: {tier2_path: /usr/local/kv}\n", "is a system directory"),
    ("prometheus: {retention: banana}\n", "prometheus.retention: must be a Prometheus duration"),
    ("exporters: {listen: not an address}\n", "exporters.listen: must be an IP address"),
    ("stacks:\n  stackA: {openai_base: 'http://'}\n", "stacks.stackA.openai_base: must be an http(s) URL with a host"),
    ("stacks:\n  stackA: {metrics_url: 'http://127.0.0.1:99999/metrics'}\n", "metrics_url: has an invalid port"),
    ("loadgen: {grafana_url: 'http://g:3000/?a=1'}\n", "loadgen.grafana_url: must not carry a query"),
    ("dynamo: {workers: 0}\n", "dynamo.workers: must be 1 to 16"),
    ("dynamo: {workers: 2, system_port: 32760}\n", "dynamo.system_port: must be at most 32767 for every worker"),
    ("dynamo: {workers: 2, http_port: 8091}\n", "dynamo.workers: ports collide"),
    ("stacks:\n  stackB: {worker_metrics_url: ['http://a:1/metrics', 'http://a:1/metrics']}\n",
     "stacks.stackB.worker_metrics_url: lists a URL twice"),
    ("stacks:\n  stackB: {worker_metrics_url: ['http://']}\n", "worker_metrics_url: must be an http(s) URL"),
    ("stacks:\n  stackB: {router_mode: fastest}\n", "stacks.stackB.router_mode: expected one of"),
    ("stacks:\n  stackB: {kv_offload: lmcache}\n", "stacks.stackB.kv_offload: expected one of"),
    ("stacks:\n  stackB: {kv_offload: trtllm, worker_metrics_url: null}\n",
     "stacks.stackB.worker_metrics_url: kv_offload: trtllm under Dynamo reads TensorRT-LLM's KV metrics"),
]


@pytest.mark.parametrize("text,needle", BAD_OVERLAYS)
def test_bad_config_names_file_key_and_expectation(write_yaml, text, needle):
    path = write_yaml(text)
    with pytest.raises(ConfigError) as err:
        configs.load(path)
    message = str(err.value)
    assert needle in message
    assert "overlay.yaml" in message


def test_overlay_encoding(write_yaml):
    path = write_yaml("")
    path.write_bytes(b"\xef\xbb\xbfengine: {time_scale: 0.5}\n")      # a byte-order mark is harmless
    assert configs.load(path).engine.time_scale == 0.5
    path.write_bytes(b"engine: {time_scale: 0.5}\n# caf\xe9\n")       # Latin-1, not UTF-8
    with pytest.raises(ConfigError, match=r"overlay.yaml: not UTF-8 text \(byte 0xe9 at offset 31\)"):
        configs.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        configs.load(tmp_path / "nope.yaml")


def test_overlay_changes_values_and_env_var_selects_it(write_yaml, monkeypatch):
    path = write_yaml("stacks:\n  stackB:\n    openai_base: http://127.0.0.1:19000/v1\n"
                      "profiles:\n  spill:\n    tier1_bytes: 2GiB\n")
    monkeypatch.setenv("HARNESS_CONFIG", str(path))
    cfg = configs.load()
    assert cfg.stacks["stackB"].openai_base == "http://127.0.0.1:19000/v1"
    assert cfg.profiles["spill"].tier1_bytes == 2 * 2**30
    assert cfg.profiles["spill"].tier0_bytes == 144 * 2**20  # untouched keys keep the shipped value


def test_cli_user_error_is_one_line_without_traceback(write_yaml):
    bad = write_yaml("profiles:\n  spill:\n    tier1_bytes: -1GiB\n")
    proc = run_module("configs", "--config", str(bad), "validate")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "tier1_bytes" in lines[0] and "overlay.yaml" in lines[0]
    ok = run_module("configs", "validate")
    assert ok.returncode == 0 and ok.stdout.startswith("ok:")


def test_cli_help():
    for mod in (("configs",), ("configs.tier_env",)):
        proc = run_module(*mod, "--help")
        assert proc.returncode == 0 and "usage" in proc.stdout


def _eval_tier_env(args, names):
    script = 'eval "$(%s)"; for n in %s; do printf "%%s=%%s\\n" "$n" "${!n}"; done' % (
        " ".join(args), " ".join(names))
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


NAMES = ["DYN_KVBM_TIER0_BYTES", "DYN_KVBM_TIER1_BYTES", "DYN_KVBM_TIER2_BYTES", "DYN_KVBM_KV_BLOCK_SIZE_BYTES",
         "DYN_KVBM_TIER2_PATH", "DYN_KVBM_CPU_CACHE_GB", "DYN_KVBM_DISK_CACHE_GB", "DYN_KVBM_DISK_CACHE_DIR",
         "DYN_KVBM_METRICS", "DYN_KVBM_METRICS_PORT"]


def test_tier_env_is_valid_shell_and_round_trips(cfg, tmp_path):
    text = render(tier_env(cfg, "spill"))
    script = tmp_path / "env.sh"
    script.write_text(text)
    subprocess.run(["bash", "-n", str(script)], check=True)
    values = _eval_tier_env([sys.executable, "-m", "configs.tier_env", "--profile", "spill"], NAMES)
    assert values["DYN_KVBM_TIER0_BYTES"] == str(144 * 2**20)
    assert values["DYN_KVBM_TIER1_BYTES"] == str(192 * 2**20)
    assert values["DYN_KVBM_TIER2_BYTES"] == str(64 * 2**30)
    assert values["DYN_KVBM_KV_BLOCK_SIZE_BYTES"] == "65536"
    # KVBM reads GB as f64 decimal gigabytes: GB * 1e9 must give back the byte count.
    assert round(float(values["DYN_KVBM_CPU_CACHE_GB"]) * 1e9) == 192 * 2**20
    assert round(float(values["DYN_KVBM_DISK_CACHE_GB"]) * 1e9) == 64 * 2**30
    assert values["DYN_KVBM_TIER2_PATH"] == str(ROOT / "var/kvbm/spill") == values["DYN_KVBM_DISK_CACHE_DIR"]
    assert values["DYN_KVBM_METRICS"] == "true" and values["DYN_KVBM_METRICS_PORT"] == "6880"


def test_tier_env_follows_the_tier_mode():
    def run(mode):
        script = ("export DYN_KVBM_CPU_CACHE_GB=stale DYN_KVBM_DISK_CACHE_DIR=stale; "
                  f'eval "$({sys.executable} -m configs.tier_env --profile spill --tier-mode {mode})"; '
                  'echo "$DYN_KVBM_TIER_MODE|${DYN_KVBM_CPU_CACHE_GB-unset}|${DYN_KVBM_DISK_CACHE_GB-unset}|'
                  '${DYN_KVBM_DISK_CACHE_DIR-unset}|${DYN_KVBM_METRICS-unset}|$DYN_CONNECTOR"')
        return subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    gb = f"{192 * 2**20 / 1e9:.9f}".rstrip("0")
    assert run("cpu_disk").startswith(f"B2|{gb}|") and run("B2").strip().endswith("|kvbm")
    assert run("B1").strip() == f"B1|{gb}|0|unset|true|kvbm"            # the disk tier off, the CPU tier kept
    assert run("off").strip() == "B0|unset|unset|unset|unset|none"       # no KVBM at all: even stale values go,
    # and dynamo.trtllm is told to load no connector (--connector / DYN_CONNECTOR, 1.6.1)
    assert run_module("configs.tier_env", "--profile", "spill", "--tier-mode", "B9").returncode == 2


def test_tier_env_sets_kvbms_disk_offload_filter_as_the_profile_says():
    """spill and stress exist to put KV on the disk: KVBM's filter (a block reaches the disk only on its second
    offload) is off there, in the spelling KVBM reads ("true"); comfy and any mode without a disk tier leave it
    unset, so a value from an earlier start cannot linger."""
    def run(profile, mode="B2"):
        script = ("export DYN_KVBM_DISABLE_DISK_OFFLOAD_FILTER=stale; "
                  f'eval "$({sys.executable} -m configs.tier_env --profile {profile} --tier-mode {mode})"; '
                  'echo "${DYN_KVBM_DISABLE_DISK_OFFLOAD_FILTER-unset}"')
        return subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    assert run("spill") == run("stress") == "true"
    assert run("comfy") == run("spill", "B1") == run("spill", "B0") == "unset"


def test_tier_env_prints_tensorrt_llms_kv_cache_config_for_its_native_offload(cfg, write_yaml, tmp_path):
    """The same tiers as KVBM's, as TensorRT-LLM's KvCacheConfig fields (llm_args.py): bytes, manager v2 in every
    mode so a leg changes the tiers only, a host size of 0 in B0 (unset would size one automatically), the
    disk only in B2; the stack's kv_offload picks the form, --offload overrides it."""
    import yaml
    from configs.tier_env import engine_config
    spill = cfg.profiles["spill"]
    b2, b1, b0 = (engine_config(cfg, "spill", m)["kv_cache_config"] for m in ("B2", "B1", "B0"))
    assert b2 == {"use_kv_cache_manager_v2": True, "enable_block_reuse": True, "tokens_per_block": 32,
                  "max_tokens": spill.tier0_bytes // spill.kv_block_size_bytes * 32,
                  "host_cache_size": spill.tier1_bytes, "disk_cache_size": spill.tier2_bytes,
                  "disk_cache_path": str(ROOT / "var" / "kvbm" / "spill")}
    assert b1 == {k: v for k, v in b2.items() if not k.startswith("disk_")}
    assert b0 == {**b1, "host_cache_size": 0}
    proc = run_module("configs.tier_env", "--profile", "spill", "--offload", "trtllm")
    assert proc.returncode == 0 and yaml.safe_load(proc.stdout) == engine_config(cfg, "spill")
    options = yaml.safe_load(proc.stdout)
    assert options["return_perf_metrics"] is options["enable_iter_perf_stats"] is True
    assert "trtllm-serve nvidia/Llama-3.3-70B-Instruct-NVFP4 --config kv-offload.yaml" in proc.stdout
    assert "--extra-engine-args kv-offload.yaml --publish-metrics" in proc.stdout
    assert "DYN_KVBM" not in proc.stdout
    # the stack's kv_offload is the default; a disk_cache_path that does not exist is a warning, not a setup
    overlay = write_yaml(f"stacks: {{stackB: {{kv_offload: trtllm}}}}\nprofiles: {{spill: {{tier2_path: "
                         f"{tmp_path / 'absent'}}}}}\n")
    proc = run_module("configs", "--config", str(overlay), "tier-env", "--profile", "spill", "--tier-mode", "B1")
    assert proc.returncode == 0 and "disk_cache_size" not in proc.stdout and "host_cache_size: " in proc.stdout
    proc = run_module("configs.tier_env", "--config", str(overlay), "--profile", "spill")
    assert f"warning: profiles.spill.tier2_path {tmp_path / 'absent'}: does not exist; TensorRT-LLM refuses" \
        in proc.stderr and "KVBM writes through" not in proc.stderr
    assert f"until it does, the exporters label the disk of {tmp_path} kv_tier2" in proc.stderr
    assert run_module("configs.tier_env", "--config", str(overlay), "--profile", "spill", "--offload",
                      "kvbm").stdout.startswith("export DYN_KVBM_TIER_MODE=B2")


def test_the_spill_prediction_follows_the_offload(cfg, write_yaml):
    """KVBM writes through (the larger tier above the disk counts), TensorRT-LLM copies on eviction (their
    sum does): the same steps spill under one and not the other."""
    from configs.spill import fits, prediction
    native = configs.load(write_yaml("stacks: {stackB: {kv_offload: trtllm}}\n"))
    kvbm_fits, native_fits = fits(plan_run(cfg, "H2B", {})), fits(plan_run(native, "H2B", {}))
    assert [f.capacity for f in kvbm_fits] == [3072] * 5 and [f.capacity for f in native_fits] == [2304 + 3072] * 5
    assert "against the sum of tier0 and tier1, 5376 blocks (144MiB, 192MiB: TensorRT-LLM copies a block down on " \
           "eviction" in prediction(plan_run(native, "H2B", {}))
    assert not any(f.spills for f in native_fits) and kvbm_fits[-1].spills
    # the shipped overlay for TensorRT-LLM's offload sizes tier1 so the same steps spill as under KVBM (H6
    # sweeps tier1 itself, sized for KVBM: docs/configuration.md says what it shows under TensorRT-LLM's offload)
    shipped = configs.load(ROOT / "configs" / "trtllm-offload.yaml")
    assert shipped.stacks["stackB"].kv_offload == "trtllm"
    for hid in ("H2B", "H3", "H4B", "H7", "H8"):
        ours, kvbm = fits(plan_run(shipped, hid, {"STACK": "stackB"})), fits(plan_run(cfg, hid, {"STACK": "stackB"}))
        assert [f.spills for f in ours] == [f.spills for f in kvbm], hid


def test_tier_env_quotes_hostile_paths(write_yaml, tmp_path):
    canary = tmp_path / "canary"
    hostile = f"/tmp/kv dir/$(touch {canary})/'q'"
    overlay = write_yaml(f'profiles:\n  stress:\n    tier2_path: "{hostile}"\n')
    values = _eval_tier_env([sys.executable, "-m", "configs.tier_env", "--profile", "stress", "--config",
                             str(overlay)], ["DYN_KVBM_TIER2_PATH"])
    assert values["DYN_KVBM_TIER2_PATH"] == hostile
    assert not canary.exists()


def test_tier_env_unknown_profile_is_one_line():
    proc = run_module("configs.tier_env", "--profile", "gentle")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == "error: unknown profile 'gentle' (known: comfy, spill, stress)"


def test_paths_refuse_traversal_and_devices(tmp_path):
    assert safe_join(tmp_path, "lora", "adapter-1") == tmp_path.resolve() / "lora" / "adapter-1"
    for bad in ("..", "../etc", "a/b", "", ".hidden", "x" * 200, "a\x00b"):
        with pytest.raises(ConfigError):
            safe_join(tmp_path, bad)
    with pytest.raises(ConfigError, match="raw device"):
        ensure_data_dir("/dev/null")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        ensure_data_dir(f)
    assert ensure_data_dir(tmp_path / "new" / "dir").is_dir()


def test_the_overlay_a_configuration_was_loaded_with_travels_with_it(write_yaml, monkeypatch, tmp_path):
    """Every process a command starts reads the overlay the command read, however it was given (#25.6):
    the loaded configuration carries it, absolute; no file can set it; and it is not part of what a
    configuration says (``to_plain``), so a shown configuration loads again."""
    from configs.schema import to_plain
    path = write_yaml("prometheus: {port: 19090}\n")
    monkeypatch.chdir(tmp_path)
    assert configs.load("overlay.yaml").overlay == str(path.resolve())
    monkeypatch.setenv("HARNESS_CONFIG", str(path))
    assert configs.load().overlay == str(path)
    monkeypatch.delenv("HARNESS_CONFIG")
    assert configs.load().overlay is None and "overlay" not in to_plain(configs.load())
    with pytest.raises(ConfigError, match="overlay: unknown key"):
        configs.load(write_yaml("overlay: /etc/passwd\n", "bad.yaml"))


def test_a_request_objective_layers_harness_hypothesis_and_environment(cfg, write_yaml):
    """#27.2: objectives.requests, a hypothesis' slo over it field by field, SLO_* over both; the plan (and so
    the run's manifest) carries the result; a bad value is one line."""
    plan = plan_run(cfg, "H0", {})
    assert (plan.slo.ttft_s, plan.slo.tpot_s, plan.slo.e2e_s, plan.slo.percentile, plan.slo.gate) == \
        (2.0, 0.1, None, 99.0, False)
    overlay = write_yaml("hypotheses:\n  H0: {slo: {ttft_s: 0.5, gate: true}}\n")
    mine = configs.load(overlay)
    plan = plan_run(mine, "H0", {"SLO_PERCENTILE": "95", "SLO_E2E_S": "30"})
    assert (plan.slo.ttft_s, plan.slo.tpot_s, plan.slo.e2e_s, plan.slo.percentile, plan.slo.gate) == \
        (0.5, 0.1, 30.0, 95.0, True)
    assert plan.snapshot()["slo"] == {"ttft_s": 0.5, "tpot_s": 0.1, "e2e_s": 30.0, "percentile": 95.0, "gate": True}
    with pytest.raises(ConfigError, match="environment SLO_TPOT_S='-1'"):
        plan_run(cfg, "H0", {"SLO_TPOT_S": "-1"})
    with pytest.raises(ConfigError, match="percentile: must be in"):
        configs.load(write_yaml("objectives: {requests: {percentile: 0}}\n", "bad.yaml"))


def test_kvbm_checks_warn_about_tiers_a_real_kvbm_would_waste(cfg, tmp_path, write_yaml):
    """Write-through sizes, /tmp, memory filesystems and spinning disks: each one line naming the profile."""
    import dataclasses
    import os
    from configs import kvbm_checks as K
    from configs.paths import nearest_existing
    spill = cfg.profiles["spill"]
    t2 = Path("/never-made-by-this-test/t2")       # outside /tmp wherever the checkout is; only "/" exists
    sized = dataclasses.replace(spill, tier0_bytes=64 * 2**20, tier1_bytes=32 * 2**20, tier2_bytes=16 * 2**20,
                                tier2_path=str(t2))
    every = K.warnings("x", sized, mountinfo=str(tmp_path / "none"), sysfs=str(tmp_path / "nosys"))
    assert f"profiles.x.tier2_path {t2}: does not exist; until it does, the exporters label the disk of / " \
           "kv_tier2 (mkdir -p it on the NVMe)" in every

    def warnings(*a, **kw):                        # the rest, each line on its own
        return [w for w in K.warnings(*a, **kw) if ": does not exist;" not in w]
    lines = warnings("x", sized, mountinfo=str(tmp_path / "none"), sysfs=str(tmp_path / "nosys"))
    assert len(lines) == 2 and "no larger than the host tier (32MiB)" in lines[0] and "write" in lines[0]
    assert "smaller than the device KV pool (64MiB)" in lines[1]
    fine = dataclasses.replace(spill, tier0_bytes=2**20, tier1_bytes=2**21, tier2_bytes=2**30,
                               tier2_path=str(t2))
    assert warnings("x", fine, mountinfo=str(tmp_path / "none"), sysfs=str(tmp_path / "nosys")) == []
    # a spinning disk, as its queue says (a sysfs tree for this path's device, a partition of it)
    dev = os.stat(nearest_existing(t2)).st_dev
    node = tmp_path / "sys" / "dev" / "block" / f"{os.major(dev)}:{os.minor(dev)}"
    (node / ".." / "queue").mkdir(parents=True)
    node.mkdir(parents=True, exist_ok=True)
    (node / ".." / "queue" / "rotational").write_text("1\n")
    spun = warnings("x", fine, mountinfo=str(tmp_path / "none"), sysfs=str(tmp_path / "sys"))
    assert spun == [f"profiles.x.tier2_path {t2}: on a rotational disk, not an NVMe tier"]
    # on tmpfs (the mount table says so for this device) and under /tmp
    (tmp_path / "mountinfo").write_text(f"36 25 {os.major(dev)}:{os.minor(dev)} / / rw - tmpfs tmpfs rw\n")
    memory = warnings("x", fine, mountinfo=str(tmp_path / "mountinfo"), sysfs=str(tmp_path / "sys"))
    assert len(memory) == 1 and "on tmpfs" in memory[0] and "not the NVMe" in memory[0]
    at_tmp = dataclasses.replace(fine, tier2_path="/tmp/kvbm")
    assert any("under /tmp, KVBM's default" in w for w in warnings("x", at_tmp))
    # the command says them on stderr, and still validates; the shipped sizes are as KVBM wants them
    proc = run_module("configs", "--config", str(write_yaml("profiles: {spill: {tier1_bytes: 48MiB}}\n")), "validate")
    assert proc.returncode == 0 and "warning: profiles.spill: the host tier (48MiB) is smaller" in proc.stderr
    assert "smaller than the device" not in run_module("configs", "validate").stderr
