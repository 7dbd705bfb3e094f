"""Training on a dataset in an object store (moto's S3 server, in this process): the
dataset's own ensemble is read from the store, no credential of its URI reaches a file or the
screen, and a run resumes however the URI is spelled (keys rotate)."""

import json

import pyarrow.fs as pafs
import pytest
import torch

from iqa_factory.cli import main
from shards.storage import Location, canonical_uri
from training import checkpoint, pretrain
from training.objectives import ObjectiveConfig
from training.optim import OptimConfig
from training.pretrain import PretrainConfig
from training.trained import resolved_root
from training.transforms import Augment

from .test_resume import MODEL


@pytest.fixture(scope="module")
def s3_dataset(tiny_dataset, s3_bucket) -> str:
    uri = s3_bucket.uri("tiny")
    target = Location.parse(uri)
    pafs.copy_files(str(tiny_dataset), target.root, destination_filesystem=target.fs)
    return uri


def _config(uri: str, out, epochs: int) -> PretrainConfig:
    return PretrainConfig(uri, str(out), MODEL,
                          OptimConfig(lr=3e-3, halve_every=1, epochs=epochs, batch_size=4,
                                      patience=5),
                          augment=Augment(crop=32), val_refs=("r5",), steps_per_epoch=2)


def _spelled_otherwise(uri: str) -> str:
    """The same data: the options in another order, a slash after the path, other keys."""
    head, _, query = uri.partition("?")
    options = "&".join(reversed(query.split("&")))
    return head.replace("AKIAIQAFACTORYTEST", "AKIAROTATED").replace(
        "S3cr3t-iqa-factory-test", "rotated-secret") + "/?" + options


def test_pretraining_on_s3_keeps_no_credential_and_resumes_however_spelled(
        s3_dataset, s3_bucket, tmp_path, capsys):
    out = tmp_path / "run"
    pretrain.pretrain(_config(s3_dataset, out, 1))  # Q under the dataset's own ensemble.json
    pretrain.pretrain(_config(_spelled_otherwise(s3_dataset), out, 2), resume=True)
    assert len(checkpoint.load(out / checkpoint.LAST)["history"]) == 2
    written = b"".join(path.read_bytes() for path in out.rglob("*") if path.is_file())
    saved = json.dumps(torch.load(out / checkpoint.BEST, weights_only=False)["config"])
    printed = capsys.readouterr()
    for secret in (s3_bucket.secret, s3_bucket.access, "rotated-secret", "AKIAROTATED"):
        assert secret.encode() not in written and secret not in saved
        assert secret not in printed.out + printed.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"].startswith("s3://***@")


def test_one_dataset_however_its_uri_is_spelled(s3_dataset):
    assert resolved_root(_spelled_otherwise(s3_dataset)) == resolved_root(s3_dataset) == \
        canonical_uri(s3_dataset)
    assert "@" not in resolved_root(s3_dataset) and "?" in resolved_root(s3_dataset)
    with pytest.raises(ValueError, match="given twice"):
        PretrainConfig(s3_dataset, "out", MODEL, objective=ObjectiveConfig(
            "contrastive"), also=(_spelled_otherwise(s3_dataset),))


def test_a_run_is_never_written_to_a_local_folder_named_after_a_uri(s3_dataset, tmp_path,
                                                                     monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "pretrain", s3_dataset, "--out", s3_dataset + "-run"]) == 2
    assert "a run's files go to a local folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
