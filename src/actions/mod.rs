//! Built-in actions, the result/error model every action shares, and the
//! [`Action`] trait through which a host registers its own.

mod result;

pub use result::{ActionError, ErrorKind};
