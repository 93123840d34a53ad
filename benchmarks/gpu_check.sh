#!/usr/bin/env bash
# The prepared GPU check (see benchmarks/gpu_check.py): install what the GPU machine lacks from
# the shared wheels, then print one table in at most 8 minutes on one GPU.
#   bash benchmarks/gpu_check.sh                  # on the GPU machine, from the repository root
#   bash benchmarks/gpu_check.sh --cpu-rehearsal  # tiny, on a CPU, same code paths (no installs)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" != "--cpu-rehearsal" && -z "${GPU_CHECK_REHEARSAL:-}" ]]; then
    python3 -m pip install -q --no-index --find-links ../shared/wheels/gpu-py312 duckdb textual "plotext<6"
    # The project itself needs no install (that would want setuptools from a registry): its
    # three packages are linked under their import names and put on the path.
    shim=$(mktemp -d)/shim && mkdir -p "$shim/layerscope"
    for part in app analysis samples; do ln -s "$PWD/$part" "$shim/layerscope/$part"; done
    export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}"
    exec timeout 470 python3 benchmarks/gpu_check.py --budget 400 "$@"
fi
exec timeout 300 python3 benchmarks/gpu_check.py --cpu-rehearsal --budget 200
