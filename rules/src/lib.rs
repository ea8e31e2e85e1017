//! The pure rules engine (see README of the crate).
