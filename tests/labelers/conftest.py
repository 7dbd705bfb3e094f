"""Calibration pairs from shared/calibration (never copied into the project).

The directory defaults to ../shared/calibration beside the repository; IQA_CALIBRATION_DIR
overrides it. Absent files fail the tests when CI=true and skip them, with the reason, elsewhere.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from labelers import weights

REPO = Path(__file__).resolve().parents[2]
CALIBRATION = Path(os.environ.get("IQA_CALIBRATION_DIR", REPO.parent / "shared" / "calibration"))
# Identical images: each metric's exact best value (a similarity's 1, a distance's 0)
BEST = {"gmsd": 0.0, "fsim": 1.0, "vif": 1.0, "cw_ssim": 1.0, "nlpd": 0.0, "mae": 0.0,
        "ms_ssim": 1.0, "mad": 0.0, "dists": 0.0, "lpips": 0.0, "ssim": 1.0, "mdsi": 0.0,
        "vsi": 1.0}


def load_calibration(path: Path) -> np.ndarray:
    if not path.is_file():
        message = f"calibration file {path} is missing (set IQA_CALIBRATION_DIR)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).copy()


def tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 H x W x 3 -> uint8 1 x 3 x H x W."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]


@pytest.fixture(scope="session")
def calibration_pair():
    """calibration_pair("I03") -> (ref, dist) uint8 1 x 3 x 384 x 512 tensors (TID2013 pairs)."""
    def load(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = CALIBRATION / "pairs"
        ref = load_calibration(pairs / "ref" / f"{name}.bmp")
        return tensor(ref), tensor(load_calibration(pairs / "dist" / f"{name}.bmp"))
    return load


@pytest.fixture(scope="session")
def piq_asset():
    """piq_asset("goldhill.gif") -> uint8 1 x 3 x H x W tensor (gray files are replicated)."""
    return lambda name: tensor(load_calibration(CALIBRATION / "piq-assets" / name))


@pytest.fixture(scope="session")
def noisy_versions(small_image):
    """The committed 192 x 176 image and three versions with growing white noise, as tensors."""
    rng = np.random.default_rng(0)
    versions = []
    for sigma in (4.0, 12.0, 30.0):
        noisy = small_image.astype(np.float64) + rng.normal(0, sigma, small_image.shape)
        versions.append(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
    return tensor(small_image), torch.cat([tensor(v) for v in versions])


@pytest.fixture(scope="session")
def random_hub(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds random AlexNet and VGG16 weights under the real names."""
    home = tmp_path_factory.mktemp("torch_home")
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(),
               folder / weights.BACKBONES["lpips"].filename)
    torch.save(torchvision.models.vgg16(weights=None).state_dict(),
               folder / weights.BACKBONES["dists"].filename)
    return home


@pytest.fixture
def random_weights(random_hub, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(random_hub))
    return random_hub
