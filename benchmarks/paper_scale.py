"""The scale of the paper's dataset the benchmarks project to: KADIS-700k's 140,000 pristine
photos, each in 165 versions (33 types at 5 levels)."""

PAPER_REFERENCES = 140_000
PAPER_VERSIONS = PAPER_REFERENCES * 33 * 5  # 23,100,000
