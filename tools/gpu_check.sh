#!/usr/bin/env bash
# GPU speed check for BENCHMARKS.md, prepared to finish within 5 minutes on one H200 (not run yet):
#   1. ssl-toolkit bench, ResNet-18, 224 px, batch 256, bf16-mixed, SimCLR (2 x 224 px views);
#      again with channels_last; then SwAV multi-crop (2 x 224 + 6 x 96) if its recipe exists;
#   2. augmentation throughput: kornia SimCLR views on the GPU vs torchvision v2 per image on CPU
#      workers (the path the toolkit avoids);
#   3. SimCLR with module.compile_backbone=true (last: compilation may take a minute; capped at 100 s).
# The ImageNet-100 recipes get synthetic 224 px data (no ImageNet needed), so loader_img_s here is
# an in-memory loader, not JPEG decoding.
#
#   bash tools/gpu_check.sh [OUT_FILE]       (default: gpu_check_<date>.txt; also printed)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu_check_$(date +%Y%m%d_%H%M%S).txt}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
TMP="$(mktemp -d)"
exec > >(tee "$OUT") 2>&1

echo "== gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, lightning, timm, kornia; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'lightning', lightning.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__); \
print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO GPU')"

# recipe SRC -> DST with synthetic 224 px data, batch 256, one GPU, bf16-mixed
synthetic() {
  "$PY" - "$1" "$2" <<'EOF'
import sys
from omegaconf import OmegaConf
r = OmegaConf.to_container(OmegaConf.load(sys.argv[1]), resolve=True)
r["backbone"] = {"name": "resnet18", "pretrained": False}
r["data"] = {"name": "synthetic", "num_samples": 1024, "num_val_samples": 16, "image_size": 224,
             "batch_size": 256, "num_workers": 0}
r["trainer"] = {"accelerator": "gpu", "devices": 1, "precision": "bf16-mixed", "max_steps": 10}
r["callbacks"] = {}
OmegaConf.save(OmegaConf.create(r), sys.argv[2])
EOF
}

run() {  # label, timeout seconds, command...
  local label="$1" limit="$2"; shift 2
  echo; echo "== $label"; echo "\$ $*"
  local start=$SECONDS
  timeout "$limit" "$@"; local rc=$?
  echo "(rc $rc, $((SECONDS - start)) s)"
}

synthetic recipes/imagenet100/simclr.yaml "$TMP/simclr.yaml"
run "SimCLR, ResNet-18, 224 px, batch 256, bf16" 90 "$PY" -m ssl_toolkit.run.cli bench "$TMP/simclr.yaml" --steps 20 --warmup 5
run "SimCLR + channels_last" 90 "$PY" -m ssl_toolkit.run.cli bench "$TMP/simclr.yaml" module.channels_last=true --steps 20 --warmup 5
if [ -f recipes/imagenet100/swav.yaml ]; then
  synthetic recipes/imagenet100/swav.yaml "$TMP/swav.yaml"
  run "SwAV multi-crop (2x224 + 6x96), ResNet-18, batch 256, bf16" 90 \
    "$PY" -m ssl_toolkit.run.cli bench "$TMP/swav.yaml" --steps 20 --warmup 5
else
  echo; echo "== SwAV: recipes/imagenet100/swav.yaml missing, skipped"
fi

echo; echo "== augmentation: kornia on the GPU vs torchvision v2 per image on CPU workers"
timeout 90 "$PY" - <<'EOF'
import os, time
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from ssl_toolkit.augment import SimCLRAugment

n, side, batch = 1024, 256, 256
images = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8)
aug = SimCLRAugment(size=224).cuda()
x = images[:batch].cuda()
for _ in range(3):
    aug(x)
torch.cuda.synchronize(); t = time.perf_counter(); steps = 10
for _ in range(steps):
    aug(x)
torch.cuda.synchronize()
print(f"kornia SimCLRAugment, GPU, batch {batch}, 2 views: {steps * batch / (time.perf_counter() - t):10.1f} images/s")

tf = v2.Compose([v2.RandomResizedCrop(224, scale=(0.08, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                 v2.RandomApply([v2.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8), v2.RandomGrayscale(0.2),
                 v2.RandomApply([v2.GaussianBlur(23, (0.1, 2.0))], p=0.5), v2.ToDtype(torch.float32, scale=True),
                 v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

class TwoViews(Dataset):
    def __len__(self): return n
    def __getitem__(self, i): return tf(images[i]), tf(images[i])

workers = min(16, os.cpu_count() or 1)
loader = DataLoader(TwoViews(), batch_size=batch, num_workers=workers, persistent_workers=True)
it = iter(loader); next(it)
t = time.perf_counter(); count = 0
for views in it:
    count += views[0].shape[0]
print(f"torchvision v2 per image, {workers} CPU workers, 2 views: {count / (time.perf_counter() - t):10.1f} images/s")
EOF
echo "(augmentation rc $?)"

run "SimCLR + torch.compile (backbone)" 100 "$PY" -m ssl_toolkit.run.cli bench "$TMP/simclr.yaml" module.compile_backbone=true --steps 20 --warmup 5
echo; echo "== done $(date -u +%Y-%m-%dT%H:%M:%SZ); output in $OUT"
rm -rf "$TMP"
