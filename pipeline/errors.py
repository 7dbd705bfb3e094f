"""Typed errors of a generation run (bad input inside a run is recorded, not raised)."""


class PipelineError(RuntimeError):
    """A run cannot start or finish; the message says why and what to do."""


class PlanMismatchError(PipelineError):
    """The output directory holds a different plan; resuming would mix two datasets."""


class ForeignOutputError(PipelineError):
    """The output directory holds files of a dataset generate did not write (no plan.json)."""


class OutputPathError(PipelineError):
    """OUT names a local folder whose shards plain webdataset readers could not open."""


class UnreachableStorageError(PipelineError):
    """SOURCES or OUT cannot be reached from a worker node."""


class OutputFullError(PipelineError):
    """The output cannot take more writes (no space, quota, read-only, file too large): the
    run stops at the first such failure instead of making every other shard to fail it."""


class ShardsFailedError(PipelineError):
    """Some shards failed twice (their attempts and the final sweep)."""


class ClusterAuthError(PipelineError):
    """The cluster refused this client: Ray token authentication, and no token sent."""

    @classmethod
    def for_address(cls, address: str) -> "ClusterAuthError":
        return cls(f"{address} requires Ray's authentication token: export RAY_AUTH_MODE=token "
                   "and RAY_AUTH_TOKEN=<the cluster's token> (or save it in ~/.ray/auth_token) "
                   "and run again")


class ClusterUnreachableError(PipelineError):
    """The Ray cluster named (--address, or RAY_ADDRESS) does not answer."""


class LabelersUnavailableError(PipelineError):
    """The labeler actors could not start (resources the cluster does not have, a crash)."""


class UnfinishedDatasetError(PipelineError):
    """A command that reads a whole dataset was given one generate has not finished (no plan
    or manifest, a shard missing) or one with a damaged shard."""
