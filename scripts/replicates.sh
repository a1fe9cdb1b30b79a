#!/usr/bin/env bash
# replicates.sh TIER SEED...: retrains a finished pipeline tier's BCT models (default: the MobileNetV2 baseline and
# the CMP-NAS winner; MODELS="..." for others) with other training seeds -- same architecture, data subset and
# schedule -- then evaluates them beside the seed-0 runs and prints `hetvis-train replicate-stats` (mean +- s.d. per
# model, the compatibility rule per metric, Welch t-tests of the searched model; also written as JSON beside the
# report). HETVIS_PRESETS=FILE passes a presets file (the one the pipeline ran with) to every command.
# RUNS (default runs/fm) is the pipeline's output directory. Results: $RUNS/seeds/tier-TIER/report/.
# JOBS (default: the number of cores) retrainings run side by side with one libtorch thread each (compact models
# gain nothing from a second thread on CPU); each logs to $RUNS/seeds/tier-TIER/MODEL-seedS.log.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ $# -lt 2 ]; then echo "usage: $0 TIER SEED..." >&2; exit 2; fi
tier=$1; shift
runs="${RUNS:-runs/fm}"
models="${MODELS:-mobilenetv2-bct cmpnas-bct}"
bin="$root/target/release/hetvis-train"
out="$runs/seeds/tier-$tier"; mkdir -p "$out"
jobs="${JOBS:-$(nproc)}"
# One thread for each retraining only, not for the final evaluation.
one_thread=()
if [ "$jobs" -gt 1 ]; then one_thread=(OMP_NUM_THREADS=1); fi
export OMP_WAIT_POLICY=PASSIVE
dirs=()
work=()
for m in $models; do
  src="$runs/tier-$tier/$m"
  python3 -c "import json,sys; json.dump(json.load(open(sys.argv[1]))['spec'], open(sys.argv[2],'w'))" \
    "$src/model.json" "$out/$m.spec.json"
  dirs+=("$src")
  for s in "$@"; do
    work+=("$m $s")
    dirs+=("$out/$m-seed$s")
  done
done
printf '%s\n' "${work[@]}" | env "${one_thread[@]}" xargs -r -P "$jobs" -L 1 sh -c \
  '"$0" query --gallery "$1/gallery" --arch "$2/$3.spec.json" --mode bct --seed "$4" --out "$2/$3-seed$4" \
     > "$2/$3-seed$4.log" 2>&1 || { echo "$3 seed $4 failed: see $2/$3-seed$4.log" >&2; exit 255; }' \
  "$bin" "$runs" "$out"
"$bin" eval --gallery "$runs/gallery" --query "${dirs[@]}" --out "$out/report" > /dev/null
"$bin" replicate-stats --report "$out/report/report.json" --json "$out/report/replicate_stats.json"
