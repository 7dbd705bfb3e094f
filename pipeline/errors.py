"""Typed errors of a generation run (bad input inside a run is recorded, not raised)."""


class PipelineError(RuntimeError):
    """A run cannot start or finish; the message says why and what to do."""


class PlanMismatchError(PipelineError):
    """The output directory holds a different plan; resuming would mix two datasets."""


class UnreachableStorageError(PipelineError):
    """SOURCES or OUT cannot be reached from a worker node."""


class ShardsFailedError(PipelineError):
    """Some shards failed twice (their attempts and the final sweep)."""


class ClusterAuthError(PipelineError):
    """The cluster's Jobs API refused the request: Ray token authentication without a token."""


class LabelersUnavailableError(PipelineError):
    """The labeler actors could not start (resources the cluster does not have, a crash)."""
