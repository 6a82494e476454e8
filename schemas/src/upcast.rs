//! Upcasters: map `(type, schema_version)` to the newest shape, for projections
//! only. Sinks and exports ship stored bytes unchanged.
//!
//! Every type is at version 1, so today the chain is the identity; a version 2
//! adds one arm here (`(EventType::X, 1) => v1_to_v2(data)`) and a test that a
//! stored v1 body folds like a v2 one.

use serde_json::Value;

use crate::catalogue::EventType;

/// Brings `data` of `event_type` at `version` up to the current version.
pub fn upcast(event_type: EventType, version: u32, data: Value) -> Result<Value, String> {
    let current = event_type.current_version();
    match version {
        v if v == current => Ok(data),
        v if v > current => Err(format!(
            "{event_type} v{v} is newer than this build knows (v{current}); upgrade authlog"
        )),
        v => Err(format!("{event_type} v{v} has no upcaster to v{current}")),
    }
}
