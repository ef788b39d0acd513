//! End-to-end tests of the `deep-review` binary. One test binary, helpers in `util`.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod command_agents;
mod config;
mod consolidate;
mod deploy;
mod distributed;
mod evaluation;
mod github;
mod github_server;
mod model_agents;
mod model_server;
mod real_vendor_clis;
mod review;
mod seeds;
mod traces;
mod transport;
mod util;
mod vendor_api;
mod vendor_cli_agents;
mod verification;
