//! Loading flow documents with positions, validation and diagnostics.

pub mod json;
