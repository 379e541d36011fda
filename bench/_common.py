"""Helpers shared by the benchmark scripts (run as ``python bench/NAME.py``, so this folder is on ``sys.path``)."""

from __future__ import annotations

import platform
import socket
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def pct(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile, NaN for no values."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or what ``platform`` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
