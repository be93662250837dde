//! The `agentlock` binary: parse arguments, run the command, exit.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    std::process::exit(cli::execute(args));
}
