"""The machine a benchmark ran on: its float32 matmul ceiling and how busy it was.

Every speed in the benchmark is divided by a reference measured in the same run,
because on a shared machine absolute numbers move with the neighbours' load; the
`LoadMonitor` says how much of the CPU other processes took meanwhile.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time


def percentile(values, q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics."""
    ordered = sorted(float(v) for v in values)
    if not ordered:
        raise ValueError("percentile of no values")
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def timed_calls(call, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `repeats` calls of `call()` after `warmup` untimed ones.

    `call` must block until its result is ready (e.g. end with `.numpy()`).
    """
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def matmul_ceiling(n: int = 2048, repeats: int = 10, warmup: int = 2) -> dict:
    """float32 `tf.linalg.matmul` rate of an n x n product: the machine's compute ceiling.

    Returns:
        {"n", "repeats", "gflops" (median call), "gflops_best" (fastest call), "seconds_median"}.
    """
    import tensorflow as tf

    a = tf.random.stateless_normal([n, n], seed=[1, 2])
    b = tf.random.stateless_normal([n, n], seed=[3, 4])
    times = timed_calls(lambda: tf.linalg.matmul(a, b).numpy(), repeats, warmup)
    flops = 2.0 * n ** 3
    median = statistics.median(times)
    return {"n": n, "repeats": repeats, "seconds_median": median,
            "gflops": flops / median / 1e9, "gflops_best": flops / min(times) / 1e9}


def machine_info() -> dict:
    import tensorflow as tf

    return {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "tensorflow": tf.__version__,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class LoadMonitor:
    """CPU time the whole machine spent busy vs what this process (and its children) used.

    Reads /proc/stat (Linux); elsewhere only the load average is reported.
    """

    def __init__(self):
        self.start_wall = time.monotonic()
        self.start_busy = _machine_busy_seconds()
        self.start_own = own_cpu_seconds()
        self.load_start = _loadavg()

    def report(self) -> dict:
        wall = time.monotonic() - self.start_wall
        cores = os.cpu_count() or 1
        out = {"wall_seconds": wall, "cores": cores, "loadavg_start": self.load_start, "loadavg_end": _loadavg()}
        busy_now = _machine_busy_seconds()
        if self.start_busy is not None and busy_now is not None and wall > 0:
            busy = busy_now - self.start_busy
            own = own_cpu_seconds() - self.start_own
            out["machine_busy_cores"] = busy / wall
            out["own_busy_cores"] = own / wall
            out["others_busy_cores"] = max(busy - own, 0.0) / wall
        return out


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _machine_busy_seconds() -> float | None:
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = handle.readline().split()[1:]
    except OSError:
        return None
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
