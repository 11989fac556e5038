//! Tools built on the engine rather than services it runs: the netcat roles (`connect`,
//! `listen`) and the load generators.

pub mod bench;
pub mod netcat;
