"""A device run's pipeline rates, read from its pipeline section (device-check.json): one
definition for the report, its chart and the projection."""


def rate_once_started(pipe: dict) -> float | None:
    """Labelled images/s from the labelling process's first request (None where a run did not
    time that)."""
    if not pipe.get("from_first_request_seconds"):
        return None
    return round(pipe["labelled_images"] / pipe["from_first_request_seconds"], 1)


def rate_while_all_worked(pipe: dict) -> float | None:
    """Labelled images/s while every pool process worked (None where a run did not time
    that)."""
    return (pipe.get("while_all_worked") or {}).get("labelled_images_per_s")
