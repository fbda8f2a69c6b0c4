"""Peak memory of a child process, split into anonymous memory and file-backed pages (Linux /proc).

A process that trains from memory-mapped files counts the mapped pages it has read in its resident set,
although they are page cache the kernel drops under pressure (and pages already cached are mapped in
64 KB neighbourhoods on each fault). What a corpus really costs in memory is the anonymous part: the
benchmarks report both, polled from /proc/<pid>/status while the child runs.
"""
from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Watched:
    returncode: int
    output: str             # stdout then stderr
    peak_rss_mb: float      # VmHWM: the kernel's own peak of the whole resident set
    peak_anon_mb: float | None  # the largest RssAnon seen while polling (None without /proc)
    wall_s: float


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "RssAnon"):
                out[key] = int(value.split()[0])  # kB
    except (OSError, ValueError, IndexError):
        pass
    return out


def run_watched(cmd: list[str], poll_s: float = 0.1, **popen) -> Watched:
    """Run `cmd` to its end, polling its memory; output goes through temporary files (no pipe to fill)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, **popen)
        hwm, anon = 0, None
        while proc.poll() is None:
            st = _status(proc.pid)
            hwm = max(hwm, st.get("VmHWM", 0))
            if "RssAnon" in st:
                anon = max(anon or 0, st["RssAnon"])
            time.sleep(poll_s)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return Watched(proc.returncode, out.read() + err.read(), round(hwm / 1024, 1),
                       None if anon is None else round(anon / 1024, 1), wall)
