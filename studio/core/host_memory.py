"""How much memory (RAM) the studio may use: the computer's, or a lower container or service limit."""

from __future__ import annotations

from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def host_memory_gib(cgroup: Path = CGROUP, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The memory (RAM) the studio may use, in GiB: the computer's, or a container's or service's
    limit where that is lower (Docker's --memory, a hosted Space, a systemd MemoryMax); None where
    none can be read. The limit that counts is the lowest on the way from this process's own
    cgroup (`/proc/self/cgroup`) up to the root: cgroup v2 `memory.max`, v1
    `memory/memory.limit_in_bytes`; "max" (v1: a huge number) means none."""
    import os

    try:
        found = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    except (AttributeError, ValueError, OSError):
        found = []
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    own = {"v2": "/", "v1": "/"}  # where this process sits in each hierarchy
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            own["v2"] = path or "/"
        elif "memory" in controllers.split(","):
            own["v1"] = path or "/"
    for root, name, kind in ((cgroup, "memory.max", "v2"), (cgroup / "memory", "memory.limit_in_bytes", "v1")):
        place = root / own[kind].strip("/")
        for folder in (place, *place.parents):
            try:
                text = (folder / name).read_text().strip()
            except OSError:
                text = ""
            if text.isdigit():
                found.append(int(text))
            if folder == root:
                break
    return min(found) / 2**30 if found else None
