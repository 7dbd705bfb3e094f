"""Where each metric's class lives (imported lazily so that loading one metric does not load the
others' dependencies). METRICS, the ten of the spec in its order, is the default set (the
ensemble's); AVAILABLE_METRICS adds the metrics one may choose beyond it (SSIM, MDSI, VSI: with
MS-SSIM, FSIM and GMSD, the six of the pseudo-MOS ensemble, pmos_ensemble.json)."""

import importlib
from importlib import metadata

from labelers.base import Metric
from labelers.errors import UnknownMetricError
from labelers.weights import BACKBONES

METRIC_CLASSES = {
    "gmsd": "labelers.gmsd:GMSD",
    "fsim": "labelers.fsim:FSIM",
    "vif": "labelers.vif:VIF",
    "cw_ssim": "labelers.cw_ssim:CWSSIM",
    "nlpd": "labelers.nlpd:NLPD",
    "mae": "labelers.mae:MAE",
    "ms_ssim": "labelers.ms_ssim:MSSSIM",
    "mad": "labelers.mad:MAD",
    "dists": "labelers.dists_metric:DISTS",
    "lpips": "labelers.lpips_metric:LPIPS",
    "ssim": "labelers.ssim:SSIM",  # these three not in METRICS: outside the default ensemble
    "mdsi": "labelers.mdsi:MDSI",
    "vsi": "labelers.vsi:VSI",
}
METRICS: tuple[str, ...] = ("gmsd", "fsim", "vif", "cw_ssim", "nlpd", "mae", "ms_ssim", "mad",
                            "dists", "lpips")
AVAILABLE_METRICS: tuple[str, ...] = tuple(METRIC_CLASSES)
DEEP_METRICS = ("dists", "lpips")
# the packages whose code or shipped weights a metric's scores depend on, beyond this one's
# and torch (the ImageNet backbone files: labelers.weights.BACKBONES)
METRIC_PACKAGES = {"fsim": ("piq",), "mdsi": ("piq",), "vsi": ("piq",), "lpips": ("lpips",),
                   "dists": ("DISTS_pytorch",)}


def metric_class(key: str) -> type[Metric]:
    """The class implementing metric `key`."""
    if key not in METRIC_CLASSES:
        raise UnknownMetricError(
            f"no metric {key!r}; the metrics are {', '.join(AVAILABLE_METRICS)}")
    module, name = METRIC_CLASSES[key].split(":")
    return getattr(importlib.import_module(module), name)


def package_version(name: str) -> str | None:
    """An installed distribution's version (None where it is not installed as one)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def metric_versions(keys: tuple[str, ...]) -> dict[str, dict[str, str | None]]:
    """What each metric's scores depend on, by version: this package's code, torch, the
    packages of METRIC_PACKAGES, and its ImageNet backbone's file (its name holds the start
    of its SHA-256)."""
    versions = {}
    for key in keys:
        versions[key] = {package: package_version(package) for package in
                         ("iqa-factory", "torch", *METRIC_PACKAGES.get(key, ()))}
        if key in BACKBONES:
            versions[key]["weights"] = BACKBONES[key].filename
    return versions
