//! What cannot run here (Docker) is still checked: docker-compose.yml and the Prometheus and
//! Grafana configurations parse, every file they mount or name exists, every service they
//! reach is defined, and Prometheus itself accepts its configuration (`promtool`, Debian's
//! prometheus package, installed by scripts/services.sh).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use skystream_tests::repo_root;

fn yaml(path: &Path) -> serde_yaml::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn str_list(v: &serde_yaml::Value) -> Vec<String> {
    match v {
        serde_yaml::Value::Sequence(s) => s
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        serde_yaml::Value::Mapping(m) => m
            .keys()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
        serde_yaml::Value::String(s) => vec![s.clone()],
        _ => vec![],
    }
}

#[test]
fn compose_file_is_complete() {
    let root = repo_root();
    let compose = yaml(&root.join("docker-compose.yml"));
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<String> = services
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    for want in [
        "kafka",
        "redis",
        "minio",
        "minio-init",
        "ingest",
        "skystream",
        "superset",
        "superset-db",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(want), "service {want} missing: {names:?}");
    }
    let volumes: BTreeSet<String> = str_list(&compose["volumes"]).into_iter().collect();
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        assert!(
            svc.get("image").is_some() || svc.get("build").is_some(),
            "{name}: no image or build"
        );
        if let Some(ctx) = svc.get("build").and_then(|b| b.as_str()) {
            assert!(
                root.join(ctx).join("Dockerfile").is_file(),
                "{name}: build {ctx}"
            );
        }
        for dep in str_list(&svc["depends_on"]) {
            assert!(names.contains(&dep), "{name} depends on unknown {dep}");
        }
        for m in str_list(&svc["volumes"]) {
            let source = m.split(':').next().unwrap();
            if source.starts_with('.') || source.starts_with('/') {
                let p = root.join(source);
                assert!(p.exists(), "{name} mounts {source}, which does not exist");
            } else {
                assert!(
                    volumes.contains(source),
                    "{name}: volume {source} not declared"
                );
            }
        }
    }
    // The skystream services run what exists: shipped scripts named by --pipeline, and the
    // Superset scripts under the mounted superset/.
    let serve = str_list(&services["skystream"]["command"]);
    assert_eq!(serve[0], "serve");
    for arg in &serve {
        if let Some(p) = arg.strip_prefix("--pipeline=") {
            assert!(
                root.join("sql").join(format!("{p}.sql")).is_file(),
                "--pipeline {p}: no sql/{p}.sql"
            );
        }
    }
    let superset_cmd = str_list(&services["superset"]["command"]).join(" ");
    for word in superset_cmd.split_whitespace() {
        if let Some(rel) = word.strip_prefix("/opt/skystream/") {
            assert!(root.join(rel).is_file(), "superset runs {word}: no {rel}");
        }
    }
    // Grafana and Prometheus read what compose mounts.
    let prometheus = str_list(&services["prometheus"]["volumes"]);
    assert!(
        prometheus
            .iter()
            .any(|v| v.starts_with("./deploy/prometheus/prometheus.yml:"))
    );
    assert!(root.join("Dockerfile").is_file() && root.join(".dockerignore").is_file());
}

#[test]
fn prometheus_config_scrapes_every_skystream_service() {
    let root = repo_root();
    let path = root.join("deploy/prometheus/prometheus.yml");
    let compose = yaml(&root.join("docker-compose.yml"));
    let cfg = yaml(&path);
    let mut targets = BTreeSet::new();
    for job in cfg["scrape_configs"].as_sequence().unwrap() {
        for sc in job["static_configs"].as_sequence().unwrap() {
            targets.extend(str_list(&sc["targets"]));
        }
    }
    // skystream serve's API port and ingest's --metrics port, as compose starts them.
    let args = |svc: &str| str_list(&compose["services"][svc]["command"]).join(" ");
    assert!(args("skystream").contains("--listen=0.0.0.0:8080"));
    assert!(args("ingest").contains("--metrics=0.0.0.0:9464"));
    assert_eq!(
        targets,
        BTreeSet::from(["skystream:8080".to_string(), "ingest:9464".to_string()])
    );
    let promtool = std::env::var("SKYSTREAM_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let out = std::process::Command::new(&promtool)
        .args(["check", "config", "--syntax-only"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("{promtool} (Debian prometheus): {e}"));
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The PromQL expressions of the provisioned Grafana dashboard.
pub fn grafana_expressions(root: &Path) -> Vec<String> {
    let text =
        std::fs::read_to_string(root.join("deploy/grafana/dashboards/skystream.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn grafana_is_provisioned_with_the_operations_dashboard() {
    let root = repo_root();
    let ds = yaml(&root.join("deploy/grafana/provisioning/datasources/prometheus.yml"));
    let source = &ds["datasources"][0];
    assert_eq!(source["type"].as_str(), Some("prometheus"));
    assert_eq!(source["url"].as_str(), Some("http://prometheus:9090"));
    let uid = source["uid"].as_str().unwrap();
    let provider = yaml(&root.join("deploy/grafana/provisioning/dashboards/skystream.yml"));
    assert_eq!(
        provider["providers"][0]["options"]["path"].as_str(),
        Some("/var/lib/grafana/dashboards")
    );
    let text =
        std::fs::read_to_string(root.join("deploy/grafana/dashboards/skystream.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let titles: Vec<&str> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for want in [
        "Events/s",
        "Kafka lag (records behind)",
        "Watermark delay",
        "Late and malformed events / min",
        "Checkpoint duration",
        "Sink errors",
    ] {
        assert!(titles.contains(&want), "panel {want} missing: {titles:?}");
    }
    for p in dash["panels"].as_array().unwrap() {
        assert_eq!(p["datasource"]["uid"].as_str(), Some(uid), "{}", p["title"]);
    }
    // Every series the panels use is one skystream exports (tests/tests/prometheus.rs scrapes
    // them for real).
    let exported = [
        include_str!("../../crates/api/src/prom.rs"),
        include_str!("../../connectors/kafka/src/ingest.rs"),
    ]
    .concat();
    for expr in grafana_expressions(&root) {
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("skystream_"))
        {
            let (prefix, rest) = if let Some(r) = name.strip_prefix("skystream_pipeline_") {
                ("skystream_pipeline_", r)
            } else if let Some(r) = name.strip_prefix("skystream_ingest_") {
                ("skystream_ingest_", r)
            } else {
                ("", name)
            };
            let known = if prefix.is_empty() {
                exported.contains(&format!("\"{rest}"))
            } else {
                exported.contains(&format!("\"{rest}\""))
            };
            assert!(known, "{expr}: {name} is not exported");
        }
    }
}
