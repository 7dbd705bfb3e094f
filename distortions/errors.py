"""Typed errors of the distortion bank: each names the problem it reports."""


class DistortionError(ValueError):
    """Base class for every error the distortion bank raises on bad input."""


class InvalidImageError(DistortionError):
    """The image is not uint8 RGB H x W x 3."""


class ImageTooSmallError(InvalidImageError):
    """The image is smaller than the bank's minimum input size."""


class UnknownDistortionError(DistortionError, KeyError):
    """No distortion has that id or name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class UnknownBankError(DistortionError):
    """No named bank has that name."""


class InvalidLevelError(DistortionError):
    """The level is not one of 1..5."""


class InvalidSeedError(DistortionError):
    """The seed is not a non-negative integer."""


class InvalidRecipeError(DistortionError):
    """A recipe is malformed or does not match the distortion it names."""


class DenoiserUnavailableError(DistortionError):
    """The learned denoiser's weights cannot be found or loaded."""


class DenoiserMismatchError(InvalidRecipeError):
    """A recipe names a different denoiser from the one configured for replay."""


class CodecRateError(DistortionError):
    """A lossy codec whose rate control cannot reach the ratio the level asks for."""
