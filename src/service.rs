//! The services, one module each, with their server and client halves side by side.

pub mod chat;
pub mod echo;
pub mod exec;
pub mod files;
pub mod framed_echo;
pub mod http;
