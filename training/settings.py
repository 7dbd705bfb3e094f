"""The checks of settings the training commands share, made where a config is built (the
command line's parsers check the same, for their own messages): whole counts and the device."""

from distortions.registry import is_integer

DEVICES = ("auto", "cpu", "cuda")  # cuda: this rank's GPU (LOCAL_RANK's under torchrun)


def check_count(name: str, value, least: int, optional: bool = False) -> None:
    """A ValueError naming `name` unless `value` is a whole number of at least `least` (or
    None, where `optional`)."""
    if optional and value is None:
        return
    if not is_integer(value) or value < least:
        raise ValueError(f"{name} must be a whole number of at least {least}, got {value!r}")


def check_device(device) -> None:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r} (a "
                         "torchrun rank takes its own GPU with cuda)")


def check_shared(workers, seed, device) -> None:
    """workers and seed (None: a command that draws nothing, or takes its checkpoint's)
    whole numbers of at least 0, and the device one of DEVICES."""
    check_count("workers", workers, 0)
    check_count("seed", seed, 0, optional=True)
    check_device(device)


def check_names(name: str, value) -> None:
    """A ValueError where a collection of names is one string (read letter by letter)."""
    if isinstance(value, str):
        raise ValueError(f"{name} is a collection of names, got the string {value!r}")
