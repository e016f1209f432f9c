"""`--gpus auto`: the GPUs this machine reports (NVIDIA's management library, else nvidia-smi, else rocm-smi),
and each process's GPU memory where the management library is installed (the procq[gpu] extra)."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from procq.actors.resources.node import Gpu, Node

log = logging.getLogger("procq.resources")

TIMEOUT_S = 10.0  # a hung driver must not hang the server's start
_SMI_LINE = re.compile(r"GPU (\d+): (.*?)(?: \(UUID: ([^)]+)\))?\s*")


def declared_node(gpus: tuple[str, tuple[str, ...]] | None, counted: tuple[tuple[str, int], ...]) -> Node:
    """The Node the flags declare: `gpus` as parse_gpus gives it (None: detect them now; blocks)."""
    if gpus is None:
        vendor, found = detect_gpus()
        log.info("--gpus auto found %s", ", ".join(f"{gpu.id} {gpu.name}".strip() for gpu in found) or "no GPU")
        return Node(found, vendor, counted)
    vendor, ids = gpus
    return Node(tuple(Gpu(device) for device in ids), vendor, counted)


def detect_gpus(
    use_nvml: bool = True, which: Callable[[str], str | None] = shutil.which
) -> tuple[str, tuple[Gpu, ...]]:
    """(vendor, devices) of this machine: NVIDIA through nvidia-ml-py when it is installed and a driver
    answers, else `nvidia-smi -L`, else AMD through `rocm-smi`, else none. Blocks up to TIMEOUT_S per
    tool; never raises (a broken driver means no GPUs, and a warning in the log)."""
    if use_nvml:
        gpus = _from_nvml()
        if gpus:
            return "nvidia", gpus
    for vendor, tool, argv, parse in (
        ("nvidia", "nvidia-smi", ["-L"], parse_nvidia_smi),
        ("amd", "rocm-smi", ["--showproductname", "--json"], parse_rocm_smi),
    ):
        path = which(tool)
        if path is None:
            continue
        try:
            gpus = parse(_run([path, *argv]))
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            log.warning("--gpus auto: %s failed, so it reports no GPUs: %s", tool, _why(exc))
            continue
        if gpus:
            return vendor, gpus
    return "nvidia", ()


def parse_nvidia_smi(text: str) -> tuple[Gpu, ...]:
    """`nvidia-smi -L` lines: "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-8932f937-...)". MIG instances,
    listed indented under their GPU, are not split out: the GPU is handed out whole."""
    gpus = []
    for line in text.splitlines():
        match = _SMI_LINE.fullmatch(line)
        if match:
            gpus.append(Gpu(match[1], match[2].strip(), match[3]))
    return tuple(gpus)


def parse_rocm_smi(text: str) -> tuple[Gpu, ...]:
    """`rocm-smi --showproductname --json`: {"card0": {"Card series": "...", ...}, ...}. Raises ValueError."""
    data = json.loads(text) if text.strip() else {}
    if not isinstance(data, dict):
        raise ValueError("rocm-smi did not print a JSON object")
    gpus = []
    for key, fields in data.items():
        match = re.fullmatch(r"card(\d+)", key)
        if match:
            fields = fields if isinstance(fields, dict) else {}
            name = next((str(v) for k, v in fields.items() if k.lower() in ("card series", "card model")), "")
            gpus.append(Gpu(match[1], name))
    return tuple(sorted(gpus, key=lambda gpu: int(gpu.id)))


def gpu_memory_by_pid() -> dict[int, int] | None:
    """Bytes of GPU memory each process holds, summed over the NVIDIA GPUs; None without the management
    library (or a driver). Pids are the host's: inside a container they may not match the job's."""
    nvml = _nvml()
    if nvml is None:
        return None
    used: dict[int, int] = {}
    try:
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
                for process in getattr(nvml, getter)(handle):
                    used[process.pid] = used.get(process.pid, 0) + (process.usedGpuMemory or 0)
    except Exception as exc:  # the library raises its own NVMLError kinds; usage is a nicety
        log.debug("GPU memory could not be read: %r", exc)
        return None
    return used


def _from_nvml() -> tuple[Gpu, ...]:
    nvml = _nvml()
    if nvml is None:
        return ()
    try:
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle).total
            gpus.append(
                Gpu(str(index), _text(nvml.nvmlDeviceGetName(handle)), _text(nvml.nvmlDeviceGetUUID(handle)), memory)
            )
        return tuple(gpus)
    except Exception as exc:
        log.warning("--gpus auto: NVIDIA's management library failed (%r); trying nvidia-smi", exc)
        return ()


_nvml_lock = threading.Lock()
_nvml_state: dict[str, Any] = {}  # "module": the initialised pynvml, or None once it failed


def _nvml() -> ModuleType | None:
    """pynvml (from nvidia-ml-py), initialised once per process; None if it is missing or no driver answers."""
    with _nvml_lock:
        if "module" not in _nvml_state:
            try:
                import pynvml  # optional: pip install 'procq[gpu]'

                pynvml.nvmlInit()
                _nvml_state["module"] = pynvml
            except Exception as exc:  # ImportError, or NVMLError when there is no driver
                log.debug("NVIDIA's management library is not available: %r", exc)
                _nvml_state["module"] = None
        return _nvml_state["module"]


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT_S, check=False)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip() or done.stdout.decode(errors="replace").strip()
        raise ValueError(f"it exited with code {done.returncode}: {message[:300]}")
    return done.stdout.decode(errors="replace")


def _why(exc: BaseException) -> str:
    if isinstance(exc, subprocess.TimeoutExpired):
        return f"no answer in {TIMEOUT_S:g} s"
    return str(exc) or repr(exc)


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
