"""What the benchmarks read of a process from /proc: its stat fields and its CPU seconds."""

from __future__ import annotations

import os


def stat_fields(pid: int) -> list[str]:
    """``/proc/PID/stat`` after the command name (which may hold spaces): [0] state, [1] parent id,
    [11] utime, [12] stime, [13] cutime, [14] cstime (clock ticks). Raises OSError once it has gone."""
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds (user + system) of this process, or of ``pid``."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
