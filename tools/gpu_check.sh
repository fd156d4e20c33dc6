#!/usr/bin/env bash
# One-GPU check, sized for 5 minutes (290 s of caps) on one H100/H200; writes one Markdown file to
# paste into BENCHMARKS.md. It runs what ships, at the recipes' own precision (bf16-mixed):
#   1. as shipped: one ImageNet-100 recipe per head family through tools/rehearse.py on the GPU
#      (sanity check, 2 steps, evaluation with every callback sized by the recipe, checkpoint,
#      resume, evaluation again), 4 at once;                                         cap 110 s
#   2. host syncs: the training step (augmentation, forward, backward, optimizer, hooks) of SimCLR
#      and SwAV under torch.cuda.set_sync_debug_mode("error") (tools/sync_check.py);  cap 30 s
#   3. where each millisecond goes: `ssl-toolkit bench` (per-part timing inside trainer.fit) for
#      SimCLR and SwAV multi-crop (ResNet-18), SimCLR ViT-S, SimCLR with channels_last and with
#      compile_backbone; synthetic 224 px data, batch 256;                           cap 110 s
#   4. the JPEG-folder loader (ImageNet-like 500 x 375 JPEGs, 8 workers) against the training step
#      on the same folder, with the loader baseline's self-check (ssl_toolkit.run.loader_bench);
#                                                                                    cap 40 s
#
#   bash tools/gpu_check.sh [--cpu] [OUT_FILE]     (default OUT_FILE: gpu_check_<date>.md)
#
# --cpu runs the same steps small on this machine (tiny backbone, 32-64 px, few steps, 2 recipes):
# the dry run that must pass before a GPU is lent. Exit status: the number of failed steps.
set -uo pipefail
cd "$(dirname "$0")/.."
CPU=0
if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
if [ "${1:-}" = "--cpu" ]; then CPU=1; shift; fi
case "${1:-}" in -*) echo "tools/gpu_check.sh: error: unknown option $1 (see --help)" >&2; exit 2;; esac
OUT="${1:-gpu_check_$(date +%Y%m%d_%H%M%S).md}"
if [ -e "$OUT" ]; then echo "tools/gpu_check.sh: error: $OUT exists; pass a new file name" >&2; exit 2; fi
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
FAILED=0
exec > >(tee "$OUT") 2>&1

if [ "$CPU" = 1 ]; then
  ACCEL=cpu; BACKBONE=test_resnet; VIT=test_vit; SIZE=64; LOCAL=32; BATCH=16; STEPS=5; WARMUP=2
  SHIPPED="recipes/imagenet100/simclr.yaml recipes/imagenet100/swav.yaml"; REHEARSE_DEVICES=""; JOBS=1
  PHOTOS=128; WORKERS=2; LOADER_BATCH=16; SCALE=4  # caps x SCALE: a CPU is slower
else
  ACCEL=gpu; BACKBONE=resnet18; VIT=vit_small_patch16_224; SIZE=224; LOCAL=96; BATCH=256; STEPS=10; WARMUP=5
  SHIPPED="$(for h in simclr swav mocov2 mochi mocov2_ft amcl hydra byol simsiam mocov3 barlow_twins vicreg dino nnclr; do
    [ -f recipes/imagenet100/$h.yaml ] && echo recipes/imagenet100/$h.yaml; done)"
  REHEARSE_DEVICES="--devices 1"; JOBS=4; PHOTOS=2048; WORKERS=8; LOADER_BATCH=64; SCALE=1
fi

echo "# gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null)$([ "$CPU" = 1 ] && echo ' (--cpu dry run)')"
echo; echo '```'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
"$PY" -c "import torch, lightning, timm, kornia; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'lightning', lightning.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__); \
print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
echo '```'

step() {  # title, cap seconds, command...: runs it, prints its output in a code block, counts a failure
  local title="$1" cap=$(($2 * SCALE)); shift 2
  echo; echo "## $title"; echo; echo '```'; echo "\$ $*"
  local start=$SECONDS
  timeout "$cap" "$@"; local rc=$?
  echo "(exit $rc, $((SECONDS - start)) s of $cap s)"; echo '```'
  [ "$rc" = 0 ] || FAILED=$((FAILED + 1))
}

# A recipe with synthetic data at SIZE px (no ImageNet needed): SRC DST [key=value ...]
synthetic() {
  "$PY" - "$@" <<'EOF'
import sys
from omegaconf import OmegaConf
src, dst, *over = sys.argv[1:]
r = OmegaConf.to_container(OmegaConf.merge(OmegaConf.load(src), OmegaConf.from_dotlist(over)), resolve=True)
size = r["augment"]["size"]
r["data"] = {"name": "synthetic", "num_samples": 4096, "num_val_samples": 64, "image_size": size,
             "batch_size": r["data"]["batch_size"], "num_workers": 2}
OmegaConf.save(OmegaConf.create(r), dst)
EOF
}

