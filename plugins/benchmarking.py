"""Process memory and machine facts that the benchmark scripts in ``tools/`` print."""

import platform
import resource

__all__ = ["cpu_model", "peak_rss_mb", "reset_peak_rss", "rss_mb"]


def cpu_model():
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    fallback = platform.processor() or platform.machine() or "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return fallback


def rss_mb(field="VmRSS"):
    """A memory field of ``/proc/self/status`` in MB (``VmRSS`` resident, ``VmHWM`` its peak),
    or None where there is no such file."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_peak_rss():
    """Reset the kernel's peak-RSS counter (``VmHWM``) to the current RSS; False where the
    kernel offers no reset (then ``peak_rss_mb`` is the process's lifetime peak)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb():
    """Peak resident set size in MB since ``reset_peak_rss`` (or since the process started)."""
    peak = rss_mb("VmHWM")
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return peak
