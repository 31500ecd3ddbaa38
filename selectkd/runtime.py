"""Where and how the models run: the device, its numerics (bf16 autocast on CUDA), progress bars."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from .errors import SelectKDError


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the model and data hub cannot answer (offline mode, or its host does not resolve or connect), or None
    when it may: a name that is neither a local path nor a built-in one then fails at once, in one line, instead
    of after ~25 s of retries printed line by line. Behind a proxy the hub is tried as usual."""
    import socket
    import threading
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return None
    url = urlparse(constants.ENDPOINT)
    address = (url.hostname, url.port or (443 if url.scheme == "https" else 80))
    answer: list = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout).close()
            answer.append(None)
        except OSError as exc:
            answer.append(f"{url.hostname} cannot be reached: {exc.strerror or type(exc).__name__}")

    # the timeout bounds the connection, not the name lookup before it, which a broken resolver can hold for
    # half a minute: the lookup runs in a daemon thread, left behind (never waited for at exit) if it hangs
    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout + 1.0)
    return answer[0] if answer else f"{url.hostname} did not answer within {timeout + 1.0:g} s"


def pick_device(device: str | None = None) -> str:
    """The device asked for, checked; else cuda when a GPU is usable, else cpu (no torch import without a GPU)."""
    if device:
        return check_device(device)
    if not any(Path("/dev").glob("nvidia*")) and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def available_devices() -> list[str]:
    """The devices this torch build can run on here: cpu, cuda:0.. and mps."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    return ["cpu", *(f"cuda:{i}" for i in range(gpus)), *(["mps"] if mps else [])]


def check_device(device: str) -> str:
    """``device`` when this machine can run on it; else a one-line error naming the devices it has."""
    import torch

    available = available_devices()
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise SelectKDError(f"unknown --device {device!r}; devices here: {', '.join(available)}") from None
    usable = {torch.device(d).type for d in available}
    if dev.type in usable and (dev.type != "cuda" or dev.index is None or f"cuda:{dev.index}" in available):
        return device
    if dev.type not in ("cuda", "mps"):
        why = "selectkd runs on cpu, cuda or mps"
    elif dev.type == "cuda" and not torch.backends.cuda.is_built():
        why = "this torch build has no CUDA"
    else:
        why = f"this machine has no {dev}"
    raise SelectKDError(f"--device {device} is not usable ({why}); devices here: {', '.join(available)}")


def _autocast(device: str):
    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def numeric_mode(device: str) -> str:
    return "bf16-autocast" if device.startswith("cuda") else "float32"


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool) -> Iterator:
    """A rich progress bar in rows, with rows/s; a no-op when disabled."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    from rich.text import Text

    class RowsPerSecond(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:,.0f} rows/s" if task.speed else "- rows/s")

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RowsPerSecond(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy, all cores together (Linux /proc/stat: every state but
    idle and iowait). Benchmarks take the difference over a run, less their own CPU, as the work of others."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def cpuinfo(*keys: str) -> dict[str, str]:
    """The first value of each of ``keys`` in /proc/cpuinfo (Linux; empty elsewhere)."""
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in keys:
                    found.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return found


def cpu_model() -> str:
    """The CPU's model name (Linux), for reports: numbers mean little without the machine."""
    return cpuinfo("model name").get("model name", "?")


def machine() -> str:
    """One line saying what ran a measurement: cores, CPU, GPU, torch and Python."""
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores ({cpu_model()}), {gpu}, torch {torch.__version__}, Python {platform.python_version()}"
