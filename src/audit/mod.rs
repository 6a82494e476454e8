//! The audit trail's integrity machinery. Today: the RFC 9162 Merkle tree
//! algorithms over the log's bodies in `seq` order; the on-disk interior nodes,
//! signed checkpoints and the audit API build on them.

pub mod merkle;
pub mod tree;
