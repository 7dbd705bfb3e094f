"""Independent jobs run in worker processes, their results in the jobs' order."""

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor


def in_processes(function: Callable, jobs: list, processes: int,
                 initializer: Callable[[], None] | None = None) -> Iterator:
    """function(job) of each job, in order: in up to `processes` processes (no more than
    jobs), each begun with `initializer()`, or here where that leaves one (no initializer
    then). A process costs about 2 s to start (it imports what the function needs: torch,
    through webdataset); they are spawned, not forked: a fork of a process whose torch threads
    are running can hang."""
    processes = min(processes, len(jobs))
    if processes <= 1:
        yield from map(function, jobs)
        return
    spawn = multiprocessing.get_context("spawn")
    chunk = max(1, len(jobs) // (4 * processes))  # fewer round trips, still balanced
    with ProcessPoolExecutor(processes, mp_context=spawn, initializer=initializer) as pool:
        yield from pool.map(function, jobs, chunksize=chunk)
