//! Prometheus instruments on a private registry, exposed at `GET /metrics` in the text format.

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::embed_pool::PoolMetrics;

/// Stages of a search, each with its own latency histogram.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    Decode,
    Embed,
    Search,
    /// The round trip to Milvus (a search served from a Milvus collection), also counted in `search`.
    Milvus,
    Total,
}

impl Stage {
    fn label(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Embed => "embed",
            Stage::Search => "search",
            Stage::Milvus => "milvus",
            Stage::Total => "total",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    /// `hetvis_http_requests_total{route, status}`.
    pub requests: IntCounterVec,
    pub in_flight: IntGauge,
    /// `hetvis_search_stage_seconds{stage, mode}`.
    stages: HistogramVec,
    pub index_size: IntGauge,
    /// 1 once the HNSW graph is installed (searches are exact before).
    pub graph_ready: IntGauge,
    /// Bytes of the index's write-ahead log (changes since the last compaction).
    pub log_bytes: IntGauge,
    /// `hetvis_index_compactions_total{kind, outcome}`.
    pub compactions: IntCounterVec,
    batch_size: HistogramVec,
    queue_depth: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("hetvis".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )?;
        let in_flight = IntGauge::new("http_requests_in_flight", "HTTP requests being served")?;
        // 0.1 ms to about 13 s, doubling.
        let stages = HistogramVec::new(
            HistogramOpts::new(
                "search_stage_seconds",
                "Latency of each search stage: decode, embed (queue + batch wait + forward), search, total",
            )
            .buckets(exponential_buckets(1e-4, 2.0, 18)?),
            &["stage", "mode"],
        )?;
        let index_size = IntGauge::new("index_size", "Vectors in the gallery index")?;
        let graph_ready = IntGauge::new(
            "index_graph_ready",
            "1 when the HNSW graph is installed, 0 while searches are exact",
        )?;
        let log_bytes = IntGauge::new(
            "index_log_bytes",
            "Bytes of the index's write-ahead log: changes not yet folded into the stored files",
        )?;
        let compactions = IntCounterVec::new(
            Opts::new(
                "index_compactions_total",
                "Background compactions of the index by kind (fold, reclaim) and outcome (ok, failed)",
            ),
            &["kind", "outcome"],
        )?;
        let batch_size = HistogramVec::new(
            HistogramOpts::new("embed_batch_size", "Images per forward pass")
                .buckets(exponential_buckets(1.0, 2.0, 11)?),
            &["model"],
        )?;
        let queue_depth = IntGaugeVec::new(
            Opts::new("embed_queue_depth", "Jobs waiting for an inference worker"),
            &["model"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(stages.clone()))?;
        registry.register(Box::new(index_size.clone()))?;
        registry.register(Box::new(graph_ready.clone()))?;
        registry.register(Box::new(log_bytes.clone()))?;
        registry.register(Box::new(compactions.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        Ok(Self {
            registry,
            requests,
            in_flight,
            stages,
            index_size,
            graph_ready,
            log_bytes,
            compactions,
            batch_size,
            queue_depth,
        })
    }

    /// The instruments of one model's embed pool (`model` = `query` or `gallery`).
    pub fn pool(&self, model: &str) -> PoolMetrics {
        PoolMetrics {
            batch_size: self.batch_size.with_label_values(&[model]),
            queue_depth: self.queue_depth.with_label_values(&[model]),
        }
    }

    pub fn stage(&self, stage: Stage, mode: &str) -> Histogram {
        self.stages.with_label_values(&[stage.label(), mode])
    }

    /// Everything in the Prometheus text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_the_namespace() {
        let m = Metrics::new().unwrap();
        m.stage(Stage::Decode, "query").observe(0.00005);
        m.pool("query").batch_size.observe(3.0);
        m.requests.with_label_values(&["/search", "200"]).inc();
        let text = m.render().unwrap();
        for needle in [
            "hetvis_search_stage_seconds_bucket{mode=\"query\",stage=\"decode\",le=\"0.0001\"} 1",
            "hetvis_embed_batch_size_bucket{model=\"query\",le=\"4\"} 1",
            "hetvis_http_requests_total{route=\"/search\",status=\"200\"} 1",
            "# TYPE hetvis_index_size gauge",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
}