COMMON=(trainer.accelerator=$ACCEL trainer.devices=1 trainer.strategy=auto backbone.name=$BACKBONE data.batch_size=$BATCH)
SMALL=()
[ "$CPU" = 1 ] && SMALL=(augment.size=$SIZE)
SWAV_SMALL=()
[ "$CPU" = 1 ] && SWAV_SMALL=(augment.size=$SIZE augment.local_size=$LOCAL)

# 1. as shipped
step "1. Recipes as shipped: bf16, every callback, evaluation, checkpoint, resume" 110 \
  "$PY" tools/rehearse.py $SHIPPED --accelerator $ACCEL $REHEARSE_DEVICES --jobs $JOBS --out "$TMP/rehearsal"

# synthetic-data recipes for steps 2 and 3
synthetic recipes/imagenet100/simclr.yaml "$TMP/simclr.yaml" "${COMMON[@]}" "${SMALL[@]}"
synthetic recipes/imagenet100/swav.yaml "$TMP/swav.yaml" "${COMMON[@]}" "${SWAV_SMALL[@]}"
synthetic recipes/imagenet100/simclr_vit.yaml "$TMP/simclr_vit.yaml" "${COMMON[@]}" backbone.name=$VIT "${SMALL[@]}"
# 2. host syncs in the training step (synthetic data, batch 32)
step "2. Host syncs in the training step (set_sync_debug_mode error)" 30 \
  "$PY" tools/sync_check.py "$TMP/simclr.yaml" "$TMP/swav.yaml" --steps 3 -- data.batch_size=32

# 3. per-part timing inside trainer.fit
BENCH=(--steps $STEPS --warmup $WARMUP --json "$TMP/bench.jsonl" --markdown "$TMP/bench.md")
step "3a. bench: SimCLR, ResNet-18, bf16" 25 "$PY" -m ssl_toolkit.run.cli bench "$TMP/simclr.yaml" "${BENCH[@]}"
step "3b. bench: SimCLR, ResNet-18, bf16, channels_last" 25 \
  "$PY" -m ssl_toolkit.run.cli bench "$TMP/simclr.yaml" module.channels_last=true "${BENCH[@]}"
step "3c. bench: SwAV multi-crop (2 global + 6 local), ResNet-18, bf16" 25 \
  "$PY" -m ssl_toolkit.run.cli bench "$TMP/swav.yaml" "${BENCH[@]}"
step "3d. bench: SimCLR, ViT-S, bf16" 25 "$PY" -m ssl_toolkit.run.cli bench "$TMP/simclr_vit.yaml" "${BENCH[@]}"
if [ "$CPU" = 0 ]; then  # compiling on a CPU takes minutes: the dry run skips it (said here)
  step "3e. bench: SimCLR, ResNet-18, bf16, compile_backbone" 40 \
    "$PY" -m ssl_toolkit.run.cli bench "$TMP/simclr.yaml" module.compile_backbone=true "${BENCH[@]}"
else
  echo; echo "## 3e. compile_backbone: not run by --cpu (inductor compilation takes minutes on a CPU)"
fi
echo; echo "### Per-part breakdowns"; echo; cat "$TMP/bench.md" 2>/dev/null || echo "(none written)"

# 4. JPEG folder: loader vs step
"$PY" tools/fake_photos.py "$TMP/photos/train/n00000000" --count "$PHOTOS"
"$PY" tools/fake_photos.py "$TMP/photos/val/n00000000" --count 16 --seed 1
FOLDER=(data.root="$TMP/photos" data.num_workers=$WORKERS trainer.accelerator=$ACCEL trainer.devices=1
        trainer.strategy=auto backbone.name=$BACKBONE data.batch_size=$BATCH "${SMALL[@]}")
step "4a. Loader baseline self-check (items of a known 4 ms cost, 2 workers)" 10 \
  "$PY" -m ssl_toolkit.run.loader_bench --known-cost-ms 4 --workers 2
step "4b. JPEG-folder loader, $WORKERS workers (ImageNet-like 500 x 375)" 15 \
  "$PY" -m ssl_toolkit.run.loader_bench recipes/imagenet100/simclr.yaml "${FOLDER[@]}" \
  data.batch_size=$LOADER_BATCH --batches-per-worker 2 --warmup-per-worker 1
step "4c. Training step on the same folder" 15 \
  "$PY" -m ssl_toolkit.run.cli bench recipes/imagenet100/simclr.yaml "${FOLDER[@]}" --steps 5 --warmup 2

echo; echo "## Summary"; echo; echo "$FAILED failed step(s); written to $OUT $(date -u +%Y-%m-%dT%H:%M:%SZ)"
exit "$FAILED"
