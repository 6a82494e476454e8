//! What of `deploy/` can be checked without a container engine: every file
//! parses (YAML through PyYAML, the dashboard as JSON, the Dockerfile's
//! stages), and every metric the dashboard and the alert rules reference is one
//! that a running authlog exports on `/metrics`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::oidc::{PASSWORD, browser, pkce, query, setup};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Every YAML file under deploy/, parsed by PyYAML: path → its documents.
fn yaml_documents() -> Vec<(PathBuf, Vec<Value>)> {
    let python = std::env::var("AUTHLOG_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("AUTHLOG_TEST_PYTHON is not set: run ./tests/run.sh, which installs PyYAML for this test")
    });
    let mut all = Vec::new();
    files(&deploy_dir(), &mut all);
    let yamls: Vec<PathBuf> = all
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    assert!(yamls.len() >= 9, "{yamls:?}");
    yamls
        .into_iter()
        .map(|p| {
            let o = std::process::Command::new(&python)
                .args([
                    "-c",
                    "import sys, json, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
                ])
                .arg(&p)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{} does not parse: {}",
                p.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            let docs: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
            assert!(
                docs.iter().any(|d| !d.is_null()),
                "{} is empty",
                p.display()
            );
            (p, docs)
        })
        .collect()
}

/// Every string under a key named `expr`.
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// `authlog_*` metric names in PromQL, and the values given to `label="…"`.
fn names_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("authlog_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            out.insert(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

fn label_values(expr: &str, label: &str) -> BTreeSet<String> {
    let needle = format!("{label}=\"");
    expr.match_indices(&needle)
        .filter_map(|(at, _)| {
            let rest = &expr[at + needle.len()..];
            rest.find('"').map(|end| rest[..end].to_string())
        })
        .collect()
}

#[test]
fn deploy_files_parse() {
    let docs = yaml_documents();
    let find = |name: &str| {
        docs.iter()
            .find(|(p, _)| p.ends_with(name))
            .unwrap_or_else(|| panic!("deploy/{name} is missing"))
            .1
            .clone()
    };
    // compose: the two nodes, a three-node KurrentDB cluster, Kafka, Prometheus, Grafana.
    let compose = &find("compose.yaml")[0];
    let services = compose["services"].as_object().unwrap();
    let authlog_nodes = services
        .values()
        .filter(|s| s["environment"].to_string().contains("AUTHLOG_STORE"))
        .count();
    assert!(authlog_nodes >= 2, "two authlog nodes on one store");
    let kurrent = services
        .values()
        .filter(|s| {
            s["image"]
                .as_str()
                .is_some_and(|i| i.contains("kurrentdb") || i.contains("KURRENTDB_IMAGE"))
        })
        .count();
    assert_eq!(kurrent, 3, "a three-node KurrentDB cluster");
    for s in ["prometheus", "grafana", "kafka"] {
        assert!(
            services.keys().any(|k| k.contains(s)),
            "compose has no {s} service"
        );
    }
    // Kubernetes: probes on /readyz and /healthz, secrets by reference, a PDB.
    let deployment = &find("k8s/deployment.yaml")[0];
    assert_eq!(deployment["kind"], "Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(container.to_string().contains("secretKeyRef"));
    assert_eq!(find("k8s/pdb.yaml")[0]["kind"], "PodDisruptionBudget");
    assert_eq!(find("k8s/service.yaml")[0]["kind"], "Service");
    assert_eq!(find("k8s/configmap.yaml")[0]["kind"], "ConfigMap");
    // The Dockerfile: several stages, a non-root runtime user.
    let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert!(stages >= 2, "a multi-stage build");
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the image sets a USER");
    assert!(
        !user.trim().starts_with("root") && !user.trim().starts_with('0'),
        "{user}"
    );
}

/// Every metric the dashboard and the alert rules reference is exported by a
/// server that has done what the panels show (sign-ins, a failure, token
/// grants, a sink, leases).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_use_is_exported() {
    let mut referenced = Vec::new();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy_dir().join("grafana/dashboards/authlog.json")).unwrap(),
    )
    .unwrap();
    exprs(&dashboard, &mut referenced);
    let from_dashboard = referenced.len();
    assert!(from_dashboard >= 8, "{from_dashboard} panel queries");
    for (path, docs) in yaml_documents() {
        if path.ends_with("prometheus/alerts.yml") {
            for d in &docs {
                exprs(d, &mut referenced);
            }
        }
    }
    assert!(referenced.len() > from_dashboard, "no alert rules read");

    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let sink = out.path().join("events.ndjson").display().to_string();
    let app = crate::support::spawn_app_with(
        dir.path(),
        &[
            ("AUTHLOG_SINK_NDJSON_PATH", sink.as_str()),
            ("AUTHLOG_SINK_KAFKA_BROKERS", "127.0.0.1:9"),
            ("AUTHLOG_SINK_KAFKA_TOPIC", "authlog"),
        ],
    )
    .await;
    let rp = setup(&app.url(""), &app.admin_token, json!({})).await;
    let jar = browser();
    let (verifier, challenge) = pkce();
    let back = rp
        .sign_in(
            &jar,
            &rp.auth_url(&challenge, "openid offline_access", &[]),
            PASSWORD,
        )
        .await;
    let r = rp.redeem(&query(&back)["code"], &verifier).await;
    assert_eq!(r.status(), 200);
    let r = rp.redeem(&query(&back)["code"], &verifier).await;
    assert_eq!(r.status(), 400, "the replayed code");
    let bad = jar
        .post(app.url("/oidc/login"))
        .form(&[("username", "nobody"), ("password", "wrong password")])
        .send()
        .await
        .unwrap();
    assert!(bad.status().is_client_error() || bad.status().is_redirection());
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let exposition = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported: BTreeSet<String> = exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect();
    let mut missing = Vec::new();
    let mut names = BTreeSet::new();
    for expr in &referenced {
        for name in names_in(expr) {
            if !exported.contains(&name) {
                missing.push(format!("{name} (in `{expr}`)"));
            }
            names.insert(name);
        }
        for lease in label_values(expr, "lease") {
            if !exposition.contains(&format!("lease=\"{lease}\"")) {
                missing.push(format!("lease {lease:?} (in `{expr}`)"));
            }
        }
        for sink in label_values(expr, "sink") {
            if !exposition.contains(&format!("sink=\"{sink}\"")) {
                missing.push(format!("sink {sink:?} (in `{expr}`)"));
            }
        }
    }
    assert!(
        names.len() >= 10,
        "only {} metric names referenced",
        names.len()
    );
    assert!(
        missing.is_empty(),
        "referenced but not exported:\n{}",
        missing.join("\n")
    );
    app.stop().await;
}

#[test]
fn metric_names_are_found_in_promql() {
    let e = r#"sum(rate(authlog_events_appended_total{type="login.failed"}[5m])) / histogram_quantile(0.99, authlog_store_append_seconds_bucket) and on() xauthlog_no"#;
    assert_eq!(
        names_in(e).into_iter().collect::<Vec<_>>(),
        vec![
            "authlog_events_appended_total".to_string(),
            "authlog_store_append_seconds_bucket".to_string()
        ]
    );
    assert_eq!(
        label_values(
            r#"authlog_lease_held{lease="sink-kafka"} + x{lease="key-rotation"}"#,
            "lease"
        )
        .into_iter()
        .collect::<Vec<_>>(),
        vec!["key-rotation".to_string(), "sink-kafka".to_string()]
    );
}
