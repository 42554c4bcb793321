//! Test support for Jantar: integration helpers and the NAT lab.

pub mod autonat_client;
pub mod autonat_liar;
pub mod capacity;
pub mod circuit_pump;
pub mod evil;
pub mod geoip;
pub mod harness;
pub mod lab;
pub mod peering_bench;
pub mod relay_bench;
pub mod sim;
pub mod sybil;
pub mod update;
