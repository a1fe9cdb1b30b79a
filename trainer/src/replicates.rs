//! Seed replicates of a tier's models (`scripts/replicates.sh`): mean and sample standard deviation per model
//! over training seeds, the compatibility rule counted per metric, and the searched model against every other
//! model with Welch's two-sided t-test (Student's t distribution from `statrs`).
//!
//! Rows of one model are named `NAME` (the pipeline's seed-0 run, e.g. `cmpnas-23x`) or `NAME-seedN`; the tier
//! label and the `-bct` mode suffix are dropped to group them.

use std::collections::BTreeMap;

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::eval::{metric_of, Metrics, QueryResult, Report};
use crate::preset::RewardMetric as Metric;

/// The group whose rows are compared with every other group, by default.
pub const SEARCHED: &str = "cmpnas";

/// The columns reported: (side, metric).
pub const COLUMNS: [(Side, Metric); 6] = [
    (Side::Homogeneous, Metric::Top1),
    (Side::Heterogeneous, Metric::Top1),
    (Side::Heterogeneous, Metric::Top5),
    (Side::Heterogeneous, Metric::Top10),
    (Side::Heterogeneous, Metric::MapAtR),
    (Side::Heterogeneous, Metric::TarAtFar1e3),
];

/// The metrics on which the compatibility rule (heterogeneous beats homogeneous) is counted: top-1 as the
/// report does, top-10 (the paper's fashion metric) and mAP@R.
pub const RULE_METRICS: [Metric; 3] = [Metric::Top1, Metric::Top10, Metric::MapAtR];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Homogeneous,
    Heterogeneous,
}

/// How a metric is named in table headers.
fn metric_label(m: Metric) -> &'static str {
    match m {
        Metric::Top1 => "top-1",
        Metric::Top5 => "top-5",
        Metric::Top10 => "top-10",
        Metric::MapAtR => "mAP@R",
        Metric::TarAtFar1e3 => "TAR@1e-3",
    }
}

impl Side {
    fn of(self, q: &QueryResult) -> &Metrics {
        match self {
            Side::Homogeneous => &q.homogeneous,
            Side::Heterogeneous => &q.heterogeneous,
        }
    }

    fn short(self) -> &'static str {
        match self {
            Side::Homogeneous => "hom.",
            Side::Heterogeneous => "het.",
        }
    }
}

/// Mean and sample standard deviation, in percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanSd {
    pub mean: f64,
    pub sd: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelStats {
    pub model: String,
    pub mmacs: f64,
    pub seeds: usize,
    /// One entry per [`COLUMNS`] entry.
    pub columns: Vec<MeanSd>,
    /// Seeds where the rule holds, per [`RULE_METRICS`] entry.
    pub rule: Vec<usize>,
    /// Heterogeneous top-1 of each seed, in percent.
    pub het_top1_per_seed: Vec<f64>,
    /// Gap to the paragon (paragon minus heterogeneous, points) on top-1, top-10 and mAP@R.
    pub gap: Vec<MeanSd>,
    /// Hubness of the heterogeneous search: skewness and maximum of N10 (absent in older reports).
    pub hub_skewness: Option<MeanSd>,
    pub hub_max: Option<MeanSd>,
}

/// The metrics of the gap columns.
pub const GAP_METRICS: [Metric; 3] = [Metric::Top1, Metric::Top10, Metric::MapAtR];

/// The searched model minus another, per column, with Welch's two-sided p (`None` where a side has fewer than
/// two seeds or neither has any spread).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub against: String,
    pub difference: Vec<f64>,
    pub p: Vec<Option<f64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicateStats {
    pub models: Vec<ModelStats>,
    /// The group compared with every other one.
    pub reference: String,
    pub searched_vs: Vec<Comparison>,
}

