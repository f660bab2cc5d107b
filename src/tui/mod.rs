//! The full-screen picker behind `infra use` with no argument: a list of
//! the clusters (and namespaces) a person can reach, type-to-filter like
//! fzf, one choice out. Split so each part is tested on its own:
//!
//! - [`picker`]: the state machine (items, filter, ranking, selection);
//!   `handle_key(KeyEvent) -> Action`, pure, unit-tested without a terminal;
//! - [`render`]: draws that state with ratatui, tested on `TestBackend`;
//! - [`terminal`]: raw mode + alternate screen behind a guard that gives
//!   the terminal back on every exit path, panics included.
//!
//! Nothing here talks to the server or reads files: data in, a choice out.
//! The caller (`cli::use_cmd`) fetches the list and acts on the choice.

pub mod picker;
pub mod render;
pub mod terminal;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossterm::event::{self, Event};

pub use picker::{Action, Item, Picker, Status};

/// How often the loop looks at `stop` while no key comes.
const TICK: Duration = Duration::from_millis(200);

/// Runs the picker on the terminal until the person chooses (the index of
/// the item in `picker.items()`) or leaves (`None`), or until `stop` is set
/// (a signal asked us to end; also `None`). The terminal is restored before
/// this returns, whatever happens.
pub fn run(mut picker: Picker, stop: &AtomicBool) -> std::io::Result<Option<usize>> {
    let mut guard = terminal::Guard::enter()?;
    let mut redraw = true;
    loop {
        if redraw {
            guard
                .terminal
                .draw(|frame| render::draw(frame, &mut picker))?;
            redraw = false;
            // Lets the tests prove the terminal is restored on a panic.
            if std::env::var_os("INFRA_TUI_PANIC_FOR_TESTS").is_some() {
                panic!("a panic while the picker is open (INFRA_TUI_PANIC_FOR_TESTS)");
            }
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        if !event::poll(TICK)? {
            continue;
        }
        match event::read()? {
            Event::Key(key) => match picker.handle_key(key) {
                Action::Continue => redraw = true,
                Action::Choose(i) => return Ok(Some(i)),
                Action::Cancel => return Ok(None),
            },
            // ratatui's draw() fits its buffers to the new size first.
            Event::Resize(..) => redraw = true,
            _ => {}
        }
    }
}

/// Whether output may be coloured: not when `NO_COLOR` is set (and not
/// empty), as <https://no-color.org> asks.
pub fn color_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
