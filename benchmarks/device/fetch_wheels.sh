#!/usr/bin/env bash
# Here, before a GPU check: download into .whl/ (git-ignored) the wheels that the device
# machine's image lacks (its python3 is 3.12 with torch, numpy, scipy, scikit-learn, pytest),
# at the versions installed in this checkout's environment, so that the tests and the
# benchmarks run there on the same packages as here. About 8 MB.
#
#   bash benchmarks/device/fetch_wheels.sh [PYTHON [VERSION]]
#
# PYTHON: the environment whose package versions to copy (default .venv/bin/python);
# VERSION: the Python the wheels are for (default 3.12, the device machine's).
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${1:-.venv/bin/python}
target=${2:-3.12}
packages=(alembic annotated-types Mako pydantic pydantic_core pydantic-settings python-dotenv
          SQLAlchemy typing-inspection PyHessian hessian-eigenthings curvlinops-for-pytorch
          einconv loss-landscapes)
rm -rf .whl && mkdir .whl
for name in "${packages[@]}"; do
    version=$("$python" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$target" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "$name==$version"
done
ls .whl
