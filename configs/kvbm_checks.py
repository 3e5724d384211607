"""What KVBM would make of a profile's tiers on this machine: warnings, never errors (a rig may mean it).

KVBM writes through, device → host → disk (its host blocks are queued for the disk as they are registered;
ai-dynamo/dynamo lib/llm/src/block_manager/offload.rs), so a disk tier no larger than the host tier holds
nothing the host does not, and a host tier smaller than the device's KV pool churns without holding what
the device evicts. Its disk cache file lives in DYN_KVBM_DISK_CACHE_DIR (default ``/tmp/``) and is opened
O_DIRECT (storage/disk.rs): on tmpfs or an overlay the reads never reach a disk, and a rotational disk
is no NVMe tier. TensorRT-LLM's native offload copies a block down only on eviction, so its tiers add up and
the size warnings are KVBM's alone; its disk_cache_path must exist before the engine starts (llm_args.py's
validator refuses it otherwise), and the rest of the path warnings hold for it too.
"""
from __future__ import annotations

import os
from pathlib import Path

from .model import Profile
from .paths import nearest_existing, resolve
from .sizes import format_size

MEMORY_FS = {"tmpfs", "ramfs", "overlay", "overlayfs", "aufs"}
KVBM_DEFAULT_DIR = "/tmp"


def fs_type(path: Path, mountinfo: str = "/proc/self/mountinfo") -> str:
    """The filesystem type of the mount holding ``path`` (matched by device number), "" where unknown."""
    dev = os.stat(nearest_existing(path)).st_dev
    key = f"{os.major(dev)}:{os.minor(dev)}"
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return ""
    best = ("", "")
    for line in lines:
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) > 4 and parts[2] == key and str(nearest_existing(path)).startswith(parts[4]) \
                and len(parts[4]) >= len(best[0]):
            best = (parts[4], rest.split()[0] if rest.split() else "")
    return best[1]


def rotational(path: Path, sysfs: str = "/sys") -> bool | None:
    """Whether the block device holding ``path`` spins (its queue/rotational, or its parent disk's for a
    partition); None where the kernel does not say (a virtual or memory filesystem)."""
    dev = os.stat(nearest_existing(path)).st_dev
    node = Path(sysfs) / "dev" / "block" / f"{os.major(dev)}:{os.minor(dev)}"
    for candidate in (node, node / ".."):
        flag = candidate / "queue" / "rotational"
        try:
            return flag.read_text().strip() == "1"
        except OSError:
            continue
    return None


def warnings(name: str, p: Profile, mountinfo: str = "/proc/self/mountinfo", sysfs: str = "/sys",
             offload: str = "kvbm") -> list[str]:
    out = _write_through_sizes(name, p) if offload == "kvbm" else []
    if not p.tier2_bytes:
        return out
    path = Path(resolve(p.tier2_path))
    if not path.is_dir():
        refuses = "TensorRT-LLM refuses a disk_cache_path that is not an existing directory; " \
            if offload == "trtllm" else ""
        out.append(f"profiles.{name}.tier2_path {path}: does not exist; {refuses}until it does, the exporters "
                   f"label the disk of {nearest_existing(path)} kv_tier2 (mkdir -p it on the NVMe)")
    if path == Path(KVBM_DEFAULT_DIR) or Path(KVBM_DEFAULT_DIR) in path.parents:
        out.append(f"profiles.{name}.tier2_path {path}: under /tmp, KVBM's default cache directory, which is "
                   "often tmpfs and cleaned on boot; give the disk tier its own directory on the NVMe")
    kind = fs_type(path, mountinfo)
    if kind in MEMORY_FS:
        out.append(f"profiles.{name}.tier2_path {path}: on {kind}: the disk cache there is memory, not the "
                   "NVMe (O_DIRECT reads never reach a disk); mount the NVMe there")
    elif rotational(path, sysfs):
        out.append(f"profiles.{name}.tier2_path {path}: on a rotational disk, not an NVMe tier")
    return out


def _write_through_sizes(name: str, p: Profile) -> list[str]:
    out = []
    if p.tier2_bytes and p.tier2_bytes <= p.tier1_bytes:
        out.append(f"profiles.{name}: the disk tier ({format_size(p.tier2_bytes)}) is no larger than the host "
                   f"tier ({format_size(p.tier1_bytes)}): KVBM writes through host -> disk, so the disk holds "
                   "nothing the host does not")
    if p.tier1_bytes and p.tier1_bytes < p.tier0_bytes:
        out.append(f"profiles.{name}: the host tier ({format_size(p.tier1_bytes)}) is smaller than the device "
                   f"KV pool ({format_size(p.tier0_bytes)}): it churns and cannot hold what the device evicts")
    return out
