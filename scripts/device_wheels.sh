#!/usr/bin/env bash
# Downloads, here, the wheels the device check needs that the GPU machine's image lacks: tokamax (an
# optional benchmark peer) and those of its dependencies the image does not hold (it has jax,
# equinox, optax, flax, chex, absl-py, protobuf). For the image's Python 3.12 on x86-64 Linux.
#
#   bash scripts/device_wheels.sh [DEST]      (default .whl, ignored through .git/info/exclude)
#
# Carry DEST to the device; scripts/device_check.sh installs every DEST/*.whl into a throwaway
# --target folder (WHEELS=DEST when DEST is not .whl). Versions are fixed so one set is tested.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [[ "$DEST" == .whl && -d .git ]] && ! grep -qx '/.whl/' .git/info/exclude 2>/dev/null; then
    echo '/.whl/' >>.git/info/exclude  # the wheels travel with the working tree, never into a commit
fi
WHEELS=(
    tokamax==0.0.12 qwix==0.1.8 einshape==1.0 immutabledict==4.3.1 typeguard==2.13.3 tensorboardX==2.6.5
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
)
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$DEST" "${WHEELS[@]}"
ls -l "$DEST"
