#!/usr/bin/env bash
# objectives.sh TIER MODEL OBJECTIVE...: retrains a finished pipeline model (its architecture from
# $RUNS/tier-TIER/MODEL/model.json, e.g. MODEL=mobilenetv2-bct) against the pipeline's gallery with each
# compatibility objective (`bct`, `reg`, `bct+reg`, `con`, `supcon`, `rank`, ...) and each seed of SEEDS
# (default "0 1 2 3 4 5 6 7"), then evaluates them all beside the gallery and prints `hetvis-train
# replicate-stats` with BCT alone (the group named after the architecture) as the reference of Welch's tests.
# HETVIS_PRESETS=FILE passes a presets file (the one the pipeline ran with) to every command; RUNS (default
# runs/fm) is the pipeline's output directory; EXTRA="--cls-weight 0 ..." adds query options to every run.
# Results: $RUNS/objectives/tier-TIER/report/ (report.json, report.md, replicate_stats.json, stats.md).
# JOBS (default: the number of cores) trainings run side by side with one libtorch thread each; each logs to
# $RUNS/objectives/tier-TIER/NAME.log. Finished runs are skipped, so an interrupted study resumes.
# TAG (e.g. "-con0.1" beside EXTRA="--con-weight 0.1") is appended to each objective's group name, so runs
# with other weights get their own rows instead of being taken for finished runs of the default weights.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 3 ]; then echo "usage: $0 TIER MODEL OBJECTIVE..." >&2; exit 2; fi
tier=$1; model=$2; shift 2
runs="${RUNS:-runs/fm}"
seeds="${SEEDS:-0 1 2 3 4 5 6 7}"
bin="$root/target/release/hetvis-train"
presets=()
if [ -n "${HETVIS_PRESETS:-}" ]; then presets=(--preset-file "$HETVIS_PRESETS"); fi
out="$runs/objectives/tier-$tier"; mkdir -p "$out"
arch="${model%-bct}"
spec="$out/$arch.spec.json"
python3 -c "import json,sys; json.dump(json.load(open(sys.argv[1]))['spec'], open(sys.argv[2],'w'))" \
  "$runs/tier-$tier/$model/model.json" "$spec"
jobs="${JOBS:-$(nproc)}"
one_thread=()
if [ "$jobs" -gt 1 ]; then one_thread=(OMP_NUM_THREADS=1); fi
export OMP_WAIT_POLICY=PASSIVE
# One training: NAME OBJECTIVE SEED (skipped when finished; resumed from its checkpoint when interrupted).
train_one() {
  local name=$1 objective=$2 seed=$3
  [ -f "$out/$name/model.onnx" ] && return 0
  # shellcheck disable=SC2086 # EXTRA is a list of options
  if ! env "${one_thread[@]}" "$bin" "${presets[@]}" query --gallery "$runs/gallery" --arch "$spec" \
      --objective "$objective" --seed "$seed" ${EXTRA:-} --out "$out/$name" >"$out/$name.log" 2>&1; then
    echo "$name failed: see $out/$name.log" >&2
    return 255
  fi
}
export -f train_one
export out runs spec bin EXTRA
export one_thread_env="${one_thread[*]}" presets_env="${presets[*]}"
dirs=()
lines=()
for objective in "$@"; do
  for s in $seeds; do
    dirs+=("$out/$arch-$objective${TAG:-}-seed$s")
    lines+=("$arch-$objective${TAG:-}-seed$s $objective $s")
  done
done
printf '%s\n' "${lines[@]}" | xargs -r -P "$jobs" -L 1 bash -c \
  'one_thread=($one_thread_env); presets=($presets_env); train_one "$@"' _
"$bin" "${presets[@]}" eval --gallery "$runs/gallery" --query "${dirs[@]}" --out "$out/report" > /dev/null
"$bin" replicate-stats --report "$out/report/report.json" --reference "$arch" \
  --json "$out/report/replicate_stats.json" | tee "$out/report/stats.md"
