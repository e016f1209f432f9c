"""Who holds which GPUs and units now, and the rule deciding which waiting job may take what is free."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from procq.actors.resources.node import GPUS, Node

LOOKAHEAD = 100  # waiting jobs with requires looked at per pass; deeper ones wait their turn at the front


@dataclass(frozen=True, slots=True)
class Assignment:
    """What one run was given: distinct GPU ids, and units of counted resources."""

    gpus: tuple[str, ...] = ()
    counted: tuple[tuple[str, int], ...] = ()  # (name, units), sorted by name

    def to_dict(self) -> dict[str, Any]:
        """The job's `assigned` field: {"gpus": ["1", "3"], "license": 1}."""
        data: dict[str, Any] = {GPUS: list(self.gpus)} if self.gpus else {}
        data.update(self.counted)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Assignment:
        """Read back an `assigned` field (meta.json). Raises ValueError if it is not one."""
        gpus = data.get(GPUS, [])
        if not isinstance(gpus, list) or not all(isinstance(gpu, str) for gpu in gpus):
            raise ValueError(f"assigned.gpus must be a list of device ids, not {gpus!r}")
        counted = []
        for name, units in data.items():
            if name == GPUS:
                continue
            if not isinstance(units, int) or isinstance(units, bool) or units < 1:
                raise ValueError(f"assigned.{name} must be a positive whole number, not {units!r}")
            counted.append((name, units))
        return cls(tuple(gpus), tuple(sorted(counted)))

    def units(self) -> dict[str, int]:
        units = {GPUS: len(self.gpus)} if self.gpus else {}
        units.update(self.counted)
        return units


class Allocator:
    """The node's free GPUs and units, and which job holds the rest. A plain object: only its owner's
    thread touches it. It never hands out more than the node has: `take` gives nothing unless all
    of a request is free, and a GPU is held by one job at a time."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._rank = {gpu.id: index for index, gpu in enumerate(node.gpus)}
        self._free_gpus = [gpu.id for gpu in node.gpus]  # in the node's order: the lowest free ids go first
        self._free = dict(node.counted)
        self._held: dict[str, Assignment] = {}

    def free(self) -> dict[str, int]:
        """Free units of everything the node has: {"gpus": 1, "license": 0}."""
        free = {GPUS: len(self._free_gpus)} if self.node.gpus else {}
        free.update(self._free)
        return free

    def fits(self, requires: Mapping[str, int]) -> bool:
        free = self.free()
        return all(free.get(name, 0) >= units for name, units in requires.items())

    def take(self, job_id: str, requires: Mapping[str, int]) -> Assignment | None:
        """Give `job_id` what it requires, or nothing (None) if any of it is not free now."""
        if job_id in self._held:
            raise ValueError(f"job {job_id} already holds {self._held[job_id].to_dict()}")
        if not self.fits(requires):
            return None
        count = requires.get(GPUS, 0)
        gpus, self._free_gpus = tuple(self._free_gpus[:count]), self._free_gpus[count:]
        counted = tuple(sorted((name, units) for name, units in requires.items() if name != GPUS and units))
        for name, units in counted:
            self._free[name] -= units
        assignment = Assignment(gpus, counted)
        self._held[job_id] = assignment
        return assignment

    def hold(self, job_id: str, assignment: Assignment) -> str | None:
        """Give `job_id` exactly `assignment` again (a run that outlived a restart of the server).
        Returns why it cannot (the node changed, or another job holds part of it), taking nothing then."""
        if job_id in self._held:
            return f"job {job_id} already holds {self._held[job_id].to_dict()}"
        missing = [gpu for gpu in assignment.gpus if gpu not in self._free_gpus]
        short = [name for name, units in assignment.counted if self._free.get(name, 0) < units]
        if missing or short:
            taken = ", ".join([f"GPU {gpu}" for gpu in missing] + short)
            return f"{taken} not free on this node (it has {self.node.describe()})"
        self._free_gpus = [gpu for gpu in self._free_gpus if gpu not in assignment.gpus]
        for name, units in assignment.counted:
            self._free[name] -= units
        self._held[job_id] = assignment
        return None

    def release(self, job_id: str) -> Assignment | None:
        """Give back what `job_id` holds (nothing happens if it holds nothing, so releasing twice is safe)."""
        assignment = self._held.pop(job_id, None)
        if assignment is None:
            return None
        self._free_gpus = sorted([*self._free_gpus, *assignment.gpus], key=self._rank.__getitem__)
        for name, units in assignment.counted:
            self._free[name] += units
        return assignment

    def holding(self, job_id: str) -> Assignment | None:
        return self._held.get(job_id)

    def view(self) -> dict[str, Any]:
        """For GET /resources, the dashboard and /metrics: each GPU with the job on it, each counted
        resource's total, in use and free. A freshly built dict."""
        on_gpu = {gpu: job_id for job_id, held in self._held.items() for gpu in held.gpus}
        return {
            "vendor": self.node.vendor if self.node.gpus else None,
            "gpus": [
                {**gpu.to_dict(), "busy": gpu.id in on_gpu, "job_id": on_gpu.get(gpu.id)} for gpu in self.node.gpus
            ],
            "resources": {
                name: {"total": total, "in_use": total - self._free[name], "free": self._free[name]}
                for name, total in self.node.counted
            },
        }


class Reservations:
    """One pass over the waiting jobs that require something, best first (the order of their queues:
    priority with aging, then age). The rule that keeps a big job from starving:

    a job may start only with what is left after every waiting job ahead of it has set aside what
    it needs and cannot get yet.

    So a 2-GPU job at the front, with 1 GPU free, keeps that GPU: 1-GPU jobs behind it wait, and it
    starts as soon as a second GPU is released. Jobs that need only what nobody ahead waits for
    (another licence, or nothing at all) are not held back. A pass stops once nothing is left to set
    aside, or after LOOKAHEAD jobs."""

    def __init__(self, free: Mapping[str, int]) -> None:
        self._left = dict(free)
        self._looked = 0

    def admit(self, requires: Mapping[str, int]) -> bool:
        """True if the next job in order may start now (what it takes is then no longer left);
        else what it needs is set aside for it, as far as it is left, and False."""
        self._looked += 1
        left = self._left
        if all(left.get(name, 0) >= units for name, units in requires.items()):
            for name, units in requires.items():
                left[name] -= units
            return True
        for name, units in requires.items():
            if name in left:
                left[name] -= min(left[name], units)
        return False

    @property
    def done(self) -> bool:
        """Nothing is left for a job that requires anything, or the pass looked far enough."""
        return self._looked >= LOOKAHEAD or not any(self._left.values())


def first_startable(waiting: Iterable[tuple[str, Mapping[str, int]]], free: Mapping[str, int]) -> str | None:
    """The first of `waiting` ((job id, requires), best first) that may start now under the rule of
    Reservations, or None."""
    reservations = Reservations(free)
    for job_id, requires in waiting:
        if reservations.done:
            break
        if reservations.admit(requires):
            return job_id
    return None
