//! `/metrics` in the Prometheus text format.

use std::fmt::Write;

use crate::manager::{Manager, PipelineState};

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(manager: &Manager) -> String {
    let pipelines = manager.metrics();
    let mut out = String::new();
    let states = [
        (PipelineState::Starting, "starting"),
        (PipelineState::Running, "running"),
        (PipelineState::Stopping, "stopping"),
        (PipelineState::Stopped, "stopped"),
        (PipelineState::Finished, "finished"),
        (PipelineState::Failed, "failed"),
    ];
    out.push_str(
        "# HELP skystream_pipelines Pipelines by state.\n# TYPE skystream_pipelines gauge\n",
    );
    for (st, name) in states {
        let n = pipelines.iter().filter(|p| p.2 == st).count();
        let _ = writeln!(out, "skystream_pipelines{{state=\"{name}\"}} {n}");
    }
    type Get = fn(&skystream_engine::metrics::MetricsSnapshot) -> Option<f64>;
    let series: [(&str, &str, &str, Get); 16] = [
        (
            "rows_in_total",
            "counter",
            "Rows read from the sources.",
            |m| Some(m.rows_in as f64),
        ),
        (
            "rows_out_total",
            "counter",
            "Rows written to the sinks.",
            |m| Some(m.rows_out as f64),
        ),
        ("late_rows_total", "counter", "Rows dropped as late.", |m| {
            Some(m.late_rows as f64)
        }),
        (
            "ahead_rows_total",
            "counter",
            "Rows skipped because their event time ran too far ahead of the wall clock.",
            |m| Some(m.ahead_rows as f64),
        ),
        (
            "windows_emitted_total",
            "counter",
            "Windows emitted.",
            |m| Some(m.windows_emitted as f64),
        ),
        (
            "malformed_total",
            "counter",
            "Malformed input records skipped.",
            |m| Some(m.malformed as f64),
        ),
        ("open_panes", "gauge", "Window panes held in memory.", |m| {
            Some(m.open_panes as f64)
        }),
        (
            "state_bytes",
            "gauge",
            "Memory held by window state (bytes).",
            |m| Some(m.state_bytes as f64),
        ),
        (
            "watermark_seconds",
            "gauge",
            "Event-time watermark (Unix seconds).",
            |m| m.watermark.map(|w| w as f64 / 1e9),
        ),
        (
            "lag_records",
            "gauge",
            "Records behind the head of the input.",
            |m| m.lag.map(|l| l as f64),
        ),
        ("checkpoints_total", "counter", "Checkpoints stored.", |m| {
            Some(m.checkpoints as f64)
        }),
        (
            "last_checkpoint_duration_seconds",
            "gauge",
            "How long the last stored checkpoint took.",
            |m| {
                m.last_checkpoint
                    .as_ref()
                    .map(|c| c.duration_us as f64 / 1e6)
            },
        ),
        (
            "last_checkpoint_bytes",
            "gauge",
            "Size of the last stored checkpoint.",
            |m| m.last_checkpoint.as_ref().map(|c| c.bytes as f64),
        ),
        (
            "checkpoint_failures_total",
            "counter",
            "Checkpoints that failed.",
            |m| Some(m.checkpoint_failures as f64),
        ),
        (
            "sink_retries_total",
            "counter",
            "Sink writes retried.",
            |m| Some(m.sink_retries as f64),
        ),
        ("degraded_sinks", "gauge", "Sinks failing right now.", |m| {
            Some(m.degraded_sinks.len() as f64)
        }),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(
            out,
            "# HELP skystream_pipeline_{name} {help}\n# TYPE skystream_pipeline_{name} {kind}"
        );
        for (id, pname, _, m) in &pipelines {
            if let Some(v) = get(m) {
                let _ = writeln!(
                    out,
                    "skystream_pipeline_{name}{{id=\"{}\",name=\"{}\"}} {v}",
                    esc(id),
                    esc(pname)
                );
            }
        }
    }
    out.push_str("# HELP skystream_operator_rows_total Rows into and out of each operator.\n# TYPE skystream_operator_rows_total counter\n");
    for (id, pname, _, m) in &pipelines {
        for o in &m.operators {
            for (dir, v) in [("in", o.rows_in), ("out", o.rows_out)] {
                let _ = writeln!(
                    out,
                    "skystream_operator_rows_total{{id=\"{}\",name=\"{}\",flow=\"{}\",operator=\"{}\",direction=\"{dir}\"}} {v}",
                    esc(id),
                    esc(pname),
                    esc(&o.flow),
                    esc(&o.operator)
                );
            }
        }
    }
    out
}
