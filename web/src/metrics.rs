//! Prometheus metrics, written by hand in the text exposition format: requests by route and
//! status, latency histograms, the queue depth, images and tokens generated, and the size of
//! every batched generation forward.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Latency buckets, seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Batch-size buckets, images.
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Clone, Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (c, &b) in self.counts.iter_mut().zip(self.bounds) {
            if v <= b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (c, b) in self.counts.iter().zip(self.bounds) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Default)]
struct Labelled {
    /// (method, route, status) -> count
    requests: BTreeMap<(String, String, u16), u64>,
    /// route -> latency
    latency: BTreeMap<String, Histogram>,
}

/// Every counter of the server. Cheap to update from any thread.
pub(crate) struct Metrics {
    labelled: Mutex<Labelled>,
    batch_sizes: Mutex<Histogram>,
    queue_depth: AtomicU64,
    queue_capacity: u64,
    in_flight: AtomicU64,
    images_generated: AtomicU64,
    tokens_generated: AtomicU64,
    generation_batches: AtomicU64,
    generation_requests: AtomicU64,
    rejected: AtomicU64,
    panics: AtomicU64,
}

impl Metrics {
    pub(crate) fn new(queue_capacity: usize) -> Self {
        Self {
            labelled: Mutex::new(Labelled::default()),
            batch_sizes: Mutex::new(Histogram::new(&BATCH_BUCKETS)),
            queue_depth: AtomicU64::new(0),
            queue_capacity: queue_capacity as u64,
            in_flight: AtomicU64::new(0),
            images_generated: AtomicU64::new(0),
            tokens_generated: AtomicU64::new(0),
            generation_batches: AtomicU64::new(0),
            generation_requests: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            panics: AtomicU64::new(0),
        }
    }

    pub(crate) fn request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let mut l = self.labelled.lock().unwrap_or_else(|p| p.into_inner());
        *l.requests
            .entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
        l.latency
            .entry(route.to_string())
            .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn request_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts a request into the model's queue, unless the queue is full.
    pub(crate) fn queue_try_enter(&self) -> bool {
        let cap = self.queue_capacity;
        self.queue_depth
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                (d < cap).then_some(d + 1)
            })
            .is_ok()
    }

    /// A request left the queue (the model took it up, or it was dropped).
    pub(crate) fn queue_leave(&self) {
        let _ = self
            .queue_depth
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1));
    }

    pub(crate) fn queue_depth(&self) -> u64 {
        self.queue_depth.load(Ordering::Relaxed)
    }

    /// One batched generation forward of `images` images for `requests` requests.
    pub(crate) fn batch(&self, images: usize, requests: usize) {
        self.batch_sizes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(images as f64);
        self.generation_batches.fetch_add(1, Ordering::Relaxed);
        self.generation_requests
            .fetch_add(requests as u64, Ordering::Relaxed);
    }

    pub(crate) fn images(&self, n: usize) {
        self.images_generated.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn tokens(&self, n: usize) {
        self.tokens_generated.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn panicked(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        {
            let l = self.labelled.lock().unwrap_or_else(|p| p.into_inner());
            out.push_str(
                "# HELP vqrae_http_requests_total HTTP requests by method, route and status.\n",
            );
            out.push_str("# TYPE vqrae_http_requests_total counter\n");
            for ((method, route, status), n) in &l.requests {
                let _ = writeln!(
                    out,
                    "vqrae_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
            out.push_str("# HELP vqrae_http_request_duration_seconds Time to the response head, by route (a stream's body comes later).\n");
            out.push_str("# TYPE vqrae_http_request_duration_seconds histogram\n");
            for (route, h) in &l.latency {
                h.write(
                    &mut out,
                    "vqrae_http_request_duration_seconds",
                    &format!("route=\"{}\"", escape(route)),
                );
            }
        }
        out.push_str("# HELP vqrae_generation_batch_size Images per batched generation forward.\n");
        out.push_str("# TYPE vqrae_generation_batch_size histogram\n");
        self.batch_sizes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(&mut out, "vqrae_generation_batch_size", "");
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "vqrae_generation_batches_total",
            "Batched generation forwards run.",
            load(&self.generation_batches),
        );
        counter(
            &mut out,
            "vqrae_generation_requests_total",
            "Generation requests served by those forwards.",
            load(&self.generation_requests),
        );
        counter(
            &mut out,
            "vqrae_images_generated_total",
            "Images generated.",
            load(&self.images_generated),
        );
        counter(
            &mut out,
            "vqrae_tokens_generated_total",
            "Answer tokens generated.",
            load(&self.tokens_generated),
        );
        counter(
            &mut out,
            "vqrae_queue_rejected_total",
            "Requests refused because the model's queue was full.",
            load(&self.rejected),
        );
        counter(
            &mut out,
            "vqrae_panics_total",
            "Panics caught in handlers and in the model worker.",
            load(&self.panics),
        );
        gauge(
            &mut out,
            "vqrae_queue_depth",
            "Requests waiting for the model.",
            load(&self.queue_depth),
        );
        gauge(
            &mut out,
            "vqrae_queue_capacity",
            "Most requests that may wait for the model.",
            self.queue_capacity,
        );
        gauge(
            &mut out,
            "vqrae_http_requests_in_flight",
            "Requests being handled.",
            load(&self.in_flight),
        );
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let m = Metrics::new(4);
        m.batch(3, 2);
        m.batch(1, 1);
        m.request("GET", "/health", 200, Duration::from_millis(2));
        let text = m.render();
        assert!(text.contains("vqrae_generation_batch_size_bucket{le=\"1\"} 1"));
        assert!(text.contains("vqrae_generation_batch_size_bucket{le=\"4\"} 2"));
        assert!(text.contains("vqrae_generation_batch_size_count 2"));
        assert!(text.contains("vqrae_generation_requests_total 3"));
        assert!(text.contains(
            "vqrae_http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 1"
        ));
        assert!(text.contains(
            "vqrae_http_request_duration_seconds_bucket{route=\"/health\",le=\"0.005\"} 1"
        ));
    }
}
