//! Test support for Jantar: integration helpers and the NAT lab.

pub mod harness;
pub mod lab;
pub mod sybil;
