"""Submitting `generate` to a Ray cluster through the Jobs API: the same command, minus
--address, runs as a job whose driver connects with ray.init() (Ray sets RAY_ADDRESS)."""

import shlex
import time
from pathlib import Path

import ray.exceptions

from pipeline.errors import ClusterAuthError

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
REPOSITORY = Path(__file__).resolve().parents[1]


def job_arguments(argv: list[str]) -> list[str]:
    """The command line without --address (and its value)."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--address":
            skip = True
        elif not item.startswith("--address="):
            kept.append(item)
    return kept


def job_entrypoint(argv: list[str]) -> str:
    """The job's shell command: each argument quoted, so a value with a space, a quote or a
    `;` reaches the job as one argument and never as shell syntax."""
    return shlex.join(["python", "-m", "pipeline.cli", *job_arguments(argv)])


def runtime_environment() -> dict:
    """This checkout as the job's working directory; the cluster's image or set-up commands
    install the dependencies (cluster/README.md)."""
    return {"working_dir": str(REPOSITORY),
            "excludes": [".venv", ".git", "out", ".bench", "*.egg-info", "docs"]}


# Ray >= 2.52 guards the dashboard with a token when the cluster sets RAY_AUTH_MODE=token
# (local clusters by default from 2.59)
AUTHENTICATION_ERRORS = getattr(ray.exceptions, "AuthenticationError", ())


def submit_to_cluster(address: str, argv: list[str]) -> int:
    """Submit, print where to watch, follow the job to its end; exit 0 only on success."""
    try:
        return _submit_and_follow(address, argv)
    except AUTHENTICATION_ERRORS:
        raise ClusterAuthError.for_address(address) from None


def _submit_and_follow(address: str, argv: list[str]) -> int:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    job_id = client.submit_job(entrypoint=job_entrypoint(argv),
                               runtime_env=runtime_environment())
    print(f"submitted job {job_id} to {address}; watch it in the dashboard there, or with "
          f"`ray job logs --address {address} --follow {job_id}`", flush=True)
    while (status := str(client.get_job_status(job_id)).split(".")[-1]) not in TERMINAL:
        time.sleep(5)
    print(client.get_job_logs(job_id))
    print(f"job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1
