//! Small hand-written SVG charts: the search's reward per generation and the paper-style accuracy-vs-MMACs plot.

const W: f64 = 640.0;
const H: f64 = 400.0;
const PAD: f64 = 60.0;

struct Axes {
    x: (f64, f64),
    y: (f64, f64),
    log_x: bool,
}

impl Axes {
    fn fit(xs: &[f64], ys: &[f64], log_x: bool) -> Self {
        let range = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if !lo.is_finite() || !hi.is_finite() {
                (0.0, 1.0)
            } else if (hi - lo).abs() < 1e-12 {
                (lo - 0.5, hi + 0.5)
            } else {
                let m = 0.05 * (hi - lo);
                (lo - m, hi + m)
            }
        };
        let xs: Vec<f64> = if log_x {
            xs.iter().map(|v| v.max(1e-9).ln()).collect()
        } else {
            xs.to_vec()
        };
        Self {
            x: range(&xs),
            y: range(ys),
            log_x,
        }
    }

    fn px(&self, x: f64) -> f64 {
        let x = if self.log_x { x.max(1e-9).ln() } else { x };
        PAD + (x - self.x.0) / (self.x.1 - self.x.0) * (W - 2.0 * PAD)
    }

    fn py(&self, y: f64) -> f64 {
        H - PAD - (y - self.y.0) / (self.y.1 - self.y.0) * (H - 2.0 * PAD)
    }
}

fn frame(title: &str, xlabel: &str, ylabel: &str, a: &Axes) -> String {
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n\
         <line x1=\"{PAD}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
         <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{}</text>\n",
        W / 2.0,
        esc(title),
        H - PAD,
        W - PAD,
        H - PAD,
        H - PAD,
        W / 2.0,
        H - 18.0,
        esc(xlabel),
        H / 2.0,
        H / 2.0,
        esc(ylabel)
    );
    for i in 0..=4 {
        let y = a.y.0 + (a.y.1 - a.y.0) * i as f64 / 4.0;
        s += &format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{:.3}</text>\n",
            PAD - 6.0,
            a.py(y) + 4.0,
            y
        );
        let xv = a.x.0 + (a.x.1 - a.x.0) * i as f64 / 4.0;
        let xv = if a.log_x { xv.exp() } else { xv };
        s += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{:.2}</text>\n",
            a.px(xv),
            H - PAD + 16.0,
            xv
        );
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn polyline(a: &Axes, pts: &[(f64, f64)], color: &str) -> String {
    let p: Vec<String> = pts
        .iter()
        .map(|(x, y)| format!("{:.1},{:.1}", a.px(*x), a.py(*y)))
        .collect();
    format!(
        "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n",
        p.join(" ")
    )
}

fn legend(items: &[(&str, &str)]) -> String {
    items
        .iter()
        .enumerate()
        .map(|(i, (label, color))| {
            let y = PAD + 4.0 + 18.0 * i as f64;
            format!(
                "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
                W - PAD - 150.0,
                y - 10.0,
                W - PAD - 132.0,
                y,
                esc(label)
            )
        })
        .collect()
}

/// Best-so-far and mean reward of each search generation.
pub fn reward_per_generation(per_generation: &[(usize, f64, f64)], reward: &str) -> String {
    let xs: Vec<f64> = per_generation.iter().map(|g| g.0 as f64).collect();
    let ys: Vec<f64> = per_generation.iter().flat_map(|g| [g.1, g.2]).collect();
    let a = Axes::fit(&xs, &ys, false);
    let mut s = frame(
        &format!("Evolutionary search, reward {reward}"),
        "generation",
        "reward",
        &a,
    );
    s += &polyline(
        &a,
        &per_generation
            .iter()
            .map(|g| (g.0 as f64, g.1))
            .collect::<Vec<_>>(),
        "#d62728",
    );
    s += &polyline(
        &a,
        &per_generation
            .iter()
            .map(|g| (g.0 as f64, g.2))
            .collect::<Vec<_>>(),
        "#1f77b4",
    );
    s += &legend(&[("best so far", "#d62728"), ("generation mean", "#1f77b4")]);
    s + "</svg>\n"
}

/// A labelled point of the accuracy-vs-MMACs plot.
pub struct Point {
    pub label: String,
    pub mmacs: f64,
    pub homogeneous: f64,
    pub heterogeneous: f64,
}

