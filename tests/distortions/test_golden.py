import json

import distortions
from tests.distortions.golden import GOLDEN_FILE, output_hashes


def test_every_non_network_output_matches_its_golden_hash(small_image):
    golden = json.loads(GOLDEN_FILE.read_text())
    assert len(golden) == 5 * sum(not d.learned for d in distortions.all()) == 140
    changed = {key for key, digest in output_hashes(small_image).items() if golden[key] != digest}
    assert not changed, (
        f"pixels changed for {sorted(changed)}: a library upgrade or a code change altered "
        "these outputs; if deliberate, run `make golden` and say why in the commit"
    )
