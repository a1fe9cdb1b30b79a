"""replicate_stats.py REPORT.json: mean and sample s.d. over training seeds, one row per model, then the searched
model against each other model with Welch's t-test.

Rows of one model are named NAME (the pipeline's seed-0 run, e.g. cmpnas-23x) or NAME-seedN (scripts/replicates.sh);
the tier label and the mode suffix are dropped to group them. The compatibility rule (heterogeneous beats
homogeneous) is counted on top-1, as the report does, and on top-10 (the paper's target metric for fashion
retrieval) and mAP@R, because on top-1 it is the closest call.
"""
import json
import math
import re
import statistics
import sys

SEARCHED = "cmpnas"
COLS = [("homogeneous", "top1"), ("heterogeneous", "top1"), ("heterogeneous", "top5"),
        ("heterogeneous", "top10"), ("heterogeneous", "map_at_r"), ("heterogeneous", "tar_at_far_1e-3")]
RULE_METRICS = [("top1", "top-1"), ("top10", "top-10"), ("map_at_r", "mAP@R")]


def betainc(a, b, x):
    """Regularized incomplete beta I_x(a, b) by its continued fraction (modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 400):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return front * f


def welch_p(x, y):
    """Two-sided p of Welch's t-test; None when either side has fewer than two values or no spread."""
    if len(x) < 2 or len(y) < 2:
        return None
    vx, vy = statistics.variance(x) / len(x), statistics.variance(y) / len(y)
    if vx + vy == 0:
        return None
    t = (statistics.mean(x) - statistics.mean(y)) / math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    return betainc(df / 2, 0.5, df / (df + t * t))


def values(qs, side, metric):
    return [100 * q[side][metric] for q in qs]


def main(path):
    report = json.load(open(path))
    groups = {}
    for q in report["query_models"]:
        name = re.sub(r"-(\d+x|bct)", "", re.sub(r"-seed\d+$", "", q["name"]))
        groups.setdefault(name, []).append(q)

    rule_head = " | ".join(f"rule {label}" for _, label in RULE_METRICS)
    print("| model | MMACs | seeds | " + " | ".join(f"{s[:3]}. {m}" for s, m in COLS) + f" | {rule_head} | het. top-1 per seed |")
    print("|---|---:|---:|" + "---:|" * len(COLS) + ":-:|" * len(RULE_METRICS) + "---|")
    for name, qs in groups.items():
        cells = []
        for side, metric in COLS:
            v = values(qs, side, metric)
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(f"{statistics.mean(v):.1f} ± {sd:.1f}")
        rules = [f"{sum(q['heterogeneous'][m] > q['homogeneous'][m] for q in qs)}/{len(qs)}" for m, _ in RULE_METRICS]
        per_seed = ", ".join(f"{v:.1f}" for v in values(qs, "heterogeneous", "top1"))
        print(f"| {name} | {qs[0]['mmacs']:.2f} | {len(qs)} | " + " | ".join(cells + rules) + f" | {per_seed} |")

    searched = groups.get(SEARCHED)
    if not searched:
        return
    print()
    print(f"{SEARCHED} minus each other model, mean difference (Welch's two-sided p):")
    print()
    print("| against | " + " | ".join(f"{s[:3]}. {m}" for s, m in COLS) + " |")
    print("|---|" + "---:|" * len(COLS))
    for name, qs in groups.items():
        if name == SEARCHED:
            continue
        cells = []
        for side, metric in COLS:
            a, b = values(searched, side, metric), values(qs, side, metric)
            p = welch_p(a, b)
            diff = statistics.mean(a) - statistics.mean(b)
            cells.append(f"{diff:+.1f}" + ("" if p is None else f" (p {p:.2f})" if p >= 0.01 else f" (p {p:.3f})" if p >= 0.001 else " (p < 0.001)"))
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
