//! File helpers shared by every role: private directories and atomic,
//! private writes, so a crash never leaves half a file and a secret is
//! never readable by others, even for a moment.

use std::io::Write;
use std::path::Path;

/// Creates `dir` (and parents) with mode 0700 where it is created.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Writes `data` to `path` atomically with mode 0600: a temporary file in
/// the same directory, synced, then renamed over the target.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    if !dir.as_os_str().is_empty() {
        create_private_dir(dir)?;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads an access key from a file (`-`: standard input), so that it never
/// shows on a command line (`ps`); the trailing newline (and any other
/// surrounding white space) is dropped. `what` names the source in errors.
pub fn read_key_from(path: &std::path::Path, what: &str) -> anyhow::Result<secrecy::SecretString> {
    use anyhow::Context;
    use std::io::Read;
    let mut text = String::new();
    if path == std::path::Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .with_context(|| format!("{what}: cannot read the access key from standard input"))?;
    } else {
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .with_context(|| {
                format!("{what}: cannot read the access key from {}", path.display())
            })?;
    }
    let text = secrecy::SecretString::from(text);
    let key = secrecy::ExposeSecret::expose_secret(&text).trim();
    if key.is_empty() {
        let from = if path == std::path::Path::new("-") {
            "standard input".to_string()
        } else {
            path.display().to_string()
        };
        anyhow::bail!("{what}: {from} holds no access key");
    }
    Ok(secrecy::SecretString::from(key))
}
