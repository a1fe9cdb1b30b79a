#!/usr/bin/env bash
# replicates.sh TIER SEED...: retrains a finished pipeline tier's BCT models (default: the MobileNetV2 baseline and
# the CMP-NAS winner; MODELS="..." for others) with other training seeds -- same architecture, data subset and
# schedule -- then evaluates them beside the seed-0 runs and prints mean +- s.d. per model.
# RUNS (default runs/fm) is the pipeline's output directory. Results: $RUNS/seeds/tier-TIER/report/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tier=$1; shift
runs="${RUNS:-runs/fm}"
models="${MODELS:-mobilenetv2-bct cmpnas-bct}"
bin="$root/target/release/hetvis-train"
out="$runs/seeds/tier-$tier"; mkdir -p "$out"
export OMP_WAIT_POLICY=PASSIVE
dirs=()
for m in $models; do
  src="$runs/tier-$tier/$m"
  python3 -c "import json,sys; json.dump(json.load(open(sys.argv[1]))['spec'], open(sys.argv[2],'w'))" \
    "$src/model.json" "$out/$m.spec.json"
  dirs+=("$src")
  for s in "$@"; do
    "$bin" query --gallery "$runs/gallery" --arch "$out/$m.spec.json" --mode bct --seed "$s" --out "$out/$m-seed$s"
    dirs+=("$out/$m-seed$s")
  done
done
"$bin" eval --gallery "$runs/gallery" --query "${dirs[@]}" --out "$out/report" > /dev/null
python3 "$root/scripts/replicate_stats.py" "$out/report/report.json"
