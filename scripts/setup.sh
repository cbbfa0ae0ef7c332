#!/usr/bin/env bash
# Sets up everything on a fresh Debian machine with Python 3.11: the offline Fashion-MNIST files,
# a virtual environment in .venv with the package and its extras. Idempotent.
#   KERAS_RESNET_EXTRAS  pip extras (default "train,export"; the tests: "test,torch")
#   KERAS_RESNET_MOBILE  1 (default): also MediaPipe Tasks, in a second step (see setup.py)
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
need_apt=()
[ -d /usr/share/datasets/fashion-mnist ] || need_apt+=(dataset-fashion-mnist)
python3 -c "import venv, ensurepip" 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== apt-get install ${need_apt[*]}"
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_apt[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
EXTRAS="${KERAS_RESNET_EXTRAS:-train,export}"
MOBILE="${KERAS_RESNET_MOBILE:-1}"
WANT="$EXTRAS mobile=$MOBILE"
if ! .venv/bin/python -c "import keras_resnet, train, export" 2>/dev/null \
   || [ setup.py -nt .venv/.installed ] || [ "$(cat .venv/.installed 2>/dev/null)" != "$WANT" ]; then
  echo "== pip install -e .[$EXTRAS] (first time: several minutes)"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e ".[$EXTRAS]"
  if [ "$MOBILE" = 1 ]; then
    echo "== pip install -e .[mobile] (MediaPipe Tasks)"
    # pip reports TFMOT's absl-py~=1.2 pin here; TFMOT works with absl-py 2 (tests/export).
    .venv/bin/pip install -q -e ".[mobile]" 2> .venv/mobile-install.log \
      || { cat .venv/mobile-install.log >&2; exit 1; }
  fi
  echo "$WANT" > .venv/.installed
fi
