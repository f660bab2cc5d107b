//! Who is asking for a token, as a cache entry records it ([`Served`]):
//! the plugin's parent process ([`parent_process`]) and the program that
//! process runs ([`process_image`]), so that kubectl asking again is told
//! apart from another kubectl.
//!
//! [`Served`]: super::Served

/// This process's parent, as [`Served`] records it: 0 when unknown or when
/// it is PID 1 (orphans all share it, so it tells nothing).
///
/// [`Served`]: super::Served
pub fn parent_process() -> u32 {
    #[cfg(unix)]
    {
        let p = std::os::unix::process::parent_id();
        if p > 1 { p } else { 0 }
    }
    #[cfg(not(unix))]
    {
        0
    }
}

/// Which program process `pid` runs: a digest of its executable's path
/// (Linux: the `/proc/PID/exe` link, one `readlink`); 0 when that cannot be
/// told (another OS, another user's process). It changes when the process
/// `exec`s another program while keeping its PID, as the kubectl of the
/// Google Cloud SDK does: a dispatcher that runs the plugin, asks the server
/// its version, then `exec`s the matching kubectl, which runs the plugin
/// again: a first call of that kubectl, not a retry.
pub fn process_image(pid: u32) -> u32 {
    #[cfg(target_os = "linux")]
    {
        if pid == 0 {
            return 0;
        }
        match std::fs::read_link(format!("/proc/{pid}/exe")) {
            // FNV-1a; never 0, which means unknown.
            Ok(p) => {
                p.as_os_str()
                    .as_encoded_bytes()
                    .iter()
                    .fold(0x811c_9dc5u32, |h, &b| {
                        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
                    })
                    | 1
            }
            Err(_) => 0,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_process_image_is_its_program() {
        let me = process_image(std::process::id());
        assert_ne!(me, 0);
        assert_eq!(me, process_image(std::process::id()));
        let mut sleep = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert_ne!(process_image(sleep.id()), me);
        sleep.kill().unwrap();
        sleep.wait().unwrap();
        assert_eq!(process_image(sleep.id()), 0, "gone");
        assert_eq!(process_image(0), 0);
    }
}
