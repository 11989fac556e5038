//! TEMPORARY stub until the load generator lands.
#![allow(missing_docs)]
use crate::net::Addr;
use std::time::Duration;
pub struct EchoLoad {
    pub addr: Addr,
    pub conns: usize,
    pub size: usize,
    pub duration: Duration,
    pub pipeline: usize,
    pub udp: bool,
    pub verify: bool,
    pub connect_per_request: bool,
}
pub struct HoldLoad {
    pub addr: Addr,
    pub conns: usize,
    pub seconds: Duration,
    pub probes: usize,
}
#[derive(serde::Serialize)]
pub struct Report;
impl Report {
    pub fn table(&self) -> String {
        String::new()
    }
}
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("x")]
    InvalidLoad(String),
}
pub async fn run_echo(_: &EchoLoad) -> Result<Report, BenchError> {
    Ok(Report)
}
pub async fn run_hold(_: &HoldLoad) -> Result<Report, BenchError> {
    Ok(Report)
}