/// The group a report row belongs to: `cmpnas-23x-seed3` -> `cmpnas`, `mobilenetv2-80x-bct` -> `mobilenetv2`.
pub fn group_name(name: &str) -> String {
    let base = match name.rsplit_once("-seed") {
        Some((b, s)) if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) => b,
        _ => name,
    };
    base.split('-')
        .filter(|part| {
            *part != "bct"
                && !(part.len() > 1
                    && part.ends_with('x')
                    && part[..part.len() - 1].bytes().all(|c| c.is_ascii_digit()))
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sample variance (n - 1); 0 for fewer than two values.
fn variance(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64
}

/// Two-sided p of Welch's unequal-variance t-test.
pub fn welch_p(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() < 2 || y.len() < 2 {
        return None;
    }
    let (vx, vy) = (variance(x) / x.len() as f64, variance(y) / y.len() as f64);
    if vx + vy == 0.0 {
        return None;
    }
    let t = (mean(x) - mean(y)) / (vx + vy).sqrt();
    let df =
        (vx + vy).powi(2) / (vx.powi(2) / (x.len() - 1) as f64 + vy.powi(2) / (y.len() - 1) as f64);
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    Some(2.0 * dist.cdf(-t.abs()))
}

fn values(rows: &[&QueryResult], side: Side, metric: Metric) -> Vec<f64> {
    rows.iter()
        .map(|q| 100.0 * metric_of(side.of(q), metric))
        .collect()
}

fn mean_sd(v: &[f64]) -> MeanSd {
    MeanSd {
        mean: mean(v),
        sd: variance(v).sqrt(),
    }
}

/// Seed statistics of every model group of `report`, and `reference` (a group name, e.g. [`SEARCHED`]) minus
/// every other group with Welch's test.
pub fn compute(report: &Report, reference: &str) -> ReplicateStats {
    // Groups in the order they first appear in the report.
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<String, Vec<&QueryResult>> = BTreeMap::new();
    for q in &report.query_models {
        let g = group_name(&q.name);
        if !groups.contains_key(&g) {
            order.push(g.clone());
        }
        groups.entry(g).or_default().push(q);
    }
    let models = order
        .iter()
        .map(|name| {
            let rows = &groups[name];
            ModelStats {
                model: name.clone(),
                mmacs: rows[0].mmacs,
                seeds: rows.len(),
                columns: COLUMNS
                    .iter()
                    .map(|&(side, metric)| {
                        let v = values(rows, side, metric);
                        MeanSd {
                            mean: mean(&v),
                            sd: variance(&v).sqrt(),
                        }
                    })
                    .collect(),
                rule: RULE_METRICS
                    .iter()
                    .map(|m| {
                        rows.iter()
                            .filter(|q| {
                                metric_of(&q.heterogeneous, *m) > metric_of(&q.homogeneous, *m)
                            })
                            .count()
                    })
                    .collect(),
                het_top1_per_seed: values(rows, Side::Heterogeneous, Metric::Top1),
                gap: GAP_METRICS
                    .iter()
                    .map(|&m| {
                        let paragon = 100.0 * metric_of(&report.paragon.metrics, m);
                        let v: Vec<f64> = values(rows, Side::Heterogeneous, m)
                            .iter()
                            .map(|h| paragon - h)
                            .collect();
                        mean_sd(&v)
                    })
                    .collect(),
                hub_skewness: hubness(rows, |h| h.skewness),
                hub_max: hubness(rows, |h| f64::from(h.max)),
            }
        })
        .collect();
    let searched_vs = match groups.get(reference) {
        None => Vec::new(),
        Some(searched) => order
            .iter()
            .filter(|name| *name != reference)
            .map(|name| {
                let other = &groups[name];
                let (difference, p) = COLUMNS
                    .iter()
                    .map(|&(side, metric)| {
                        let (a, b) = (values(searched, side, metric), values(other, side, metric));
                        (mean(&a) - mean(&b), welch_p(&a, &b))
                    })
                    .unzip();
                Comparison {
                    against: name.clone(),
                    difference,
                    p,
                }
            })
            .collect(),
    };
    ReplicateStats {
        models,
        reference: reference.to_owned(),
        searched_vs,
    }
}

/// Mean and s.d. of a hubness figure of the heterogeneous searches, when every row has it.
fn hubness(
    rows: &[&QueryResult],
    f: impl Fn(&hetvis_models::metrics::Hubness) -> f64,
) -> Option<MeanSd> {
    let v: Option<Vec<f64>> = rows
        .iter()
        .map(|q| q.heterogeneous.hubness.as_ref().map(&f))
        .collect();
    v.map(|v| mean_sd(&v))
}

fn p_text(p: Option<f64>) -> String {
    match p {
        None => String::new(),
        Some(p) if p >= 0.01 => format!(" (p {p:.2})"),
        Some(p) if p >= 0.001 => format!(" (p {p:.3})"),
        Some(_) => " (p < 0.001)".into(),
    }
}

pub fn markdown(s: &ReplicateStats) -> String {
    let heads: Vec<String> = COLUMNS
        .iter()
        .map(|(side, m)| format!("{} {}", side.short(), metric_label(*m)))
        .collect();
    let rules: Vec<String> = RULE_METRICS
        .iter()
        .map(|m| format!("rule {}", metric_label(*m)))
        .collect();
    let mut out = format!(
        "| model | MMACs | seeds | {} | {} | het. top-1 per seed |\n|---|---:|---:|{}{}---|\n",
        heads.join(" | "),
        rules.join(" | "),
        "---:|".repeat(COLUMNS.len()),
        ":-:|".repeat(RULE_METRICS.len()),
    );
    for m in &s.models {
        let cells: Vec<String> = m
            .columns
            .iter()
            .map(|c| format!("{:.1} ± {:.1}", c.mean, c.sd))
            .chain(m.rule.iter().map(|r| format!("{r}/{}", m.seeds)))
            .collect();
        let per_seed: Vec<String> = m
            .het_top1_per_seed
            .iter()
            .map(|v| format!("{v:.1}"))
            .collect();
        out += &format!(
            "| {} | {:.2} | {} | {} | {} |\n",
            m.model,
            m.mmacs,
            m.seeds,
            cells.join(" | "),
            per_seed.join(", ")
        );
    }
    let sd = |c: &MeanSd| format!("{:.1} ± {:.1}", c.mean, c.sd);
    let gap_heads: Vec<String> = GAP_METRICS
        .iter()
        .map(|m| format!("gap {}", metric_label(*m)))
        .collect();
    out += &format!(
        "\nGap to the paragon (points, paragon minus heterogeneous) and hubness of the heterogeneous search \
         (N10: how often one gallery image is among the queries' top-10):\n\n| model | {} | hub skewness | hub max |\n|---|{}---:|---:|\n",
        gap_heads.join(" | "),
        "---:|".repeat(GAP_METRICS.len())
    );
    for m in &s.models {
        let gaps: Vec<String> = m.gap.iter().map(sd).collect();
        let hub = |c: &Option<MeanSd>| c.as_ref().map_or("-".into(), sd);
        out += &format!(
            "| {} | {} | {} | {} |\n",
            m.model,
            gaps.join(" | "),
            hub(&m.hub_skewness),
            hub(&m.hub_max)
        );
    }
    if !s.searched_vs.is_empty() {
        out += &format!(
            "\n{} minus each other model, mean difference (Welch's two-sided p):\n\n| against | {} |\n|---|{}\n",
            s.reference,
            heads.join(" | "),
            "---:|".repeat(COLUMNS.len())
        );
        for c in &s.searched_vs {
            let cells: Vec<String> = c
                .difference
                .iter()
                .zip(&c.p)
                .map(|(d, p)| format!("{d:+.1}{}", p_text(*p)))
                .collect();
            out += &format!("| {} | {} |\n", c.against, cells.join(" | "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Paragon;

    #[test]
    fn welch_matches_scipy() {
        // scipy.stats.ttest_ind(a, b, equal_var=False) on Wikipedia's Welch example: t = -2.4554,
        // df = 24.99, p = 0.021378; and on 4 + 5 seeds: t = 2.5105, df = 6.89, p = 0.040870.
        let a = [
            27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7,
            21.4,
        ];
        let b = [
            27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5,
            24.4,
        ];
        let p = welch_p(&a, &b).unwrap();
        assert!((p - 0.021378001).abs() < 1e-6, "p = {p}");
        let p = welch_p(&[80.1, 79.2, 81.0, 78.4], &[78.0, 77.1, 79.5, 76.0, 77.7]).unwrap();
        assert!((p - 0.040870239).abs() < 1e-6, "p = {p}");
        // Symmetric, and undefined without two values a side or without any spread.
        assert!((welch_p(&b, &a).unwrap() - welch_p(&a, &b).unwrap()).abs() < 1e-12);
        assert_eq!(welch_p(&[1.0], &b), None);
        assert_eq!(welch_p(&[1.0, 1.0], &[2.0, 2.0]), None);
    }

    #[test]
    fn rows_group_by_model_without_tier_mode_or_seed() {
        assert_eq!(group_name("cmpnas-23x"), "cmpnas");
        assert_eq!(group_name("cmpnas-bct-seed3"), "cmpnas");
        assert_eq!(group_name("mobilenetv2-80x-bct-seed12"), "mobilenetv2");
        assert_eq!(
            group_name("mobilenetv2-independent"),
            "mobilenetv2-independent"
        );
        // "seed" without digits is part of a name.
        assert_eq!(group_name("model-seedless"), "model-seedless");
    }

    fn metrics(top1: f64) -> Metrics {
        Metrics {
            top1,
            top5: top1,
            top10: top1,
            map_at_r: top1,
            tar_at_far_1e_2: top1,
            tar_at_far_1e_3: top1,
            hubness: None,
        }
    }

    fn row(name: &str, hom: f64, het: f64) -> QueryResult {
        QueryResult {
            name: name.into(),
            mmacs: 1.5,
            mmacs_ratio: 27.0,
            mode: "bct".into(),
            compatible_id: true,
            homogeneous: metrics(hom),
            heterogeneous: metrics(het),
            gap_to_paragon: Default::default(),
        }
    }

    #[test]
    fn stats_count_the_rule_and_compare_the_searched_model() {
        let report = Report {
            dataset: "d".into(),
            protocol: "p".into(),
            paragon: Paragon {
                name: "g".into(),
                mmacs: 40.0,
                metrics: metrics(0.9),
            },
            query_models: vec![
                row("mobilenetv2-23x", 0.70, 0.80),
                row("cmpnas-23x", 0.80, 0.82),
                row("mobilenetv2-bct-seed1", 0.72, 0.70),
                row("cmpnas-bct-seed1", 0.82, 0.86),
            ],
        };
        let s = compute(&report, SEARCHED);
        let names: Vec<&str> = s.models.iter().map(|m| m.model.as_str()).collect();
        assert_eq!(names, ["mobilenetv2", "cmpnas"]);
        let mnv2 = &s.models[0];
        assert_eq!(mnv2.seeds, 2);
        assert!((mnv2.columns[1].mean - 75.0).abs() < 1e-9);
        assert!((mnv2.columns[1].sd - 50f64.sqrt()).abs() < 1e-9);
        assert_eq!(mnv2.rule, [1, 1, 1]);
        assert_eq!(s.models[1].rule, [2, 2, 2]);
        assert_eq!(s.searched_vs.len(), 1);
        assert!((s.searched_vs[0].difference[1] - 9.0).abs() < 1e-9);
        assert!(s.searched_vs[0].p[1].is_some_and(|p| p > 0.0 && p < 1.0));
        // Gap to the paragon (90): 10 and 20 points on top-1 for the two mobilenetv2 seeds.
        assert!((mnv2.gap[0].mean - 15.0).abs() < 1e-9, "{:?}", mnv2.gap);
        assert!(mnv2.hub_skewness.is_none());
        let md = markdown(&s);
        assert!(md.contains("| cmpnas | 1.50 | 2 |"), "{md}");
        assert!(md.contains("| mobilenetv2 | +"), "{md}");
        assert!(md.contains("| mobilenetv2 | 15.0 ± 7.1 |"), "{md}");

        // Another reference: mobilenetv2 minus cmpnas.
        let s = compute(&report, "mobilenetv2");
        assert_eq!(s.searched_vs[0].against, "cmpnas");
        assert!((s.searched_vs[0].difference[1] + 9.0).abs() < 1e-9);
        assert!(markdown(&s).contains("mobilenetv2 minus each other model"));
    }
}
