"""The Dispatcher's index answers pages exactly like a full scan would, as jobs change and go."""

from __future__ import annotations

import dataclasses
import random

from procq.actors.dispatch.index import JobIndex
from procq.actors.job import IdGenerator, Job, Status


def scan(jobs: dict[str, Job], statuses, tag, before, limit) -> list[str]:
    ids = sorted(jobs, reverse=True)
    ids = [i for i in ids if (before is None or i < before) and (statuses is None or jobs[i].status in statuses)]
    return [i for i in ids if tag is None or tag in jobs[i].tags][:limit]


def test_pages_match_a_full_scan_through_changes_and_removals() -> None:
    rng = random.Random(4)
    new_id = IdGenerator()
    jobs: dict[str, Job] = {}
    index = JobIndex()
    for _ in range(300):
        job = Job(id=new_id(), args=("x",), tags=tuple(rng.sample(["a", "b", "c"], rng.randint(0, 2))))
        jobs[job.id] = job
        index.put(None, job)
    for job_id in rng.sample(sorted(jobs), 200):
        before = jobs[job_id]
        jobs[job_id] = after = dataclasses.replace(before, status=rng.choice(list(Status)))
        index.put(before, after)
    for job_id in rng.sample(sorted(jobs), 40):
        index.remove(jobs.pop(job_id))
    rebuilt = JobIndex(jobs.values())  # what a restart builds from disk
    cases = [(None, None), (frozenset({Status.COMPLETED}), None), (frozenset({Status.FAILED, Status.IN_QUEUE}), None)]
    cases += [(None, "a"), (frozenset({Status.CANCELED, Status.COMPLETED}), "b"), (None, "missing")]
    for statuses, tag in cases:
        for built in (index, rebuilt):
            before, seen = None, []
            while True:
                ids, more = built.page(statuses, tag, before, 7, jobs)
                assert ids == scan(jobs, statuses, tag, before, 7)
                seen += ids
                if not more:
                    break
                before = ids[-1]
            assert seen == scan(jobs, statuses, tag, None, 10_000)
    assert sum(index.count(status) for status in Status) == len(jobs) == 260