/// Paper-Figure style: heterogeneous (filled) and homogeneous (hollow) accuracy of query models against their
/// MMACs (log scale), with the paragon as a horizontal line.
pub fn accuracy_vs_mmacs(points: &[Point], paragon: f64, metric: &str) -> String {
    let xs: Vec<f64> = points.iter().map(|p| p.mmacs).collect();
    let mut ys: Vec<f64> = points
        .iter()
        .flat_map(|p| [p.homogeneous, p.heterogeneous])
        .collect();
    ys.push(paragon);
    let a = Axes::fit(&xs, &ys, true);
    let mut s = frame(
        &format!("{metric} vs query MMACs"),
        "query model MMACs (log)",
        metric,
        &a,
    );
    s += &format!(
        "<line x1=\"{PAD}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#2ca02c\" stroke-dasharray=\"6 4\" stroke-width=\"2\"/>\n",
        a.py(paragon),
        W - PAD
    );
    for p in points {
        let (x, yh, yx) = (a.px(p.mmacs), a.py(p.homogeneous), a.py(p.heterogeneous));
        s += &format!(
            "<line x1=\"{x:.1}\" y1=\"{yh:.1}\" x2=\"{x:.1}\" y2=\"{yx:.1}\" stroke=\"#999\"/>\n"
        );
        s += &format!("<circle cx=\"{x:.1}\" cy=\"{yh:.1}\" r=\"5\" fill=\"white\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\n");
        s += &format!("<circle cx=\"{x:.1}\" cy=\"{yx:.1}\" r=\"5\" fill=\"#d62728\"/>\n");
        s += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>\n",
            x + 7.0,
            yx - 6.0,
            esc(&p.label)
        );
    }
    s += &legend(&[
        ("heterogeneous M(q,g)", "#d62728"),
        ("homogeneous M(q,q)", "#1f77b4"),
        ("paragon M(g,g)", "#2ca02c"),
    ]);
    s + "</svg>\n"
}

/// One coloured series of a scatter plot; labels may be empty.
pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    pub points: Vec<(f64, f64, String)>,
}

/// A scatter plot of labelled points in several series (the study figures); `diagonal` draws y = x, the line
/// the compatibility rule is read against when both axes are accuracies.
pub fn scatter(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
    log_x: bool,
    diagonal: bool,
) -> String {
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .collect();
    let (both, ys_fit) = if diagonal {
        let v: Vec<f64> = xs.iter().chain(&ys).copied().collect();
        (v.clone(), v)
    } else {
        (xs.clone(), ys.clone())
    };
    let a = Axes::fit(&both, &ys_fit, log_x);
    let mut s = frame(title, xlabel, ylabel, &a);
    if diagonal {
        let (lo, hi) = (a.x.0.max(a.y.0), a.x.1.min(a.y.1));
        if lo < hi {
            s += &format!(
                "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#999\" stroke-dasharray=\"4 4\"/>\n",
                a.px(lo),
                a.py(lo),
                a.px(hi),
                a.py(hi)
            );
        }
    }
    for ser in series {
        for (x, y, label) in &ser.points {
            let (px, py) = (a.px(*x), a.py(*y));
            s += &format!(
                "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"4\" fill=\"{}\"/>\n",
                ser.color
            );
            if !label.is_empty() {
                s += &format!(
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>\n",
                    px + 6.0,
                    py - 5.0,
                    esc(label)
                );
            }
        }
    }
    let items: Vec<(&str, &str)> = series.iter().map(|s| (s.name, s.color)).collect();
    s += &legend(&items);
    s + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_svg_with_every_point() {
        let s = reward_per_generation(&[(0, 0.5, 0.4), (1, 0.6, 0.5), (2, 0.6, 0.55)], "R3");
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 2);
        let pts = vec![
            Point {
                label: "a<b".into(),
                mmacs: 1.0,
                homogeneous: 0.5,
                heterogeneous: 0.7,
            },
            Point {
                label: "c".into(),
                mmacs: 5.0,
                homogeneous: 0.6,
                heterogeneous: 0.75,
            },
        ];
        let s = accuracy_vs_mmacs(&pts, 0.8, "top-1");
        assert_eq!(s.matches("<circle").count(), 4);
        assert!(s.contains("a&lt;b"));
        let series = [
            Series {
                name: "bct",
                color: "#d62728",
                points: vec![(0.5, 0.7, "x".into()), (0.6, 0.8, String::new())],
            },
            Series {
                name: "vanilla",
                color: "#1f77b4",
                points: vec![(0.55, 0.1, String::new())],
            },
        ];
        let s = scatter("t", "hom", "het", &series, false, true);
        assert_eq!(s.matches("<circle").count(), 3);
        assert_eq!(s.matches("stroke-dasharray").count(), 1);
        assert!(s.trim_end().ends_with("</svg>"));
    }
}
