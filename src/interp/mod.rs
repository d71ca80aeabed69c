//! The async interpreter loop.
