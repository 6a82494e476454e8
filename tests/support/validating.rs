//! A store decorator that validates every appended body against its JSON Schema
//! in `schemas/json`, so every event the test suite produces is checked.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use async_trait::async_trait;
use authlog::store::{
    Appended, CheckReport, EventStore, Expected, Head, NewEvent, ReadFrom, StoreError,
};
use authlog_schemas::Recorded;
use futures_util::stream::BoxStream;

pub struct SchemaSet {
    schemas: boon::Schemas,
    /// (type, version) → compiled schema.
    index: HashMap<(String, u32), boon::SchemaIndex>,
}

pub fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas/json")
}

const BASE: &str = "https://schemas.authlog.dev/json/";

impl SchemaSet {
    fn load() -> SchemaSet {
        let dir = schema_dir();
        let mut compiler = boon::Compiler::new();
        let mut found = Vec::new();
        let envelope: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("envelope.json")).unwrap()).unwrap();
        compiler
            .add_resource(&format!("{BASE}envelope.json"), envelope)
            .unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if !entry.file_type().unwrap().is_dir() {
                continue;
            }
            let type_name = entry.file_name().to_string_lossy().to_string();
            for file in std::fs::read_dir(entry.path()).unwrap() {
                let file = file.unwrap();
                let name = file.file_name().to_string_lossy().to_string();
                let version: u32 = name
                    .strip_prefix('v')
                    .and_then(|v| v.strip_suffix(".json"))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| {
                        panic!("{}: schema files are named vN.json", file.path().display())
                    });
                let json: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(file.path()).unwrap()).unwrap();
                let url = format!("{BASE}{type_name}/{name}");
                assert_eq!(
                    json["$id"],
                    url.as_str(),
                    "{} has the wrong $id",
                    file.path().display()
                );
                compiler.add_resource(&url, json).unwrap();
                found.push((type_name.clone(), version, url));
            }
        }
        let mut schemas = boon::Schemas::new();
        let mut index = HashMap::new();
        for (t, v, url) in found {
            let idx = compiler
                .compile(&url, &mut schemas)
                .unwrap_or_else(|e| panic!("schema {url} does not compile: {e:#}"));
            index.insert((t, v), idx);
        }
        SchemaSet { schemas, index }
    }

    pub fn get() -> &'static SchemaSet {
        static SET: OnceLock<SchemaSet> = OnceLock::new();
        SET.get_or_init(SchemaSet::load)
    }

    pub fn types(&self) -> impl Iterator<Item = &(String, u32)> {
        self.index.keys()
    }

    /// Validates a body (or an export line) against the schema its `type` and
    /// `schema_version` name.
    pub fn validate(&self, body: &serde_json::Value) -> Result<(), String> {
        let t = body["type"].as_str().ok_or("no type")?;
        let v = body["schema_version"].as_u64().ok_or("no schema_version")? as u32;
        let idx = self
            .index
            .get(&(t.to_string(), v))
            .ok_or_else(|| format!("no schema for {t} v{v}"))?;
        self.schemas
            .validate(body, *idx)
            .map_err(|e| format!("{t} v{v} does not match its schema: {e:#}"))
    }
}

pub struct Validating<S> {
    inner: S,
}

impl<S> Validating<S> {
    pub fn new(inner: S) -> Self {
        Validating { inner }
    }
}

#[async_trait]
impl<S: EventStore> EventStore for Validating<S> {
    async fn append(
        &self,
        stream: &str,
        expected: Expected,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        for e in &events {
            let body: serde_json::Value = serde_json::from_slice(e.body())
                .map_err(|err| StoreError::InvalidEvent(err.to_string()))?;
            SchemaSet::get()
                .validate(&body)
                .map_err(StoreError::InvalidEvent)?;
        }
        self.inner.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_revision: u64,
        limit: usize,
    ) -> Result<Vec<Recorded>, StoreError> {
        self.inner.read_stream(stream, from_revision, limit).await
    }

    async fn read_all(&self, from: ReadFrom, limit: usize) -> Result<Vec<Recorded>, StoreError> {
        self.inner.read_all(from, limit).await
    }

    fn subscribe_all(&self, from: ReadFrom) -> BoxStream<'static, Result<Recorded, StoreError>> {
        self.inner.subscribe_all(from)
    }

    async fn head(&self) -> Result<Option<Head>, StoreError> {
        self.inner.head().await
    }

    fn log_id(&self) -> String {
        self.inner.log_id()
    }

    async fn check(&self) -> Result<CheckReport, StoreError> {
        self.inner.check().await
    }
    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
    ) -> Result<Option<authlog::store::Lease>, StoreError> {
        self.inner.try_lease(name, holder).await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.inner.load_checkpoint(name).await
    }

    async fn save_checkpoint(
        &self,
        name: &str,
        expected: Option<u64>,
        value: Vec<u8>,
    ) -> Result<u64, StoreError> {
        self.inner.save_checkpoint(name, expected, value).await
    }
}
