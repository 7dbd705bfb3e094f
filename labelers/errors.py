"""Typed errors of the labelers."""


class LabelerError(ValueError):
    """Base class for every error the labelers raise on bad input or configuration."""


class InvalidPairError(LabelerError):
    """Reference and distorted images are not uint8 RGB of the same size."""


class DeviceMemoryError(LabelerError):
    """A metric cannot fit one reference, or one pass of its versions, in the device's
    memory, even after its cache is emptied and the work tried again."""


class InputTooSmallError(LabelerError):
    """The images are smaller than a metric's minimum input size."""


class UnknownMetricError(LabelerError, KeyError):
    """No metric has that key."""

    def __str__(self) -> str:
        return str(self.args[0])
