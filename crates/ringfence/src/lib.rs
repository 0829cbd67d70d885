//! ringfence: the server, the controller and its adapters (process executor, router process,
//! HTTP API), the CLI, the sample service and the demo. The decisions themselves live in
//! `ringfence-core`, which does no IO.

pub mod audit;
pub mod checks;
pub mod cli;
pub mod client;
pub mod controller;
pub mod credentials;
pub mod datadir;
pub mod demo;
pub mod executor;
pub mod exit;
pub mod handover;
pub mod http;
pub mod lintreport;
pub mod loadgen;
pub mod notify;
pub mod routerproc;
pub mod sample_app;
pub mod secrets;
pub mod server;
pub mod sources;
pub mod state;
pub mod tierclient;
pub mod traffic;
pub mod webhook;
