#!/usr/bin/env bash
# The quality study of QUALITY.md (issue 10) in one command: HSPMN language models trained on tiny
# Shakespeare (data/tinyshakespeare.txt, nanoGPT's 90 / 10 split: --val-fraction 0.1) at several rho,
# each scored on the whole held-out text (hspmn eval), with a 300-byte sample, then the table.
#
#   ci/quality.sh                the study on a GPU machine: nanoGPT's "baby GPT" recipe (6 layers, width
#                                384, 6 heads and 6 kv heads, 5,000 steps, lr 1e-3, warm-up 100, cosine to
#                                1e-4, AdamW beta2 0.99, dropout 0.2), rho 1.0 0.5 0.2 0.1 with threshold
#                                routing, at context 256 / batch 64 (seeds 1 and 2) and context 1,024 /
#                                batch 16 (seed 1)
#   ci/quality.sh --cpu          the reduced study on the CPU: 4 layers, width 128, context 64, batch 12,
#                                2,000 steps, dropout 0, seed 1 (a few minutes per run on two cores)
#   ci/quality.sh --timing       the step-time goal instead: short runs of rho 0.2 and rho 1.0 at context
#                                256 (batch 64), 1,024 (batch 16) and 4,096 (batch 4), the same 16,384 tokens
#                                per step, one at a time; ms/step of each, the ratio (timing.json, timing.md)
#                                and what a 5,000-step run would take
#   ci/quality.sh --table        only (re)build the table from the run folders already there: QUALITY.md
#                                between its markers, and the SVG learning curves copied into quality/
#   ci/quality.sh --timing --study   both, timing first, in one call under one deadline
#   (--cpu combines with each.)
#
# Environment (defaults for the GPU; --cpu's in brackets):
#   QUALITY_PLAN="256:64:1,2 1024:16:1,2" context:batch:seeds of each group ["64:12:1"]
#   QUALITY_RHOS="1.0 0.5 0.2 0.1"        rho of each run
#   QUALITY_ONLY=GLOB                     only runs whose name matches (names: c256-b64-r0.2-s1)
#   QUALITY_STEPS=5000 [2000]             optimizer steps; QUALITY_WARMUP=100 warm-up steps
#   QUALITY_LAYERS=6 QUALITY_DIM=384 QUALITY_HEADS=6 QUALITY_KV_HEADS=6   [4, 128, 4, 2]
#   QUALITY_LR=1e-3 QUALITY_MIN_LR_RATIO=0.1 QUALITY_BETA2=0.99 QUALITY_DROPOUT=0.2 [0]
#   QUALITY_EVAL_EVERY=50 [200]           validation (8 batches) during training: the curves, best.safetensors
#   QUALITY_EARLY_STOP=10 [0]             stop a run once this many validations in a row miss its best
#                                         (hspmn train --early-stop; 0: train every step)
#   QUALITY_SAVE_EVERY=1000               checkpoint period (a run stopped at the deadline is scored there)
#   QUALITY_TRAIN_ARGS="..."              more `hspmn train` options for every run (e.g. router settings)
#   QUALITY_JOBS=8 [1]                    runs trained at the same time (on the one GPU, or sharing the cores);
#                                         their tok/s and ms/step then measure a shared device: --timing runs
#                                         alone for clean step times
#   QUALITY_DEADLINE_S                    stop training this many seconds after the start (runs not finished
#                                         are scored at their last checkpoint and marked partial); default 540
#                                         when $OUT is set (the device machine's 10-minute calls), else none
#   QUALITY_DIR=build-gpu/quality [build/quality-cpu]   where the run folders go (one per run)
#   QUALITY_TIMING_STEPS=60 [20], QUALITY_TIMING_PLAN="256:64 1024:16 4096:4" ["64:12 1024:1"] (context:batch;
#                                         1,024 is there to size the study's calls, not for the goal)
#   HSPMN_LIB=path/to/libhspmn.so         the CUDA-built library (default: build it in build-gpu as ci/gpu.sh does)
#   QUALITY_BUILD=0                       --cpu: use the jar already built instead of rebuilding it
#   QUALITY_BACKEND=cuda                  the GPU path's --backend (cpu only to try the .carry plumbing without a GPU)
# The GPU path runs Java from .carry/ (ci/pack-carry.sh, sent with the device tool's carry); the CPU path
# builds the jar (ci/build-jar.sh). A run folder that holds a finished run is kept and not trained again;
# one with a checkpoint but unfinished is resumed (--resume). With $OUT set, the run folders (checkpoints
# left out) are packed into $OUT/quality.tgz and the table is copied to $OUT/quality-table.md.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$SECONDS

