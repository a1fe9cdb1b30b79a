"""replicate_stats.py REPORT.json: mean and sample s.d. over training seeds, one row per model.

Rows of one model are named NAME (the pipeline's seed-0 run, e.g. cmpnas-23x) or NAME-seedN (scripts/replicates.sh);
the tier label and the mode suffix are dropped to group them.
"""
import json
import re
import statistics
import sys

report = json.load(open(sys.argv[1]))
groups = {}
for q in report["query_models"]:
    name = re.sub(r"-(\d+x|bct)", "", re.sub(r"-seed\d+$", "", q["name"]))
    groups.setdefault(name, []).append(q)
cols = [("homogeneous", "top1"), ("heterogeneous", "top1"), ("heterogeneous", "top5"),
        ("heterogeneous", "top10"), ("heterogeneous", "map_at_r"), ("heterogeneous", "tar_at_far_1e-3")]
print("| model | MMACs | seeds | " + " | ".join(f"{s[:3]}. {m}" for s, m in cols) + " | rule holds | het. top-1 per seed |")
print("|---|---:|---:|" + "---:|" * len(cols) + ":-:|---|")
for name, qs in groups.items():
    cells = []
    for side, metric in cols:
        v = [100 * q[side][metric] for q in qs]
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        cells.append(f"{statistics.mean(v):.1f} ± {sd:.1f}")
    rule = sum(q["heterogeneous"]["top1"] > q["homogeneous"]["top1"] for q in qs)
    per_seed = ", ".join(f"{100 * q['heterogeneous']['top1']:.1f}" for q in qs)
    print(f"| {name} | {qs[0]['mmacs']:.2f} | {len(qs)} | " + " | ".join(cells) + f" | {rule}/{len(qs)} | {per_seed} |")
