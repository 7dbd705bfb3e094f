"""Submitting `generate` to a Ray cluster through the Jobs API: the same command, minus
--address, runs as a job whose driver connects with ray.init() (Ray sets RAY_ADDRESS)."""

import asyncio
import fnmatch
import shlex
import subprocess
import sys
import time
from pathlib import Path

import ray.exceptions

from pipeline.errors import ClusterAuthError, ClusterUnreachableError
from pipeline.sources import EMBEDDED, EMBEDDED_PREFIX

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


def job_entrypoint(argv: list[str], anchored: list[str] = ()) -> str:
    """The job's shell command: each argument quoted, so a value with a space, a quote or a
    `;` reaches the job as one argument and never as shell syntax; `anchored` (cluster_paths)
    last, so that they are the values the job reads."""
    return shlex.join(["python", "-m", "pipeline.cli", *job_arguments(argv), *anchored])


def cluster_paths(out: str, sources: str, ensemble: str | None) -> list[str]:
    """The job runs in a temporary copy of this checkout (runtime_environment). --out given
    as a relative local path (or left at its default) would put the dataset there, gone with
    Ray's session: it is made absolute from here. --sources and an --ensemble file given as
    relative paths are named as the job finds them: inside the uploaded checkout relative to
    it, elsewhere absolute. Object-store URIs, `embedded` and shipped ensemble names stay as
    they are; absolute paths must exist on the cluster's nodes (a shared file system)."""
    anchored = ["--out", str(Path(out).absolute())] if _relative_local(out) else []
    local_sources = (_relative_local(sources) and sources != EMBEDDED
                     and not sources.startswith(EMBEDDED_PREFIX))
    local_ensemble = ensemble is not None and _relative_local(ensemble) and Path(
        ensemble).is_file()
    for option, path, local in (("--sources", sources, local_sources),
                                ("--ensemble", ensemble, local_ensemble)):
        if local and (found := _as_the_job_finds(path)) != path:
            anchored += [option, found]
    return anchored


def _relative_local(text: str) -> bool:
    return "://" not in text and not Path(text).is_absolute()


def _as_the_job_finds(path: str) -> str:
    """A local input path as the job sees it: relative to the uploaded checkout where the
    upload carries it, else absolute."""
    absolute = Path(path).resolve()
    try:
        inside = absolute.relative_to(REPOSITORY)
    except ValueError:
        return str(absolute)
    excluded = runtime_environment()["excludes"]
    if inside.parts and (any(fnmatch.fnmatch(inside.parts[0], pattern) for pattern in excluded)
                         or _ignored_by_git(inside)):
        return str(absolute)
    return inside.as_posix()


def _ignored_by_git(inside: Path) -> bool:
    """Whether the checkout's .gitignore leaves `inside` out: Ray's upload of a working_dir
    leaves such paths out too (build/, device-check/, ...). False where git cannot say."""
    try:
        checked = subprocess.run(["git", "-C", str(REPOSITORY), "check-ignore", "-q", "--",
                                  inside.as_posix()], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return checked.returncode == 0


def runtime_environment() -> dict:
    """This checkout as the job's working directory; the cluster's image or set-up commands
    install the dependencies (cluster/README.md)."""
    return {"working_dir": str(REPOSITORY),
            "excludes": [".venv", ".git", "out", ".bench", "*.egg-info", "docs"]}


# Ray >= 2.52 guards the dashboard with a token when the cluster sets RAY_AUTH_MODE=token
# (local clusters by default from 2.59)
AUTHENTICATION_ERRORS = getattr(ray.exceptions, "AuthenticationError", ())


def submit_to_cluster(address: str, argv: list[str], anchored: list[str] = ()) -> int:
    """Submit, print where to watch, follow the job to its end; exit 0 only on success."""
    for option, path in zip(anchored[::2], anchored[1::2], strict=True):
        print(f"note: {option} is {path} for the job (a relative path would name a place in "
              "the job's temporary copy of this checkout)", flush=True)
    try:
        return _submit_and_follow(address, argv, anchored)
    except AUTHENTICATION_ERRORS:
        raise ClusterAuthError.for_address(address) from None


def _client(address: str):
    """Ray's Jobs API client of the dashboard at `address`. What no running Ray dashboard
    answers (a refused port, a web server of another kind: its 404, an address without a
    scheme, read as a GCS address, that no GCS answers) is one error naming the address."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except (OSError, RuntimeError, ray.exceptions.RpcError) as error:
        raise ClusterUnreachableError(
            f"no Ray dashboard answers at --address {address} ({error}): give the address of "
            "a running Ray cluster's dashboard (http://127.0.0.1:8265 through `ray dashboard` "
            "or a port-forward to the head's port 8265)") from None


def _submit_and_follow(address: str, argv: list[str], anchored: list[str]) -> int:
    client = _client(address)
    job_id = client.submit_job(entrypoint=job_entrypoint(argv, anchored),
                               runtime_env=runtime_environment())
    try:  # (from the first word on: an interrupt as soon as the job is named stops following)
        print(f"submitted job {job_id} to {address}; watch it in the dashboard there, or with "
              f"`ray job logs --address {address} --follow {job_id}`", flush=True)
        status = _follow(client, job_id)
    except KeyboardInterrupt:  # what stops here is the following, not the job
        print(f"\nstopped following job {job_id}: it runs on in the cluster; `ray job stop "
              f"--address {address} {job_id}` stops it, `ray job logs --address {address} "
              f"--follow {job_id}` follows it again", file=sys.stderr)
        return 130
    message = client.get_job_info(job_id).message if status != "SUCCEEDED" else None
    # a job that failed before its command ran (its runtime environment, its supervisor)
    # says why only here: its logs are empty
    why = message.strip().splitlines()[0].rstrip(":") if message and message.strip() else ""
    print(f"job {job_id}: {status}" + (f" ({why})" if why else ""))
    return 0 if status == "SUCCEEDED" else 1


def _follow(client, job_id: str) -> str:
    """The job's output, printed as its driver writes it, until the job ends; its status.
    Where the log stream ends or breaks before the job does (a proxy that refuses WebSockets,
    an agent restarted), the job is polled to its end and the rest of its log printed then:
    every character once."""
    printed: list[str] = []
    try:
        asyncio.run(_print_logs(client, job_id, printed))
    except Exception as error:  # the stream only: the job itself is asked below
        print(f"\nnote: the job's output cannot be followed as it comes ({type(error).__name__}: "
              f"{error}); the rest is printed when the job ends", file=sys.stderr, flush=True)
    while (status := str(client.get_job_status(job_id)).split(".")[-1]) not in TERMINAL:
        time.sleep(5)
    shown = "".join(printed)
    rest = client.get_job_logs(job_id)[len(shown):]
    print(rest, end="")
    if (shown + rest) and not (shown + rest).endswith("\n"):
        print()  # (a progress bar's last update): the status line starts a line of its own
    return status


async def _print_logs(client, job_id: str, printed: list[str]) -> None:
    """The job's log as it comes, each chunk kept in `printed` too."""
    async for chunk in client.tail_job_logs(job_id):
        print(chunk, end="", flush=True)
        printed.append(chunk)
