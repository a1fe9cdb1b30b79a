//! A strict little parser for the Prometheus text exposition format, enough to check a `/metrics` page: every
//! line is blank, `# HELP`/`# TYPE`, or `name{label="value",...} number`.

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Every sample, or the first line that does not parse.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(c) = line.strip_prefix('#') {
            let c = c.trim_start();
            if !(c.starts_with("HELP ") || c.starts_with("TYPE ")) {
                return Err(format!("bad comment {line:?}"));
            }
            continue;
        }
        samples.push(sample(line).ok_or_else(|| format!("bad sample line {line:?}"))?);
    }
    Ok(samples)
}

fn sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}')?;
            let labels = body
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=')?;
                    let v = v.strip_prefix('"')?.strip_suffix('"')?;
                    Some((k.to_owned(), v.to_owned()))
                })
                .collect::<Option<Vec<_>>>()?;
            (name, labels)
        }
    };
    let valid_name = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    valid_name.then(|| Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The value of the first sample named `name` that carries all of `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|s| s.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_and_rejects_garbage() {
        let s = parse("# HELP x_total help\n# TYPE x_total counter\nx_total{a=\"1\",b=\"2\"} 3\ny 0.5\nz_bucket{le=\"+Inf\"} 4\n")
            .unwrap();
        assert_eq!(value(&s, "x_total", &[("b", "2")]), Some(3.0));
        assert_eq!(value(&s, "y", &[]), Some(0.5));
        assert_eq!(value(&s, "z_bucket", &[("le", "+Inf")]), Some(4.0));
        for bad in [
            "x 1 2 3",
            "x{a=1} 2",
            "1x 2",
            "x{a=\"1\" 2",
            "# nonsense",
            "x NaNa",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
