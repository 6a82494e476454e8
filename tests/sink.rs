//! Sinks: every event of the log reaches the sink, in log order, across restarts
//! and a SIGKILL of the server (at least once: repeats are dropped by
//! `event_id`), with personal data as configured, in the native envelope or in
//! OCSF (validated against the official OCSF schema export, see
//! `tests/support/ocsf.rs`); `sink replay` re-sends exactly the
//! range asked for.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::oidc::{PASSWORD, setup};
use crate::support::{TestApp, spawn_app_with};

pub(crate) fn lines_of(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits until the sink file holds an event with every id in `ids`.
pub(crate) async fn wait_for_ids(
    path: &std::path::Path,
    ids: &[String],
    id_of: fn(&Value) -> String,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen: HashSet<String> = lines_of(path).iter().map(id_of).collect();
        let missing: Vec<&String> = ids.iter().filter(|i| !seen.contains(*i)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sink never delivered {} events, e.g. {}",
            missing.len(),
            missing[0]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn native_id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

fn ocsf_id(v: &Value) -> String {
    v["metadata"]["uid"].as_str().unwrap().to_string()
}

async fn create_users(app: &TestApp, n: usize, tag: &str) {
    for i in 0..n {
        let r = app
            .http
            .post(app.url("/admin/users"))
            .bearer_auth(&app.admin_token)
            .json(&json!({"username": format!("{tag}{i}-{}", uuid::Uuid::now_v7().simple()), "password": PASSWORD, "email": format!("{tag}{i}@example.com")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
}

/// Removes repeats (by id) keeping the first, and checks the rest is in log
/// order with no gaps against `log`.
pub(crate) fn assert_delivered_in_order(
    lines: &[Value],
    log: &[Value],
    id_of: fn(&Value) -> String,
) {
    let mut seen = HashSet::new();
    let delivered: Vec<String> = lines
        .iter()
        .map(id_of)
        .filter(|id| seen.insert(id.clone()))
        .collect();
    let expected: Vec<String> = log.iter().map(native_id).collect();
    assert!(
        delivered.len() >= expected.len(),
        "{} delivered of {}",
        delivered.len(),
        expected.len()
    );
    assert_eq!(
        &delivered[..expected.len()],
        &expected[..],
        "not every event, or not in log order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ndjson_sink_ships_every_event_in_order_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("events.ndjson");
    let path = file.display().to_string();
    let settings = [("AUTHLOG_SINK_NDJSON_PATH", path.as_str())];
    let app = spawn_app_with(dir.path(), &settings).await;
    create_users(&app, 5, "a").await;
    let log = app.log().await;
    wait_for_ids(
        &file,
        &log.iter().map(native_id).collect::<Vec<_>>(),
        native_id,
    )
    .await;
    // Native and personal data in full: the stored bodies with their
    // store-assigned fields, byte for byte.
    let text = std::fs::read_to_string(&file).unwrap();
    let stored = app
        .store
        .read_all(authlog::store::ReadFrom::Start, 1000)
        .await
        .unwrap();
    for (line, r) in text.lines().zip(&stored) {
        assert_eq!(line.as_bytes(), r.to_export_line().as_slice());
    }
    assert!(!text.contains("sealed:") && !text.contains("$argon2id"));
    app.stop().await;

    // While it is stopped nothing is lost: after a restart the sink resumes
    // from its checkpoint.
    let app = spawn_app_with(dir.path(), &settings).await;
    create_users(&app, 5, "b").await;
    let log = app.log().await;
    wait_for_ids(
        &file,
        &log.iter().map(native_id).collect::<Vec<_>>(),
        native_id,
    )
    .await;
    let lines = lines_of(&file);
    assert_delivered_in_order(&lines, &log, native_id);
    // A graceful stop leaves no repeats; past the snapshot only the reads of
    // the log that the test itself made.
    let ids: HashSet<String> = lines.iter().map(native_id).collect();
    assert_eq!(ids.len(), lines.len(), "repeats after a graceful restart");
    assert!(
        lines[log.len()..]
            .iter()
            .all(|l| l["type"] == "audit.accessed")
    );
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("authlog_sink_seq{sink=\"ndjson\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("authlog_sink_lag_events{sink=\"ndjson\"}"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_can_be_pseudonymised_or_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("events.ndjson");
    let path = file.display().to_string();
    let app = spawn_app_with(
        dir.path(),
        &[
            ("AUTHLOG_SINK_NDJSON_PATH", path.as_str()),
            ("AUTHLOG_SINK_NDJSON_PERSONAL", "pseudonymised"),
        ],
    )
    .await;
    let rp = setup(&app.url(""), &app.admin_token, json!({})).await;
    // Two reads of the log: each is recorded with the reader's address, and the
    // second read includes the first's record, which the sink must deliver too.
    app.log().await;
    let log = app.log().await;
    assert!(log.iter().any(|e| e["source"]["ip"].is_string()));
    wait_for_ids(
        &file,
        &log.iter().map(native_id).collect::<Vec<_>>(),
        native_id,
    )
    .await;
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("alice@example.com"), "an email in clear");
    assert!(!text.contains(&rp.username), "a username in clear");
    let registered = lines_of(&file)
        .into_iter()
        .find(|l| l["type"] == "user.registered")
        .unwrap();
    let pseudonym = registered["data"]["email"].as_str().unwrap();
    assert!(pseudonym.starts_with("pseudonym:"), "{pseudonym}");
    assert_eq!(registered["data"]["user_id"], rp.user_id.as_str());
    // Addresses too, and stable: every request came from 127.0.0.1, so every
    // event carries the same pseudonym for it.
    assert!(!text.contains("127.0.0.1"), "an address in clear");
    let ips: HashSet<String> = lines_of(&file)
        .iter()
        .filter_map(|l| l["source"]["ip"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ips.len(), 1, "{ips:?}");
    assert!(ips.iter().all(|ip| ip.starts_with("pseudonym:")));
    app.stop().await;

    // `none` removes them.
    let dir = tempfile::tempdir().unwrap();
    let file = out.path().join("none.ndjson");
    let path = file.display().to_string();
    let app = spawn_app_with(
        dir.path(),
        &[
            ("AUTHLOG_SINK_NDJSON_PATH", path.as_str()),
            ("AUTHLOG_SINK_NDJSON_PERSONAL", "none"),
        ],
    )
    .await;
    let rp = setup(&app.url(""), &app.admin_token, json!({})).await;
    let log = app.log().await;
    wait_for_ids(
        &file,
        &log.iter().map(native_id).collect::<Vec<_>>(),
        native_id,
    )
    .await;
    let registered = lines_of(&file)
        .into_iter()
        .find(|l| l["type"] == "user.registered")
        .unwrap();
    assert!(registered["data"].get("email").is_none());
    assert!(registered["data"].get("username").is_none());
    assert!(
        !std::fs::read_to_string(&file)
            .unwrap()
            .contains(&rp.username)
    );
    app.stop().await;
}

/// Every line the NDJSON sink writes in OCSF, with personal data in full,
/// pseudonymised and removed, is valid against the OCSF server's compiled
/// export of the mapping's version (one validator run for all of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsf_sink_lines_validate_against_the_official_ocsf_schema_in_every_personal_mode() {
    let mut all = Vec::new();
    for personal in ["full", "pseudonymised", "none"] {
        let dir = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let file = out.path().join("ocsf.ndjson");
        let path = file.display().to_string();
        let app = spawn_app_with(
            dir.path(),
            &[
                ("AUTHLOG_SINK_NDJSON_PATH", path.as_str()),
                ("AUTHLOG_SINK_NDJSON_FORMAT", "ocsf"),
                ("AUTHLOG_SINK_NDJSON_PERSONAL", personal),
            ],
        )
        .await;
        let rp = setup(&app.url(""), &app.admin_token, json!({})).await;
        let browser = crate::support::oidc::browser();
        let (verifier, challenge) = crate::support::oidc::pkce();
        let back = rp
            .sign_in(&browser, &rp.auth_url(&challenge, "openid", &[]), PASSWORD)
            .await;
        let code = crate::support::oidc::query(&back)["code"].clone();
        assert_eq!(rp.redeem(&code, &verifier).await.status(), 200);
        let log = app.log().await;
        wait_for_ids(
            &file,
            &log.iter().map(native_id).collect::<Vec<_>>(),
            ocsf_id,
        )
        .await;
        app.stop().await;
        let lines = lines_of(&file);
        assert!(lines.len() >= log.len(), "{personal}");
        for l in &lines {
            assert_eq!(
                l["metadata"]["version"],
                authlog::sink::ocsf::OCSF_VERSION,
                "{personal}"
            );
        }
        let logon = lines
            .iter()
            .find(|l| l["unmapped"]["authlog"]["type"] == "login.succeeded")
            .unwrap();
        assert_eq!(logon["class_uid"], 3002);
        assert_eq!(logon["activity_id"], 1);
        assert_eq!(logon["type_uid"], 300201);
        assert_eq!(logon["status_id"], 1);
        assert_eq!(logon["user"]["uid"], rp.user_id.as_str());
        assert_eq!(logon["metadata"]["product"]["name"], "authlog");
        assert_eq!(
            logon["auth_factors"],
            json!([{"factor_type_id": 11, "factor_type": "Password"}])
        );
        let created = lines
            .iter()
            .find(|l| l["unmapped"]["authlog"]["type"] == "user.registered")
            .unwrap();
        assert_eq!(created["class_uid"], 3001);
        assert_eq!(created["activity_id"], 1);
        match personal {
            "full" => assert_eq!(created["user"]["name"], rp.username.as_str()),
            "pseudonymised" => assert!(
                created["user"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("pseudonym:")
            ),
            _ => assert!(created["user"].get("name").is_none()),
        }
        all.extend(lines.into_iter().map(|l| (personal.to_string(), l)));
    }
    crate::support::ocsf::OcsfSchemas::load()
        .validate_all(&all)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_loses_nothing_across_a_sigkill_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("events.ndjson");
    let token = "sink-admin-token-0123456789";
    let start = |port: u16| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_authlog"))
            .arg("serve")
            .env("AUTHLOG_DATA_DIR", dir.path())
            .env("AUTHLOG_LISTEN", format!("127.0.0.1:{port}"))
            .env("AUTHLOG_LOG_LEVEL", "warn")
            .env("AUTHLOG_ADMIN_TOKEN", token)
            .env("AUTHLOG_SINK_NDJSON_PATH", &file)
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let ready = |client: reqwest::Client, base: String| async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(std::time::Instant::now() < deadline, "no server");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut child = start(port);
    ready(client.clone(), base.clone()).await;
    // Registrations stream in; the server is killed in the middle of them.
    let writer = {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move {
            let mut ok = 0;
            for i in 0..400 {
                let r = client
                    .post(format!("{base}/admin/users"))
                    .bearer_auth(token)
                    .json(&json!({"username": format!("k{i}"), "password": PASSWORD}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 201 => ok += 1,
                    _ => break,
                }
            }
            ok
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let accepted = writer.await.unwrap();
    assert!(accepted > 0, "nothing was written before the kill");
    let mut child = start(port);
    ready(client.clone(), base.clone()).await;
    let log: Vec<Value> = client
        .get(format!("{base}/admin/events"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        log.iter()
            .filter(|e| e["type"] == "user.registered")
            .count()
            >= accepted
    );
    wait_for_ids(
        &file,
        &log.iter().map(native_id).collect::<Vec<_>>(),
        native_id,
    )
    .await;
    assert_delivered_in_order(&lines_of(&file), &log, native_id);
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_resends_exactly_the_range_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let app = crate::support::spawn_app_in(dir.path()).await;
    create_users(&app, 6, "r").await;
    let log = app.log().await;
    app.stop().await;
    assert!(log.len() >= 8, "{}", log.len());
    let (from, to) = (&log[3], &log[6]);
    let file = out.path().join("replay.ndjson");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_authlog"))
        .args([
            "sink",
            "replay",
            "--from",
            from["position"].as_str().unwrap(),
            "--to",
            to["position"].as_str().unwrap(),
            "--output",
            file.to_str().unwrap(),
        ])
        .env("AUTHLOG_DATA_DIR", dir.path())
        .env("AUTHLOG_LOG_LEVEL", "warn")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: Vec<String> = lines_of(&file).iter().map(native_id).collect();
    let want: Vec<String> = log[3..=6].iter().map(native_id).collect();
    assert_eq!(got, want);
}

/// Every type of the catalogue (the fixture story holds one of each), with
/// personal data in full, pseudonymised and removed, maps to OCSF that is
/// valid against the OCSF server's compiled export of the mapping's version
/// (one validator run for all of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_maps_to_valid_ocsf_in_every_personal_mode() {
    use authlog::config::{Personal, SinkFormat};
    use authlog::sink::shape::Shaper;
    let store = crate::support::embedded_store();
    crate::support::fixtures::append_story(&store.store, "o").await;
    let records = store
        .store
        .read_all(authlog::store::ReadFrom::Start, 1000)
        .await
        .unwrap();
    let types: HashSet<String> = records
        .iter()
        .map(|r| r.envelope().unwrap().event_type.as_str().to_string())
        .collect();
    assert_eq!(types.len(), authlog_schemas::EventType::ALL.len());
    let kek = authlog::seal::Kek::from_bytes(&[7u8; 32]).unwrap();
    let mut all = Vec::new();
    for personal in [Personal::Full, Personal::Pseudonymised, Personal::None] {
        let shaper = Shaper::new(SinkFormat::Ocsf, personal, &kek);
        for r in &records {
            let m = shaper.shape(r).unwrap();
            let v: Value = serde_json::from_slice(&m.value).unwrap();
            assert_eq!(v["metadata"]["uid"], m.event_id.as_str());
            assert_eq!(v["metadata"]["event_code"], m.event_type.as_str());
            all.push((format!("{personal:?}"), v));
        }
    }
    assert_eq!(all.len(), 3 * records.len());
    crate::support::ocsf::OcsfSchemas::load()
        .validate_all(&all)
        .unwrap_or_else(|e| panic!("{e}"));
}
