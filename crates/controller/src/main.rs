//! `keyseal-controller`: a drop-in, highly available replacement for the Sealed Secrets
//! controller. The controller itself is the `keyseal_controller` library; this parses the flags,
//! sets up logging and runs it.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser as _;
use keyseal_controller::{Flags, VERSION, logging};

fn main() -> ExitCode {
    keyseal_controller::startup::process_started();
    let flags = match Flags::try_parse() {
        Ok(f) => f,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if flags.version {
        println!("keyseal-controller version: {VERSION}");
        return ExitCode::SUCCESS;
    }
    let config = match flags.into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("keyseal-controller: {e}");
            return ExitCode::FAILURE;
        }
    };
    logging::init(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(keyseal_controller::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "controller stopped");
            ExitCode::FAILURE
        }
    }
}
