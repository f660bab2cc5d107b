//! Parse, run, map the error to an exit code. Nothing else.

fn main() {
    let code = infra::cli::main();
    std::process::exit(code);
}
