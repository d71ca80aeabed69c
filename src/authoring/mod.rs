//! Tools for flow authors: flow tests ([`flowtest`]) that keep a flow's expected
//! behaviour next to it, matched with [`expect`] against dry runs, and JSON Schemas for
//! editors ([`schema`]).

pub mod expect;
pub mod flowtest;
pub mod located;
pub mod schema;
