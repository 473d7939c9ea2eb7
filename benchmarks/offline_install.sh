#!/usr/bin/env bash
# Install the OpenMMLab stack offline into a Python that already has a CUDA build of torch (an air-gapped
# GPU node), from a folder holding the pure-Python wheels and the mmcv 2.1.0 sdist, made on a connected
# machine with:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d WHEELS \
#       mmengine==0.10.7 mmsegmentation==1.2.2 addict yapf termcolor prettytable ftfy wcwidth platformdirs setuptools==80.10.2
#   .venv/bin/pip download --no-deps --no-binary=:all: --no-build-isolation -d WHEELS mmcv==2.1.0
# mmcv is built with its CPU ops only (CUDA hidden during the build): mmseg needs mmcv.ops to import, and
# the UNet uses none of its CUDA kernels. Usage: source benchmarks/offline_install.sh WHEELS [TARGET]
set -euo pipefail
wheels=${1:?usage: source benchmarks/offline_install.sh WHEEL_DIR [TARGET]}
target=${2:-/tmp/site}
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$target" "$wheels"/*.whl
export PYTHONPATH="$target:$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import mmcv.ops" 2>/dev/null; then
  CUDA_VISIBLE_DEVICES="" MMCV_WITH_OPS=1 MAX_JOBS="$(nproc)" python3 -m pip install -q --no-index --no-deps \
    --no-build-isolation --target "$target" "$wheels"/mmcv-2.1.0.tar.gz
fi
python3 -c "import mmseg.models, torch; print('mmseg ready; torch', torch.__version__, 'cuda', torch.cuda.is_available())"
set +euo pipefail
