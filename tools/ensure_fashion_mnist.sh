#!/usr/bin/env bash
# Make sure the Fashion-MNIST files from Debian's dataset-fashion-mnist package are present.
set -euo pipefail
dir=/usr/share/datasets/fashion-mnist
files="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
missing() { for f in $files; do [ -s "$dir/$f" ] || return 0; done; return 1; }
if ! missing; then exit 0; fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "Fashion-MNIST not found in $dir: installing dataset-fashion-mnist with apt-get"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null
  if ! missing; then exit 0; fi
  echo "error: dataset-fashion-mnist installed but $dir is still incomplete" >&2
  exit 1
fi
echo "error: Fashion-MNIST not found in $dir. Run: sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist" >&2
exit 1