mode=gpu
action=study
do_timing=0
do_study=0
for a in "$@"; do
  case "$a" in
    --cpu) mode=cpu ;;
    --timing) do_timing=1 ;;
    --study) do_study=1 ;;
    --table) action=table ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument '$a' (ci/quality.sh --help)" >&2; exit 2 ;;
  esac
done
[[ $do_timing == 0 ]] && do_study=1
if [[ $action != table ]]; then
  action=""
  [[ $do_timing == 1 ]] && action=timing
  [[ $do_study == 1 ]] && action="${action:+$action+}study"
fi

# setting NAME GPU CPU: $QUALITY_NAME when set, else the mode's default
setting() {
  local v="QUALITY_$1"
  if [[ -n ${!v:-} ]]; then echo "${!v}"; elif [[ $mode == gpu ]]; then echo "$2"; else echo "$3"; fi
}
plan=$(setting PLAN "256:64:1,2 1024:16:1,2" "64:12:1")
steps=$(setting STEPS 5000 2000)
layers=$(setting LAYERS 6 4) dim=$(setting DIM 384 128) heads=$(setting HEADS 6 4) kv=$(setting KV_HEADS 6 2)
dropout=$(setting DROPOUT 0.2 0)
eval_every=$(setting EVAL_EVERY 50 200)
early_stop=$(setting EARLY_STOP 10 0)
jobs=$(setting JOBS 8 1)
root=$(setting DIR build-gpu/quality build/quality-cpu)
timing_steps=$(setting TIMING_STEPS 60 20)
timing_plan=$(setting TIMING_PLAN "256:64 1024:16 4096:4" "64:12 1024:1")
backend=cpu
[[ $mode == gpu ]] && backend=${QUALITY_BACKEND:-cuda}
rhos=${QUALITY_RHOS:-"1.0 0.5 0.2 0.1"}
warmup=${QUALITY_WARMUP:-100}
lr=${QUALITY_LR:-1e-3}
min_lr_ratio=${QUALITY_MIN_LR_RATIO:-0.1}
beta2=${QUALITY_BETA2:-0.99}
save_every=${QUALITY_SAVE_EVERY:-1000}
deadline=${QUALITY_DEADLINE_S:-}
[[ -z $deadline && -n ${OUT:-} ]] && deadline=540
reserve=${QUALITY_RESERVE_S:-45}
data=data/tinyshakespeare.txt
py=$(command -v python3 || true)
[[ -z $py && -x .venv/bin/python ]] && py=.venv/bin/python
mkdir -p "$root"
log="$root/quality.log"

say() { echo "[quality $(date -u +%H:%M:%S)] $*" | tee -a "$log"; }

table() {
  local what=$1
  shift
  "$py" ci/quality_table.py "$what" --root "$root" "$@"
}

if [[ $action == table ]]; then
  table study --section "$mode" --markdown "$root/quality-table.md" --update QUALITY.md --svg-dir "quality/$mode" || exit 1
  if [[ -d $root/timing ]]; then
    table timing --section "timing-$mode" --markdown "$root/timing/timing.md" --update QUALITY.md --study-steps "$steps" || exit 1
  fi
  exit 0
fi

# ---- Java and the library ------------------------------------------------------------------------
if [[ $mode == gpu ]]; then
  lib=${HSPMN_LIB:-}
  if [[ -z $lib ]]; then
    say "building the CUDA library in build-gpu (HSPMN_LIB names a built one instead)"
    if ! { cmake -S native -B build-gpu -DCMAKE_BUILD_TYPE=Release -DHSPMN_CUDA=ON "-DHSPMN_CUDA_ARCHS=${HSPMN_CUDA_ARCHS:-90}" \
             "-DHSPMN_PYTHON=${HSPMN_PYTHON:-python3}" && cmake --build build-gpu -j "$(nproc)" --target hspmn; } \
           >"$root/build.log" 2>&1; then
      tail -30 "$root/build.log"; say "the library did not build (log: $root/build.log)"; exit 1
    fi
    lib=build-gpu/libhspmn.so
  fi
  lib=$(readlink -f "$lib")
  source ci/carry-env.sh
  java_cmd=("$CARRY_JAVA" --enable-native-access=ALL-UNNAMED "-Dhspmn.library.path=$lib" -cp "$CARRY_CP" io.hspmn.cli.Main)
  device=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  device=${device:-unknown GPU (no nvidia-smi)}
