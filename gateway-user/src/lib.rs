//! The s2s-gateway agent as a library; the `s2s-gateway` daemon and the
//! `s2sctl` CLI in `src/bin` are thin shells around it.

pub mod agent;
pub mod capture;
pub mod daemon;
pub mod dataplane;
pub mod docgen;
pub mod logging;
pub mod metrics;
pub mod sdnotify;
pub mod sysctl;
