"""What a node has (GPUs of one vendor, counted resources), how flags declare it, and what a job may ask of it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GPUS = "gpus"  # the name a job's `requires` uses for GPUs; every other name is a counted resource
VENDORS = ("nvidia", "amd")
MAX_COUNT = 1_000_000  # more units than any real node has: a bound, so counts stay small integers

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_DEVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # an index ("3") or a UUID ("GPU-8932f937-...")


@dataclass(frozen=True, slots=True)
class Gpu:
    """One device, named the way the vendor's *_VISIBLE_DEVICES variable takes it."""

    id: str
    name: str = ""  # the model, when detected
    uuid: str | None = None
    memory_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "uuid": self.uuid, "memory_bytes": self.memory_bytes}


@dataclass(frozen=True, slots=True)
class Node:
    """What this server can hand to jobs. GPUs are distinct devices, given by id; counted resources
    (a licence, a scratch disk, memory in GiB) are plain numbers of interchangeable units."""

    gpus: tuple[Gpu, ...] = ()
    vendor: str = "nvidia"
    counted: tuple[tuple[str, int], ...] = ()  # (name, units), sorted by name

    @property
    def manages_gpus(self) -> bool:
        return bool(self.gpus)

    def totals(self) -> dict[str, int]:
        """Units of everything a job may require: `gpus` (when the node has any) and each counted resource."""
        totals = {GPUS: len(self.gpus)} if self.gpus else {}
        totals.update(self.counted)
        return totals

    def describe(self) -> str:
        """Says what the node has, for error messages: "2 GPUs (0, 1), license=1"."""
        parts = []
        if self.gpus:
            noun = "GPU" if len(self.gpus) == 1 else "GPUs"
            parts.append(f"{len(self.gpus)} {noun} ({', '.join(gpu.id for gpu in self.gpus)})")
        else:
            parts.append("no GPUs")
        parts += [f"{name}={units}" for name, units in self.counted] or ["no counted resources"]
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "vendor": self.vendor if self.gpus else None,
            "gpus": [gpu.to_dict() for gpu in self.gpus],
            "resources": dict(self.counted),
        }

    def check(self, requires: object) -> dict[str, int]:
        """A job's `requires` as {name: units}, zeros left out, sorted. Raises ValueError saying what
        is wrong and what the node has, for a value that is not such an object or that asks for more
        than this node has in all (it could never start here)."""
        if requires is None:
            return {}
        if not isinstance(requires, Mapping):
            raise ValueError('requires must be an object of resource names to whole numbers, like {"gpus": 1}')
        totals = self.totals()
        wanted = {}
        for name, units in sorted(requires.items()):
            if not isinstance(units, int) or isinstance(units, bool) or not 0 <= units <= MAX_COUNT:
                raise ValueError(f"requires.{name} must be a whole number from 0 to {MAX_COUNT}, not {units!r}")
            if units == 0:
                continue
            if name not in totals:
                what = "GPUs" if name == GPUS else f"resource named {name!r}"
                raise ValueError(f"requires.{name}: this node has no {what}; it has {self.describe()}")
            if units > totals[name]:
                raise ValueError(
                    f"requires.{name} is {units}, more than this node has in all, so the job could never start; "
                    f"it has {self.describe()}"
                )
            wanted[name] = units
        return wanted

    def visible_devices(self, gpu_ids: Sequence[str]) -> dict[str, str]:
        """The variables that show a child exactly `gpu_ids` (none: an empty list hides every GPU).
        Nothing when the node manages no GPUs, so a server without --gpus leaves jobs' environments alone."""
        if not self.gpus:
            return {}
        ids = ",".join(gpu_ids)
        if self.vendor == "amd":
            # HIP reads HIP_VISIBLE_DEVICES first and CUDA_VISIBLE_DEVICES otherwise: both say the same.
            # ROCR_VISIBLE_DEVICES is left alone: ROCr applies it before HIP, renumbering what HIP sees.
            return {"HIP_VISIBLE_DEVICES": ids, "CUDA_VISIBLE_DEVICES": ids}
        return {
            "CUDA_VISIBLE_DEVICES": ids,
            # nvidia-smi numbers GPUs by PCI bus; CUDA's default order is fastest first: make them agree
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            # for a job that starts a container: the NVIDIA runtime passes these devices in ("none": no GPU)
            "NVIDIA_VISIBLE_DEVICES": ids or "none",
        }


def parse_gpus(text: str) -> tuple[str, tuple[str, ...]] | None:
    """`--gpus`: None for "auto" (detect when the server starts), else (vendor, device ids).
    "none" or "" gives no devices; "0,1,3" NVIDIA devices; "amd:0,1" AMD ones. Raises ValueError."""
    spec = text.strip()
    if spec.lower() == "auto":
        return None
    if spec.lower() in ("none", ""):
        return ("nvidia", ())
    vendor, colon, rest = spec.partition(":")
    if not colon:
        vendor, rest = "nvidia", spec
    vendor = vendor.strip().lower()
    if vendor not in VENDORS:
        raise ValueError(f"--gpus {text!r}: the vendor before ':' must be one of {', '.join(VENDORS)}")
    ids = tuple(part.strip() for part in rest.split(","))
    bad = [device for device in ids if not _DEVICE.fullmatch(device)]
    if bad or not ids:
        raise ValueError(
            f"--gpus {text!r}: expected auto, none, or device ids separated by commas (an index like 0 "
            f"or a UUID like GPU-8932f937), optionally after amd: or nvidia:; not {bad[0] if bad else ''!r}"
        )
    if len(set(ids)) != len(ids):
        raise ValueError(f"--gpus {text!r}: a device is named twice")
    return (vendor, ids)


def parse_counted(specs: Iterable[str]) -> tuple[tuple[str, int], ...]:
    """`--resource NAME=COUNT` values (each may hold several, separated by commas), sorted by name.
    Raises ValueError naming the bad one."""
    counted: dict[str, int] = {}
    for spec in (part.strip() for value in specs for part in value.split(",") if part.strip()):
        name, _, units = (piece.strip() for piece in spec.partition("="))
        if not _NAME.fullmatch(name) or not re.fullmatch(r"[0-9]{1,7}", units) or not 1 <= int(units) <= MAX_COUNT:
            raise ValueError(
                f"--resource {spec!r}: expected NAME=COUNT, NAME of 1-32 of a-z 0-9 _ - starting with a letter, "
                f"COUNT from 1 to {MAX_COUNT}"
            )
        if name == GPUS:
            raise ValueError("--resource gpus=...: GPUs are declared with --gpus, as devices, not as a count")
        if name in counted:
            raise ValueError(f"--resource {name}: declared twice")
        counted[name] = int(units)
    return tuple(sorted(counted.items()))