else
  if [[ ${QUALITY_BUILD:-1} == 0 && -f java/hspmn-app/target/hspmn-app-0.1.0-SNAPSHOT.jar ]]; then
    source ci/java-home.sh || exit 1
    HSPMN_CP="java/hspmn-app/target/hspmn-app-0.1.0-SNAPSHOT.jar:java/hspmn-app/target/lib/*"
  else
    source ci/build-jar.sh || exit 1
  fi
  java_cmd=("$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -cp "$HSPMN_CP" io.hspmn.cli.Main)
  device="CPU: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores"
fi
hspmn() { "${java_cmd[@]}" "$@"; }
threads=0
[[ $mode == cpu ]] && threads=$(( $(nproc) / jobs > 0 ? $(nproc) / jobs : 1 ))

# dropout arrives with issue 10's dropout work; a build without it trains without, and says so
dropout_args=()
if hspmn train --help 2>/dev/null | grep -q -- '--dropout'; then
  dropout_args=(--dropout "$dropout")
elif [[ $dropout != 0 && $dropout != 0.0 ]]; then
  say "WARNING: this build's 'hspmn train' has no --dropout: the runs train WITHOUT dropout (asked: $dropout)"
  dropout=none
fi
read -r -a extra <<<"${QUALITY_TRAIN_ARGS:-}"

# seconds left before the deadline, less what scoring and packing need; empty when there is no deadline
remaining() {
  [[ -z $deadline ]] && return 0
  echo $(( deadline - reserve - (SECONDS - start) ))
}

json_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

# run_one NAME CONTEXT BATCH RHO SEED STEPS KIND: trains (or resumes), scores and samples one run
run_one() {
  local name=$1 ctx=$2 batch=$3 rho=$4 seed=$5 nsteps=$6 kind=$7
  local dir="$root/$kind/$name" t0=$SECONDS rc=0 left
  mkdir -p "$dir"
  if [[ -f $dir/train.done ]]; then
    say "$name: already trained"
  else
    local args=(train --out "$dir" --backend "$backend" --threads "$threads")
    if [[ -f $dir/checkpoint.safetensors ]]; then
      say "$name: resuming"
      args+=(--resume)
      [[ $kind != timing ]] && args+=(--keep-best)
    else
      rm -f "$dir"/metrics.jsonl "$dir"/report.html "$dir"/train.log
      args+=(--data "$data" --val-fraction 0.1 --layers "$layers" --dim "$dim" --heads "$heads" --kv-heads "$kv"
             --seq-len "$ctx" --batch "$batch" --steps "$nsteps" --lr "$lr" --warmup "$warmup" --min-lr-ratio "$min_lr_ratio"
             --beta2 "$beta2" --routing threshold --rho "$rho" --seed "$seed" "${dropout_args[@]}" "${extra[@]}")
      if [[ $kind == timing ]]; then
        # the aux target at rho from the first step (no anneal from 0.8), so a short run routes near rho
        args+=(--aux-warmup 0 --eval-every 0 --eval-batches 1 --save-every 0)
      else
        # the best validation's weights are kept (best.safetensors) and scored, as nanoGPT keeps only its best:
        # on 1 MB of text these models overfit long before 5,000 steps, so a run whose validation has not
        # improved for $early_stop evaluations stops there (the schedule still spans $nsteps steps)
        args+=(--eval-every "$eval_every" --eval-batches 8 --save-every "$save_every" --keep-best --early-stop "$early_stop")
      fi
      say "$name: training ($nsteps steps, context $ctx, batch $batch, rho $rho, seed $seed)"
    fi
    left=$(remaining)
    if [[ -n $left && $left -le 5 ]]; then
      say "$name: skipped, the deadline has come"
      return 0
    fi
    if [[ -n $left ]]; then
      timeout -s TERM -k 10 "$left" "${java_cmd[@]}" "${args[@]}" >>"$dir/train.log" 2>&1
    else
      hspmn "${args[@]}" >>"$dir/train.log" 2>&1
    fi
    rc=$?
    if [[ $rc -eq 0 ]]; then
      touch "$dir/train.done"
    elif [[ $rc -eq 124 || $rc -eq 137 || $rc -eq 143 ]]; then
      say "$name: stopped at the deadline (rc $rc); scored at its last checkpoint"
    else
      say "$name: training failed (rc $rc): $(tail -2 "$dir/train.log" | tr '\n' ' ')"
    fi
  fi
  if [[ $kind != timing && ( -f $dir/checkpoint.safetensors || -f $dir/best.safetensors ) ]]; then
    local scored=$dir/checkpoint.safetensors
    [[ -f $dir/best.safetensors ]] && scored=$dir/best.safetensors
    hspmn eval --ckpt "$scored" --backend "$backend" --threads "$threads" --json "$dir/eval.json" >"$dir/eval.log" 2>&1 \
      || say "$name: eval failed: $(tail -2 "$dir/eval.log" | tr '\n' ' ')"
    hspmn sample --ckpt "$scored" --backend "$backend" --threads "$threads" --prompt $'\n' --max-new 300 >"$dir/sample.txt" \
      2>"$dir/sample.log" || say "$name: sample failed: $(tail -2 "$dir/sample.log" | tr '\n' ' ')"
  fi
  {
    printf '{"name": %s, "context": %s, "batch": %s, "rho": %s, "seed": %s, "steps": %s, "kind": %s,\n' \
      "$(json_str "$name")" "$ctx" "$batch" "$rho" "$seed" "$nsteps" "$(json_str "$kind")"
    printf ' "layers": %s, "dim": %s, "heads": %s, "kv_heads": %s, "lr": %s, "warmup": %s, "min_lr_ratio": %s, "beta2": %s,\n' \
      "$layers" "$dim" "$heads" "$kv" "$(json_str "$lr")" "$warmup" "$min_lr_ratio" "$beta2"
    printf ' "dropout": %s, "extra_args": %s, "jobs": %s, "backend": %s, "device": %s, "date": %s,\n' \
      "$(json_str "$dropout")" "$(json_str "${QUALITY_TRAIN_ARGS:-}")" "$jobs" "$(json_str "$backend")" \
      "$(json_str "$device")" "$(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)")"
    printf ' "train_rc": %s, "finished": %s, "wall_s": %s}\n' "$rc" "$([[ -f $dir/train.done ]] && echo true || echo false)" \
      "$((SECONDS - t0))"
  } >"$dir/run.json"
  local bpb=""
  [[ -f $dir/eval.json ]] && bpb=$(grep -m1 '"bits_per_byte"' "$dir/eval.json" | sed 's/[^0-9.]//g')
  say "$name: done in $((SECONDS - t0)) s${bpb:+, validation $bpb bits/byte}"
}

