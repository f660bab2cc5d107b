//! The terminal while the picker is open: raw mode, the alternate screen and
//! a hidden cursor, given back on every way out. [`Guard`] restores in
//! `Drop` (normal return, `?`, unwinding); a panic hook, installed once,
//! restores before the panic message is printed so it lands on the normal
//! screen, readable. Restoring is idempotent, so the hook and `Drop` can
//! both run.

use std::io::{IsTerminal, Stdout};
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

use crossterm::{cursor, execute, terminal};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

/// Whether the terminal is in the picker's state now.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// Whether a picker can run: stdin and stdout are both terminals.
pub fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// The terminal in raw mode on the alternate screen, drawn through ratatui
/// on stdout. Dropping it gives the terminal back.
pub struct Guard {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Guard {
    /// Takes over the terminal. On error, whatever was changed is undone.
    pub fn enter() -> std::io::Result<Guard> {
        install_panic_hook();
        ACTIVE.store(true, Ordering::SeqCst);
        // From here on, an early return restores through `Restore`.
        let restore = Restore;
        terminal::enable_raw_mode()?;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )?;
        let terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
        std::mem::forget(restore);
        Ok(Guard { terminal })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

/// Restores when dropped; used while [`Guard::enter`] is half done.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves raw mode and the alternate screen and shows the cursor, if the
/// picker had the terminal; otherwise does nothing.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = execute!(
            std::io::stdout(),
            cursor::Show,
            terminal::LeaveAlternateScreen
        );
        let _ = terminal::disable_raw_mode();
    }
}

fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}
