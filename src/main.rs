//! Parse, run, map the error to an exit code. Nothing else.

fn main() {
    // kubectl runs `infra tokens create --server S --destination D` before
    // every request: answer it from the token cache before anything else
    // (runtime, logging, clap) starts. A miss falls through to the CLI.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = infra::cli::tokens::warm(&args) {
        std::process::exit(code);
    }
    let code = infra::cli::main();
    std::process::exit(code);
}