# ---- the runs --------------------------------------------------------------------------------------
say "mode $mode ($device), action $action, root $root, jobs $jobs${deadline:+, deadline ${deadline} s}"
status=0
if [[ $do_timing == 1 ]]; then
  # one at a time: a step's time is only meaningful with the device to itself
  for g in $timing_plan; do
    IFS=: read -r ctx batch <<<"$g"
    for rho in 0.2 1.0; do
      run_one "c$ctx-b$batch-r$rho" "$ctx" "$batch" "$rho" 1 "$timing_steps" timing
    done
  done
  table timing --section "timing-$mode" --markdown "$root/timing/timing.md" --json "$root/timing/timing.json" \
    --study-steps "$steps" || status=1
  [[ -f $root/timing/timing.md ]] && cat "$root/timing/timing.md"
fi
if [[ $do_study == 1 ]]; then
  running=0
  for g in $plan; do
    IFS=: read -r ctx batch seeds <<<"$g"
    for rho in $rhos; do
      for seed in ${seeds//,/ }; do
        name="c$ctx-b$batch-r$rho-s$seed"
        # shellcheck disable=SC2053
        [[ -n ${QUALITY_ONLY:-} && $name != ${QUALITY_ONLY} ]] && continue
        if (( running >= jobs )); then
          wait -n
          running=$((running - 1))
        fi
        run_one "$name" "$ctx" "$batch" "$rho" "$seed" "$steps" runs &
        running=$((running + 1))
      done
    done
  done
  wait
  table study --section "$mode" --markdown "$root/quality-table.md" || status=1
  [[ -f $root/quality-table.md ]] && cat "$root/quality-table.md"
fi

if [[ -n ${OUT:-} ]]; then
  [[ -f $root/quality-table.md ]] && cp "$root/quality-table.md" "$OUT/quality-table.md"
  [[ -f $root/timing/timing.md ]] && cp "$root/timing/timing.md" "$OUT/quality-timing.md"
  tar -czf "$OUT/quality.tgz" --exclude='*.safetensors' --exclude='*.tmp' -C "$(dirname "$root")" "$(basename "$root")"
  say "packed $OUT/quality.tgz ($(du -h "$OUT/quality.tgz" | cut -f1)); here: tar -xzf quality.tgz -C $(dirname "$root") &&" \
      "ci/quality.sh$([[ $mode == cpu ]] && echo ' --cpu') --table"
fi
say "finished in $((SECONDS - start)) s"
exit "$status"
