//! Tools for flow authors: flow tests ([`flowtest`]) that keep a flow's expected
//! behaviour next to it, matched with [`expect`] against dry runs.

pub mod expect;
pub mod flowtest;
pub mod located;
