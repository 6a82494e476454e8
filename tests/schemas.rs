//! The catalogue and its JSON Schemas stay in step, and every event the suite
//! produces matches its schema (the [`Validating`](crate::support::Validating)
//! store checks each append; these tests check the schemas themselves).

use std::collections::BTreeSet;

use authlog_schemas::{EventType, Position, Recorded};

use crate::support::fixtures::{story, story_types};
use crate::support::validating::{SchemaSet, schema_dir};

#[test]
fn every_type_has_a_schema_and_every_schema_a_type() {
    let set = SchemaSet::get();
    let on_disk: BTreeSet<(String, u32)> = set.types().cloned().collect();
    for t in EventType::ALL {
        for v in 1..=t.current_version() {
            assert!(
                on_disk.contains(&(t.as_str().to_string(), v)),
                "{t} v{v} has no schemas/json/{t}/v{v}.json"
            );
        }
    }
    for (name, v) in &on_disk {
        let t = EventType::parse(name)
            .unwrap_or_else(|| panic!("schemas/json/{name} names no event type"));
        assert!(
            *v <= t.current_version(),
            "{name} v{v} is newer than the catalogue's v{}",
            t.current_version()
        );
    }
    // Nothing else lies in schemas/json besides the envelope and the type folders.
    for entry in std::fs::read_dir(schema_dir()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        assert!(
            entry.file_type().unwrap().is_dir() || name == "envelope.json",
            "stray file schemas/json/{name}"
        );
    }
}

#[test]
fn the_sample_story_covers_the_whole_catalogue_and_matches_the_schemas() {
    let covered = story_types();
    let all: BTreeSet<EventType> = EventType::ALL.iter().copied().collect();
    assert_eq!(covered, all, "the story misses some types");
    let set = SchemaSet::get();
    for (i, step) in story("s").iter().enumerate() {
        let event = step.event();
        let body: serde_json::Value = serde_json::from_slice(event.body()).unwrap();
        set.validate(&body).unwrap();
        // Export lines (body plus store-assigned fields) match too.
        let line = Recorded {
            position: Position::dense(i as u64),
            revision: 0,
            seq: i as u64,
            stream: step.stream.clone(),
            body: event.body().to_vec(),
            sidecar: event.sidecar().map(<[u8]>::to_vec),
        }
        .to_export_line();
        set.validate(&serde_json::from_slice(&line).unwrap())
            .unwrap();
    }
}

#[test]
fn the_schemas_have_teeth() {
    let set = SchemaSet::get();
    let steps = story("t");
    let body: serde_json::Value = serde_json::from_slice(steps[0].event().body()).unwrap();
    let mut cases = Vec::new();
    let mut b = body.clone();
    b["data"]["password"] = "hunter2".into();
    cases.push(("an unknown data field", b));
    let mut b = body.clone();
    b["data"].as_object_mut().unwrap().remove("user_id");
    cases.push(("a missing required field", b));
    let mut b = body.clone();
    b["outcome"] = "failure".into();
    cases.push(("a failure without a reason", b));
    let mut b = body.clone();
    b["time"] = "2026-11-26T06:09:54Z".into();
    cases.push(("a time without milliseconds", b));
    let mut b = body.clone();
    b["type"] = "user.updated".into();
    cases.push(("another type's data", b));
    let mut b = body.clone();
    b.as_object_mut().unwrap().remove("sealed_digest");
    cases.push(("a missing sealed_digest", b));
    for (what, b) in cases {
        assert!(set.validate(&b).is_err(), "the schema accepted {what}");
    }
}

#[test]
fn bodies_are_canonical_json_and_carry_no_store_fields() {
    for step in story("c") {
        let event = step.event();
        let value: serde_json::Value = serde_json::from_slice(event.body()).unwrap();
        assert_eq!(
            authlog_schemas::canonical::to_canonical(&value).unwrap(),
            event.body()
        );
        for field in ["position", "revision", "seq"] {
            assert!(value.get(field).is_none());
        }
        assert_eq!(
            value.get("sealed_digest").is_some(),
            event.sidecar().is_some()
        );
    }
}

#[test]
fn personal_fields_are_marked() {
    let read = |p: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(schema_dir().join(p)).unwrap()).unwrap()
    };
    let envelope = read("envelope.json");
    for f in ["ip", "user_agent"] {
        assert_eq!(
            envelope["properties"]["source"]["properties"][f]["x-authlog-personal"], true,
            "source.{f}"
        );
    }
    let reg = read("user.registered/v1.json");
    for f in ["username", "email", "name"] {
        assert_eq!(
            reg["properties"]["data"]["properties"][f]["x-authlog-personal"], true,
            "user.registered {f}"
        );
    }
}

#[test]
fn the_readme_lists_the_catalogue_with_its_stream_rules() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for t in EventType::ALL {
        let rule = t.stream_rule();
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", t.as_str())))
            .unwrap_or_else(|| panic!("README's catalogue table has no row for {t}"));
        assert!(
            row.contains(&format!("`{}`", rule.stream)) || row.contains(rule.stream),
            "README row for {t} does not name stream {}",
            rule.stream
        );
        assert!(
            row.contains(rule.expected.as_str()),
            "README row for {t} does not say `{}`",
            rule.expected.as_str()
        );
    }
}
