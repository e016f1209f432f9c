"""GPUs and counted resources: what a node declares, what a job may ask, who gets which device, and in what order."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import psutil
import pytest

from procq.actors.dispatch.scheduler import Scheduler
from procq.actors.job import Job, Usage
from procq.actors.resources.allocator import Allocator, Assignment, Reservations, first_startable
from procq.actors.resources.node import Gpu, Node, parse_counted, parse_gpus
from procq.actors.resources.waitlist import Waitlist
from procq.actors.supervise.sampler import ProcessTree
from procq.server.flags import parse_args
from tests.helpers import py


def _node(gpus: int = 2, **counted: int) -> Node:
    return Node(tuple(Gpu(str(i)) for i in range(gpus)), "nvidia", tuple(sorted(counted.items())))


# --- declaring what a node has ------------------------------------------------------------------------


def test_gpus_flag_takes_auto_none_or_device_ids_with_an_optional_vendor() -> None:
    assert parse_gpus("auto") is None
    assert parse_gpus("none") == ("nvidia", ())
    assert parse_gpus("0,1,3") == ("nvidia", ("0", "1", "3"))
    assert parse_gpus("amd:0, 1") == ("amd", ("0", "1"))
    assert parse_gpus("GPU-8932f937-d72c,GPU-1a2b") == ("nvidia", ("GPU-8932f937-d72c", "GPU-1a2b"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [("0,0", "named twice"), ("intel:0", "vendor"), ("0,,1", "device ids"), ("0;1", "device ids")],
)
def test_a_bad_gpus_flag_says_what_is_expected(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_gpus(spec)


def test_resource_flags_are_name_count_pairs_repeated_or_comma_separated() -> None:
    assert parse_counted(["license=2", "scratch_gib=500,tape=1"]) == (("license", 2), ("scratch_gib", 500), ("tape", 1))
    for bad in (["license"], ["license=0"], ["License=1"], ["license=x"], ["gpus=2"], ["a=1", "a=2"]):
        with pytest.raises(ValueError, match="--resource"):
            parse_counted(bad)


def test_gpus_and_resources_come_from_flags_variables_or_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROCQ_GPUS", raising=False)
    monkeypatch.delenv("PROCQ_RESOURCES", raising=False)
    defaults = parse_args([])
    assert (defaults.gpus, defaults.resources) == (("nvidia", ()), ())
    args = parse_args(["--gpus", "0,1", "--resource", "license=2", "--resource", "disk=1"])
    assert (args.gpus, args.resources) == (("nvidia", ("0", "1")), (("disk", 1), ("license", 2)))
    config = tmp_path / "procq.toml"
    config.write_text('gpus = "auto"\nresources = "license=3,disk=2"\n')
    args = parse_args(["--config", str(config)])
    assert (args.gpus, args.resources) == (None, (("disk", 2), ("license", 3)))
    monkeypatch.setenv("PROCQ_GPUS", "amd:1")
    monkeypatch.setenv("PROCQ_RESOURCES", "license=1")
    args = parse_args(["--config", str(config)])
    assert (args.gpus, args.resources) == (("amd", ("1",)), (("license", 1),))


def test_a_bad_gpus_flag_stops_the_server_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        parse_args(["--gpus", "0,0"])
    assert stopped.value.code == 2
    assert "a device is named twice" in capsys.readouterr().err


# --- what a job may ask -------------------------------------------------------------------------------


def test_requires_is_normalised_to_the_units_asked_for() -> None:
    node = _node(2, license=1)
    assert node.check({"license": 1, "gpus": 2}) == {"gpus": 2, "license": 1}
    assert node.check({"gpus": 0}) == {}
    assert node.check(None) == {}


@pytest.mark.parametrize(
    ("requires", "message"),
    [
        (
            {"gpus": 3},
            "requires.gpus is 3, more than this node has in all, so the job could never start; "
            "it has 2 GPUs (0, 1), license=1",
        ),
        ({"license": 2}, "requires.license is 2, more than this node has"),
        ({"tape": 1}, "requires.tape: this node has no resource named 'tape'; it has 2 GPUs (0, 1), license=1"),
        ({"gpus": -1}, "requires.gpus must be a whole number"),
        ({"gpus": True}, "requires.gpus must be a whole number"),
        ({"gpus": 1.5}, "requires.gpus must be a whole number"),
        ([1], "requires must be an object"),
    ],
)
def test_a_request_the_node_can_never_satisfy_says_what_the_node_has(requires: object, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        _node(2, license=1).check(requires)
    assert message in str(refused.value)


def test_asking_for_gpus_on_a_node_without_any_says_so() -> None:
    with pytest.raises(ValueError, match="this node has no GPUs; it has no GPUs, license=1"):
        Node(counted=(("license", 1),)).check({"gpus": 1})


# --- the child's environment --------------------------------------------------------------------------


def test_nvidia_children_see_exactly_their_devices_in_pci_order() -> None:
    assert _node(4).visible_devices(["1", "3"]) == {
        "CUDA_VISIBLE_DEVICES": "1,3",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "NVIDIA_VISIBLE_DEVICES": "1,3",
    }


def test_a_job_given_no_gpu_on_a_gpu_node_sees_none() -> None:
    env = _node(2).visible_devices([])
    assert (env["CUDA_VISIBLE_DEVICES"], env["NVIDIA_VISIBLE_DEVICES"]) == ("", "none")


def test_amd_children_get_hip_visible_devices() -> None:
    node = Node((Gpu("0"), Gpu("1")), "amd")
    assert node.visible_devices(["1"]) == {"HIP_VISIBLE_DEVICES": "1", "CUDA_VISIBLE_DEVICES": "1"}


def test_a_node_without_gpus_leaves_the_environment_alone() -> None:
    assert Node(counted=(("license", 1),)).visible_devices([]) == {}


# --- handing out ----------------------------------------------------------------------------------------


def test_a_two_gpu_job_gets_two_distinct_devices() -> None:
    allocator = Allocator(_node(4))
    first = allocator.take("a", {"gpus": 1})
    second = allocator.take("b", {"gpus": 2})
    assert first is not None and second is not None
    assert len(set(second.gpus)) == 2 and not set(first.gpus) & set(second.gpus)
    assert second.to_dict() == {"gpus": list(second.gpus)}


def test_a_request_that_does_not_fit_takes_nothing() -> None:
    allocator = Allocator(_node(2, license=1))
    assert allocator.take("a", {"gpus": 1, "license": 1}) is not None
    assert allocator.take("b", {"gpus": 1, "license": 1}) is None
    assert allocator.free() == {"gpus": 1, "license": 0}


def test_released_devices_go_back_and_the_lowest_free_ids_are_given_first() -> None:
    allocator = Allocator(_node(3))
    assert allocator.take("a", {"gpus": 2}).gpus == ("0", "1")
    assert allocator.take("b", {"gpus": 1}).gpus == ("2",)
    allocator.release("a")
    allocator.release("a")  # twice is harmless
    assert allocator.take("c", {"gpus": 1}).gpus == ("0",)
    assert allocator.view()["gpus"][0]["job_id"] == "c"


def test_the_allocator_never_oversubscribes_under_random_takes_and_releases() -> None:
    node = _node(4, license=3, disk=2)
    allocator = Allocator(node)
    rng = random.Random(16)
    holding: dict[str, Assignment] = {}
    for step in range(5000):
        if holding and rng.random() < 0.45:
            job_id = rng.choice(sorted(holding))
            assert allocator.release(job_id) == holding.pop(job_id)
        else:
            requires = {name: rng.randint(0, 2) for name in ("gpus", "license", "disk")}
            requires = {name: units for name, units in requires.items() if units}
            before = allocator.free()
            got = allocator.take(f"job{step}", requires)
            fits = all(before.get(name, 0) >= units for name, units in requires.items())
            assert (got is not None) == fits
            if got is not None:
                assert got.units() == requires and len(set(got.gpus)) == len(got.gpus)
                holding[f"job{step}"] = got
        gpus_held = [gpu for held in holding.values() for gpu in held.gpus]
        assert len(gpus_held) == len(set(gpus_held)) <= 4
        for name, total in node.counted:
            in_use = sum(dict(held.counted).get(name, 0) for held in holding.values())
            assert in_use + allocator.free()[name] == total
        assert len(gpus_held) + allocator.free()["gpus"] == 4


def test_an_assignment_can_be_held_again_after_a_restart_unless_taken() -> None:
    allocator = Allocator(_node(2, license=1))
    assert allocator.hold("a", Assignment.from_dict({"gpus": ["1"], "license": 1})) is None
    assert allocator.take("b", {"gpus": 1}).gpus == ("0",)
    assert "GPU 1" in (allocator.hold("c", Assignment(("1",))) or "")
    assert "GPU 7" in (allocator.hold("d", Assignment(("7",))) or "")  # the node no longer has it
    assert allocator.free() == {"gpus": 0, "license": 0}


def test_an_assigned_field_that_is_not_one_is_refused() -> None:
    for bad in ({"gpus": "0"}, {"license": 0}, {"license": "1"}):
        with pytest.raises(ValueError):
            Assignment.from_dict(bad)


# --- in what order: reservation at the front -------------------------------------------------------------


def test_a_job_behind_a_waiting_one_may_not_take_what_the_front_job_waits_for() -> None:
    # one GPU free; the front job wants two: the 1-GPU job behind it waits, the CPU-licence job does not
    waiting = [("big", {"gpus": 2}), ("small", {"gpus": 1}), ("licensed", {"license": 1})]
    assert first_startable(waiting, {"gpus": 1, "license": 1}) == "licensed"
    assert first_startable(waiting[:2], {"gpus": 1, "license": 1}) is None
    assert first_startable(waiting, {"gpus": 2, "license": 0}) == "big"


def test_a_front_job_sets_aside_only_what_it_needs() -> None:
    reservations = Reservations({"gpus": 3, "license": 1})
    assert not reservations.admit({"gpus": 2, "license": 2})  # keeps 2 GPUs and the licence
    assert reservations.admit({"gpus": 1})  # the third GPU is nobody's
    assert reservations.done


def _simulate(reserve: bool, steps: int = 60) -> int | None:
    """Two GPUs. A 2-GPU job waits at the front from the start; a 1-GPU job arrives every step, and
    each runs 2 steps, staggered so that one GPU always frees while the other is busy. Returns the
    step at which the 2-GPU job started, or None."""
    allocator = Allocator(_node(2))
    allocator.take("warm-a", {"gpus": 1})
    ends = {"warm-a": 1}  # staggered: one GPU frees each step
    waiting: list[tuple[str, dict[str, int]]] = [("big", {"gpus": 2})]
    for step in range(steps):
        for job_id, end in list(ends.items()):
            if end == step:
                allocator.release(job_id)
                del ends[job_id]
        waiting.append((f"small{step}", {"gpus": 1}))
        while True:
            if reserve:
                chosen = first_startable(waiting, allocator.free())
            else:  # greedy: whatever fits first
                chosen = next((job_id for job_id, req in waiting if allocator.fits(req)), None)
            if chosen is None:
                break
            if chosen == "big":
                return step
            allocator.take(chosen, dict(waiting)[chosen])
            waiting = [entry for entry in waiting if entry[0] != chosen]
            ends[chosen] = step + 2
    return None


def test_a_stream_of_one_gpu_jobs_does_not_starve_a_two_gpu_job_at_the_front() -> None:
    assert _simulate(reserve=False) is None  # without the rule it would never run
    started = _simulate(reserve=True)
    assert started is not None and started <= 3


# --- the waiting list the Scheduler keeps --------------------------------------------------------------


def test_the_waitlist_takes_jobs_in_key_order_across_queues_and_skips_queues_that_may_not_start() -> None:
    waitlist = Waitlist()
    waitlist.add("train", 5.0, "t-late", {"gpus": 1})
    waitlist.add("infer", 1.0, "i-early", {"gpus": 1})
    waitlist.add("train", 2.0, "t-early", {"gpus": 1})
    assert waitlist.pick(lambda queue: True, {"gpus": 1}) == (1.0, "i-early", "infer")
    assert waitlist.pick(lambda queue: queue == "train", {"gpus": 1}) == (2.0, "t-early", "train")
    waitlist.discard("t-early")
    waitlist.discard("t-early")
    assert waitlist.pick(lambda queue: queue == "train", {"gpus": 1}) == (5.0, "t-late", "train")
    assert waitlist.pick(lambda queue: True, {"gpus": 0}) is None
    assert len(waitlist) == 2 and "i-early" in waitlist


def test_a_waiting_big_job_in_one_queue_holds_back_small_ones_in_another() -> None:
    waitlist = Waitlist()
    waitlist.add("train", 1.0, "big", {"gpus": 2})
    waitlist.add("infer", 2.0, "small", {"gpus": 1})
    assert waitlist.pick(lambda queue: True, {"gpus": 1}) is None
    # a paused (or full) queue's job cannot start, so it holds nothing back
    assert waitlist.pick(lambda queue: queue != "train", {"gpus": 1}) == (2.0, "small", "infer")


# --- GPU memory in usage sampling ------------------------------------------------------------------------


def test_gpu_memory_is_summed_over_the_jobs_process_tree_only(tmp_path: Path) -> None:
    child = subprocess.Popen(py("import time; time.sleep(30)"))
    try:
        created = psutil.Process(child.pid).create_time()
        outputs = (tmp_path / "out", tmp_path / "err")
        # what NVML reports: our child's memory, and another process's that is not the job's
        reading = {child.pid: 300 << 20, os.getpid(): 999 << 20}
        assert ProcessTree(child.pid, created, lambda: reading).measure(outputs).gpu_memory_bytes == 300 << 20
        assert ProcessTree(child.pid, created, lambda: None).measure(outputs).gpu_memory_bytes is None
        assert ProcessTree(child.pid, created).measure(outputs).gpu_memory_bytes is None
    finally:
        child.kill()
        child.wait()


def test_peak_gpu_memory_keeps_the_largest_sample_and_stays_null_when_never_measured() -> None:
    assert Usage(1, 1, 1, None).merge(Usage(1, 1, 1, 5)).merge(Usage(1, 1, 1, 3)).peak_gpu_memory_bytes == 5
    assert Usage(1, 1, 1).merge(Usage(2, 2, 2)).peak_gpu_memory_bytes is None


# --- the Scheduler with GPUs ----------------------------------------------------------------------------


def _queued(job_id: str, queue: str = "default", **requires: int) -> Job:
    return Job(id=job_id, args=("x",), queue=queue, enqueued_at="2026-01-01T00:00:00.000000Z", requires=requires)


def test_a_queued_job_asking_more_than_a_smaller_node_has_after_a_restart_fails_instead_of_blocking() -> None:
    plan = Scheduler(8, 60.0, (), _node(2))
    reason = plan.add(_queued("a" * 32, gpus=4), 0.0, lambda job_id: None)
    assert reason is not None and "requires.gpus is 4" in reason and "the job was not run" in reason
    assert plan.add(_queued("b" * 32, gpus=1), 0.0, lambda job_id: None) is None
    assert plan.next_to_start() == "b" * 32 and plan.assignment("b" * 32).gpus == ("0",)


def test_a_paused_queues_gpu_job_holds_nothing_back_and_ending_a_run_frees_its_gpus() -> None:
    plan = Scheduler(8, 60.0, (), _node(2))
    status = lambda job_id: None  # noqa: E731
    plan.add(_queued("1" * 32, gpus=1), 0.0, status)
    assert plan.next_to_start() == "1" * 32
    plan.add(_queued("2" * 32, "train", gpus=2), 0.0, status)  # ahead of the next one, in a queue we pause
    plan.add(_queued("3" * 32, gpus=1), 1.0, status)
    assert plan.next_to_start() is None  # the 2-GPU job keeps the free GPU
    plan.configure("train", paused=True)
    assert plan.next_to_start() == "3" * 32
    assert plan.resources()["gpus"][1]["job_id"] == "3" * 32
    plan.ended("1" * 32)
    plan.ended("3" * 32)
    plan.configure("train", paused=False)
    assert plan.next_to_start() == "2" * 32 and plan.assignment("2" * 32).gpus == ("0", "1")
