"""Independent jobs run in worker processes, their results in the jobs' order."""

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor


def in_processes(function: Callable, jobs: list, workers: int, jobs_per_process: int = 1
                 ) -> Iterator:
    """function(job) of each job, in order: in up to `workers` processes, each given
    `jobs_per_process` jobs at least (a process costs seconds to start: it imports what the
    function needs), or here where that leaves one. The processes are spawned, not forked:
    a fork of a process whose torch threads are running can hang."""
    processes = min(workers, len(jobs) // jobs_per_process)
    if processes <= 1:
        yield from map(function, jobs)
        return
    spawn = multiprocessing.get_context("spawn")
    chunk = max(1, len(jobs) // (4 * processes))  # fewer round trips, still balanced
    with ProcessPoolExecutor(processes, mp_context=spawn) as pool:
        yield from pool.map(function, jobs, chunksize=chunk)
