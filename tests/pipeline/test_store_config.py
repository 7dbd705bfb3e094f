"""--store in the run configuration (issue 11): recorded, in the plan digest only away from
the default (datasets made before the modes keep theirs), and checked."""

import pytest

from pipeline import cli
from pipeline.config import RunConfig
from pipeline.plan import Plan
from pipeline.sources import list_sources


def test_the_store_enters_the_plan_only_when_not_images(tmp_path):
    def config(**store) -> RunConfig:
        return RunConfig(sources="embedded", out=str(tmp_path), limit=2, **store)
    sources = list_sources("embedded")
    default, images = Plan.make(sources, config()), Plan.make(sources, config(store="images"))
    assert "store" not in default.inputs and default.digest == images.digest
    hybrid = Plan.make(sources, config(store="hybrid"))
    assert hybrid.inputs["store"] == "hybrid" and hybrid.digest != default.digest
    assert Plan.make(sources, config(store="recipes")).digest not in (default.digest,
                                                                      hybrid.digest)
    assert config(store="recipes").modes()["store"] == "recipes"
    with pytest.raises(ValueError, match="store must be one of images, recipes, hybrid"):
        config(store="pngs")


def test_the_command_line_takes_the_three_modes(capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["generate", "--store", "recipes"])
    assert cli.run_config(args).store == "recipes"
    assert cli.run_config(parser.parse_args(["generate"])).store == "images"
    with pytest.raises(SystemExit):
        parser.parse_args(["generate", "--store", "pngs"])
    assert "invalid choice: 'pngs'" in capsys.readouterr().err
    kept = parser.parse_args(["generate", "--store", "hybrid", "--keep-pngs",
                              "color_quantization,33,2"])
    assert cli.run_config(kept).keep_pngs == (2, 29, 33)  # names, ids; sorted
    with pytest.raises(SystemExit):  # a type named twice: a typo for another, as --distortions
        parser.parse_args(["generate", "--store", "hybrid", "--keep-pngs", "jpeg2000,2"])
    assert "--keep-pngs: 2 (jpeg2000) given more than once" in capsys.readouterr().err


def test_keep_pngs_is_a_storage_input_of_hybrid_runs_only(tmp_path):
    def config(**storage) -> RunConfig:
        return RunConfig(sources="embedded", out=str(tmp_path), limit=2, **storage)
    sources = list_sources("embedded")
    hybrid = Plan.make(sources, config(store="hybrid"))
    kept = Plan.make(sources, config(store="hybrid", keep_pngs=(2, 29)))
    assert "keep_pngs" not in hybrid.inputs and kept.inputs["keep_pngs"] == (2, 29)
    assert kept.digest != hybrid.digest
    assert RunConfig.from_json(config(store="hybrid", keep_pngs=(2,)).to_json()).keep_pngs == (2,)
    with pytest.raises(ValueError, match="--keep-pngs applies to --store hybrid, not recipes"):
        config(store="recipes", keep_pngs=(2,))
    with pytest.raises(ValueError, match=r"--keep-pngs \[40\]: not among the run's distortion"):
        config(store="hybrid", keep_pngs=(40,))
    with pytest.raises(ValueError, match="distinct ids in increasing order"):
        config(store="hybrid", keep_pngs=(29, 2))
    # hybrid keeps the learned types' PNGs anyway: recorded, they would be one dataset
    # under two plan digests; refused on the command line, read as it is from a plan
    args = cli.build_parser().parse_args(["generate", "--out", str(tmp_path), "--store",
                                          "hybrid", "--distortions", "2,8", "--keep-pngs",
                                          "8,2"])
    with pytest.raises(ValueError, match=r"--keep-pngs \[8\]: the learned denoiser's versions "
                                         "keep their PNG in hybrid already"):
        cli.run_config(args)
    recorded = config(store="hybrid", distortion_ids=(2, 8), keep_pngs=(2, 8)).to_json()
    assert RunConfig.from_json(recorded).keep_pngs == (2, 8)
