//! The OCSF schema subset in `schemas/ocsf/`, compiled once, to validate what
//! the sinks send in OCSF.

use std::collections::HashMap;

pub struct OcsfSchemas {
    schemas: boon::Schemas,
    /// class_uid → compiled schema.
    by_class: HashMap<u64, boon::SchemaIndex>,
}

impl OcsfSchemas {
    pub fn load() -> OcsfSchemas {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas/ocsf");
        let mut compiler = boon::Compiler::new();
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let id = json["$id"].as_str().unwrap().to_string();
            let class = json["properties"]["class_uid"]["const"]
                .as_u64()
                .unwrap_or_else(|| panic!("{}: no class_uid const", path.display()));
            compiler.add_resource(&id, json).unwrap();
            found.push((class, id));
        }
        let mut schemas = boon::Schemas::new();
        let by_class = found
            .into_iter()
            .map(|(class, id)| (class, compiler.compile(&id, &mut schemas).unwrap()))
            .collect();
        OcsfSchemas { schemas, by_class }
    }

    pub fn validate(&self, event: &serde_json::Value) -> Result<(), String> {
        let class = event["class_uid"].as_u64().ok_or("no class_uid")?;
        let index = self
            .by_class
            .get(&class)
            .ok_or_else(|| format!("no OCSF schema for class {class}"))?;
        self.schemas
            .validate(event, *index)
            .map_err(|e| format!("{e:#}"))
    }
}
