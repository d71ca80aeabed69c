//! The `<? ... ?>` template language.
