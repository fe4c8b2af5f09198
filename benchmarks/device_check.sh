#!/usr/bin/env bash
# The GPU checks of a session that is lent one, prepared to run there in one call (about 6-9
# minutes on an H100/H200; the device tool's `run` with timeout_s 600):
#
#     bash benchmarks/device_check.sh                       # on the GPU machine, from the repo root
#     DEVICE=cpu TINY=1 bash benchmarks/device_check.sh     # the same steps on a CPU, at a tiny size
#
# 1. what the machine is (torch, CUDA, the GPU);
# 2. `benchmarks/run.py` on the device (first: its figures are what docs/performance.md "On a GPU"
#    waits for): ms per step, fraction of peak, memory, the projected wall times of the VampPrior
#    protocol and of the whole 2D table; stopped after BENCH_LIMIT seconds (default 420);
# 3. each kind of training on the device through the CLI, then `mixvae eval` of its run folder:
#    the 2D learned-prior Soft-IntroVAE (conversion, clipping, MC KLs; in fp32 also seeds 92 and 93
#    as one stacked ensemble, whose seed-92 member is compared with the separate run), a VampPrior VAE and
#    a GAMIX-VAE on small synthetic images, in fp32 and bf16.
# Output: $OUT (default device_out/): log.txt and bench_<device>.json. Uses the python3 on PATH
# (the GPU image's has torch and every dependency) with this checkout's src/ on PYTHONPATH.
set -uo pipefail
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-device_out}
PY=${PY:-python3}
mkdir -p "$OUT"
WORK=$(mktemp -d)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MIXVAE_OFFLINE=1
exec > >(tee "$OUT/log.txt") 2>&1
status=0
step() { echo "== $*"; "$@" || { echo "!! failed ($?): $*"; status=1; }; }
mixvae() { "$PY" -m mixvae "$@" --quiet; }
if [ -n "${TINY:-}" ]; then STEPS=30; EPOCHS=1; BENCH=(--tiny); else STEPS=600; EPOCHS=2; BENCH=(); fi

step "$PY" -c "import torch, platform; print('torch', torch.__version__, 'python', platform.python_version()); \
print('cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"

step timeout "${BENCH_LIMIT:-420}" "$PY" benchmarks/run.py --device "$DEVICE" "${BENCH[@]}" --json "$OUT/bench_$DEVICE.json"

# Synthetic binary and 8-bit images for the image runs (no data set travels to the device).
step "$PY" - "$WORK" <<'EOF'
import sys, numpy as np
g = np.random.default_rng(0)
binary = (g.random((600, 28, 28)) < 0.2).astype(np.float32)
rgb = g.integers(0, 256, (600, 32, 32, 3), dtype=np.uint8)
np.savez(f"{sys.argv[1]}/binary.npz", train=binary[:500], test=binary[500:])
np.savez(f"{sys.argv[1]}/rgb.npz", train=rgb[:500], test=rgb[500:])
EOF

for precision in fp32 bf16; do
  common=(--set train.device="$DEVICE" --set train.precision="$precision")
  run="$WORK/2d-$precision"
  step mixvae train configs/sintro/2d_8gaussians_learned_prior.yaml "${common[@]}" --out "$run" \
       --set train.max_steps=$STEPS --set train.warmup_steps=$((STEPS / 3)) \
       --set sintro.convert_to_mog_step=$((STEPS / 3 - 1)) --set "train.lr_milestones=[$((STEPS / 2))]"
  step mixvae eval "$run" --set train.device="$DEVICE" --json
  if [ "$precision" = fp32 ]; then   # (ensembles train in fp32 only)
  step mixvae train configs/sintro/2d_8gaussians_learned_prior.yaml "${common[@]}" --out "$run-seeds" --seeds 92 93 \
       --set train.max_steps=$STEPS --set train.warmup_steps=$((STEPS / 3)) \
       --set sintro.convert_to_mog_step=$((STEPS / 3 - 1)) --set "train.lr_milestones=[$((STEPS / 2))]"
  step "$PY" -c "import json, sys; a, b = (json.load(open(p)) for p in sys.argv[1:]); \
print('member seed 92 against its separate run: KL', a['kl'], b['kl'], 'relative difference', abs(a['kl'] - b['kl']) / abs(b['kl']))" \
       "$run-seeds/seed92/eval.json" "$run/eval.json"
  fi
  run="$WORK/vamp-$precision"
  step mixvae train configs/vampprior/vae_vampprior_dynamic_mnist.yaml "${common[@]}" --out "$run" \
       --set data.name=npz --set data.path="$WORK/binary.npz" --set train.epochs=$EPOCHS --set train.warmup_epochs=1 \
       --set model.prior.components=50 --set eval.ll_samples=100
  step mixvae eval "$run" --set train.device="$DEVICE" --json
  run="$WORK/gamix-$precision"
  step mixvae train configs/gamix/cifar10_32.yaml "${common[@]}" --out "$run" \
       --set data.name=npz --set data.path="$WORK/rgb.npz" --set data.valid_size=100 --set train.epochs=1 --set data.epoch_size=5 --set eval.fid_samples=0
done

rm -rf "$WORK"
echo "== done: status $status"
exit $status
