//! `infra-credential`: kubectl's exec credential plugin (the `command` of
//! the kubeconfig entries `infra login` writes), kept small so that it starts
//! as fast as `cat`.
//!
//! kubectl runs it before every request with `tokens create --server S
//! --destination D`. A token still fresh in the cache is answered here
//! (`cli::tokens::warm`: a file read and a print). Anything else (a token
//! about to expire, kubectl's retry after a 401, no token yet, an error)
//! is handed to the full `infra` beside it, which takes the lock, reads
//! the key from the keyring and mints: `exec`, so kubectl still talks to
//! one process and gets its exit code.
//!
//! Why a second executable: both are position-independent (their code and
//! data are address-randomised), and a PIE executable's start-up touches
//! every page holding a relocated pointer. The full CLI holds ~45,000 of
//! them (clap, tokio, rustls, sqlx, axum…), which made each kubectl call
//! 1.7× slower than `cat`; this one holds a few hundred.

use std::ffi::OsString;

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(code) = infra::cli::tokens::warm(&args) {
        std::process::exit(code);
    }
    let infra = match std::env::current_exe() {
        Ok(me) => me.with_file_name("infra"),
        Err(e) => fail(&format!("cannot find where infra-credential is ({e})")),
    };
    let mut cmd = std::process::Command::new(&infra);
    cmd.args(&args[1..]);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = cmd.exec();
        fail(&format!("cannot run {}: {err}", infra.display()));
    }
    #[cfg(not(unix))]
    match cmd.status() {
        Ok(s) => std::process::exit(s.code().unwrap_or(1)),
        Err(err) => fail(&format!("cannot run {}: {err}", infra.display())),
    }
}

fn fail(why: &str) -> ! {
    eprintln!(
        "error: {why}; infra-credential hands cache misses to the infra executable installed \
         beside it: reinstall infra (install.sh puts both in one directory)"
    );
    std::process::exit(1);
}
