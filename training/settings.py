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
    check_count("workers", workers, 0)
    check_count("seed", seed, 0)
    check_device(device)
