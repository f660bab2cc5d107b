//! The picker's state: the items, the filter typed so far, which items match
//! it (ranked like fzf) and which one is selected. [`Picker::handle_key`] is
//! the only way in and returns what the key means for the caller; nothing
//! here draws or reads the terminal, so every key is unit-tested.
//!
//! Keys: ↑ ↓ Ctrl-P Ctrl-N move, and so do `j` and `k` while the filter is
//! empty; once something is typed, letters (j and k too) go to the filter.
//! PageUp/PageDown and Home/End jump. Backspace erases a character, Ctrl-W
//! a word, Ctrl-U the filter. Enter chooses, Esc and Ctrl-C leave, and so
//! does `q` while the filter is empty.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use nucleo_matcher::pattern::{CaseMatching, Normalization, Pattern};
use nucleo_matcher::{Config, Matcher, Utf32Str};

/// Whether a destination's connector can be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The connector reported in recently.
    Connected,
    /// The connector has a URL but has not reported in recently.
    Disconnected,
    /// No connector has registered the destination yet: there is nothing
    /// to switch to.
    NotRegistered,
}

impl Status {
    /// As shown in the picker and in `infra list`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Connected => "connected",
            Status::Disconnected => "disconnected",
            Status::NotRegistered => "not registered",
        }
    }
}

/// One line of the picker: a destination or `destination.namespace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// `DEST` or `DEST.NAMESPACE`.
    pub name: String,
    /// The roles the user holds there, for display (`edit, view`).
    pub roles: String,
    pub status: Status,
    /// The kubeconfig's current context is this one.
    pub current: bool,
}

/// What a key means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep going: redraw and read the next key.
    Continue,
    /// The person chose the item at this index of the items given.
    Choose(usize),
    /// The person left without choosing.
    Cancel,
}

/// An item that matches the filter, with the positions (in chars) of the
/// name that matched, for highlighting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub item: usize,
    pub positions: Vec<usize>,
}

/// The picker's whole state.
pub struct Picker {
    title: String,
    items: Vec<Item>,
    filter: String,
    matches: Vec<Match>,
    /// Index into `matches`.
    selected: usize,
    /// First match shown; kept by the renderer so the selection stays in view.
    pub(crate) offset: usize,
    /// How many rows the list had at the last draw (for PageUp/PageDown).
    pub(crate) page: usize,
    /// A one-line message for the person, until the next key.
    notice: Option<String>,
    /// Whether to draw in colour (off with `NO_COLOR`).
    pub color: bool,
    matcher: Matcher,
}

impl std::fmt::Debug for Picker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Picker")
            .field("filter", &self.filter)
            .field("selected", &self.selected)
            .field("matches", &self.matches)
            .finish_non_exhaustive()
    }
}

impl Picker {
    /// A picker over `items` in the order given, with the current item
    /// (if any) selected.
    pub fn new(title: impl Into<String>, items: Vec<Item>) -> Picker {
        let selected = items.iter().position(|i| i.current).unwrap_or(0);
        let matches = (0..items.len())
            .map(|item| Match {
                item,
                positions: vec![],
            })
            .collect();
        Picker {
            title: title.into(),
            items,
            filter: String::new(),
            matches,
            selected,
            offset: 0,
            page: 10,
            notice: None,
            color: true,
            matcher: Matcher::new(Config::DEFAULT),
        }
    }

    pub fn title(&self) -> &str {
        &self.title
    }

    pub fn items(&self) -> &[Item] {
        &self.items
    }

    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// The items that match the filter, best first.
    pub fn matches(&self) -> &[Match] {
        &self.matches
    }

    /// The position of the selection in [`Picker::matches`], if anything
    /// matches.
    pub fn selected(&self) -> Option<usize> {
        (self.selected < self.matches.len()).then_some(self.selected)
    }

    /// The selected item, if anything matches.
    pub fn selected_item(&self) -> Option<&Item> {
        self.selected().map(|i| &self.items[self.matches[i].item])
    }

    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    /// Applies one key.
    pub fn handle_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::Continue;
        }
        self.notice = None;
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        match key.code {
            KeyCode::Char('c') if ctrl => Action::Cancel,
            KeyCode::Esc => Action::Cancel,
            KeyCode::Enter => self.choose(),
            KeyCode::Up => self.step(-1),
            KeyCode::Down => self.step(1),
            KeyCode::Char('p') if ctrl => self.step(-1),
            KeyCode::Char('n') if ctrl => self.step(1),
            KeyCode::PageUp => self.step(-(self.page.max(1) as isize)),
            KeyCode::PageDown => self.step(self.page.max(1) as isize),
            KeyCode::Home => self.jump(0),
            KeyCode::End => self.jump(self.matches.len().saturating_sub(1)),
            KeyCode::Backspace => {
                if self.filter.pop().is_some() {
                    self.refilter();
                }
                Action::Continue
            }
            KeyCode::Char('u') if ctrl => {
                if !self.filter.is_empty() {
                    self.filter.clear();
                    self.refilter();
                }
                Action::Continue
            }
            KeyCode::Char('w') if ctrl => {
                let trimmed = self.filter.trim_end();
                let cut = trimmed.rfind(' ').map_or(0, |i| i + 1);
                if cut != self.filter.len() {
                    self.filter.truncate(cut);
                    self.refilter();
                }
                Action::Continue
            }
            KeyCode::Char(_) if ctrl || alt => Action::Continue,
            KeyCode::Char('q') if self.filter.is_empty() => Action::Cancel,
            KeyCode::Char('j') if self.filter.is_empty() => self.step(1),
            KeyCode::Char('k') if self.filter.is_empty() => self.step(-1),
            KeyCode::Char(c) if !c.is_control() => {
                // A leading space filters nothing: it would only confuse.
                if !(c == ' ' && self.filter.is_empty()) {
                    self.filter.push(c);
                    self.refilter();
                }
                Action::Continue
            }
            _ => Action::Continue,
        }
    }

    fn choose(&mut self) -> Action {
        match self.selected_item() {
            None => {
                self.notice = Some(format!("nothing matches {:?}", self.filter));
                Action::Continue
            }
            Some(item) if item.status == Status::NotRegistered => {
                self.notice = Some(format!(
                    "{} has no connector yet, so there is nothing to switch to",
                    item.name
                ));
                Action::Continue
            }
            Some(_) => Action::Choose(self.matches[self.selected].item),
        }
    }

    /// Moves the selection by `by` rows, stopping at either end.
    fn step(&mut self, by: isize) -> Action {
        if !self.matches.is_empty() {
            let last = self.matches.len() - 1;
            self.selected = self.selected.saturating_add_signed(by).min(last);
        }
        Action::Continue
    }

    fn jump(&mut self, to: usize) -> Action {
        self.selected = to;
        Action::Continue
    }

    /// Re-ranks the items for the filter: best score first, ties in the
    /// order given. An empty filter shows everything and keeps the item
    /// that was selected; a changed filter selects the best match.
    fn refilter(&mut self) {
        let before = self.selected_item().map(|i| i.name.clone());
        self.offset = 0;
        if self.filter.trim().is_empty() {
            self.matches = (0..self.items.len())
                .map(|item| Match {
                    item,
                    positions: vec![],
                })
                .collect();
            self.selected = before
                .and_then(|name| self.items.iter().position(|i| i.name == name))
                .or_else(|| self.items.iter().position(|i| i.current))
                .unwrap_or(0);
            return;
        }
        let pattern = Pattern::parse(&self.filter, CaseMatching::Smart, Normalization::Smart);
        let mut buf = Vec::new();
        let mut ranked: Vec<(u32, Match)> = Vec::new();
        for (i, item) in self.items.iter().enumerate() {
            let mut positions: Vec<u32> = Vec::new();
            let haystack = Utf32Str::new(&item.name, &mut buf);
            if let Some(score) = pattern.indices(haystack, &mut self.matcher, &mut positions) {
                positions.sort_unstable();
                positions.dedup();
                ranked.push((
                    score,
                    Match {
                        item: i,
                        positions: positions.into_iter().map(|p| p as usize).collect(),
                    },
                ));
            }
        }
        // Stable: equal scores keep the order given.
        ranked.sort_by_key(|(score, _)| std::cmp::Reverse(*score));
        self.matches = ranked.into_iter().map(|(_, m)| m).collect();
        self.selected = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, status: Status, current: bool) -> Item {
        Item {
            name: name.into(),
            roles: "view".into(),
            status,
            current,
        }
    }

    fn picker() -> Picker {
        Picker::new(
            "test",
            vec![
                item("dev", Status::Connected, false),
                item("prod", Status::Connected, false),
                item("prod.web", Status::Connected, true),
                item("stage", Status::Disconnected, false),
                item("staging-eu", Status::NotRegistered, false),
            ],
        )
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    fn typed(p: &mut Picker, text: &str) {
        for c in text.chars() {
            assert_eq!(p.handle_key(key(KeyCode::Char(c))), Action::Continue);
        }
    }

    fn shown(p: &Picker) -> Vec<&str> {
        p.matches()
            .iter()
            .map(|m| p.items()[m.item].name.as_str())
            .collect()
    }

    fn selected(p: &Picker) -> &str {
        &p.selected_item().unwrap().name
    }

    #[test]
    fn starts_on_the_current_item() {
        let p = picker();
        assert_eq!(selected(&p), "prod.web");
        assert_eq!(shown(&p).len(), 5);
        let none_current = Picker::new("t", vec![item("a", Status::Connected, false)]);
        assert_eq!(selected(&none_current), "a");
    }

    #[test]
    fn arrows_and_ctrl_n_p_move_and_stop_at_the_ends() {
        let mut p = picker();
        p.handle_key(key(KeyCode::Down));
        assert_eq!(selected(&p), "stage");
        p.handle_key(ctrl('n'));
        assert_eq!(selected(&p), "staging-eu");
        p.handle_key(key(KeyCode::Down));
        assert_eq!(selected(&p), "staging-eu", "stops at the bottom");
        for _ in 0..4 {
            p.handle_key(ctrl('p'));
        }
        assert_eq!(selected(&p), "dev");
        p.handle_key(key(KeyCode::Up));
        assert_eq!(selected(&p), "dev", "stops at the top");
        p.handle_key(key(KeyCode::End));
        assert_eq!(selected(&p), "staging-eu");
        p.handle_key(key(KeyCode::Home));
        assert_eq!(selected(&p), "dev");
        p.page = 3;
        p.handle_key(key(KeyCode::PageDown));
        assert_eq!(selected(&p), "stage");
        p.handle_key(key(KeyCode::PageUp));
        assert_eq!(selected(&p), "dev");
    }

    #[test]
    fn j_and_k_move_only_while_the_filter_is_empty() {
        let mut p = picker();
        p.handle_key(key(KeyCode::Char('k')));
        assert_eq!(selected(&p), "prod");
        p.handle_key(key(KeyCode::Char('j')));
        p.handle_key(key(KeyCode::Char('j')));
        assert_eq!(selected(&p), "stage");
        assert_eq!(p.filter(), "");
        // Once typing, j and k are letters of the filter.
        typed(&mut p, "s");
        typed(&mut p, "k");
        assert_eq!(p.filter(), "sk");
        assert!(shown(&p).is_empty(), "{:?}", shown(&p));
        // Ctrl-N and Ctrl-P still move.
        p.handle_key(key(KeyCode::Backspace));
        assert_eq!(shown(&p), ["stage", "staging-eu"]);
        p.handle_key(ctrl('n'));
        assert_eq!(selected(&p), "staging-eu");
        p.handle_key(ctrl('p'));
        assert_eq!(selected(&p), "stage");
    }

    #[test]
    fn typing_filters_fuzzily_best_first() {
        let mut p = picker();
        typed(&mut p, "pw");
        assert_eq!(shown(&p), ["prod.web"]);
        assert_eq!(selected(&p), "prod.web");
        assert_eq!(p.matches()[0].positions, [0, 5]);
        p.handle_key(ctrl('u'));
        typed(&mut p, "prod");
        assert_eq!(shown(&p), ["prod", "prod.web"]);
        assert_eq!(selected(&p), "prod", "the best match is selected");
        p.handle_key(ctrl('u'));
        typed(&mut p, "stg");
        assert_eq!(shown(&p), ["stage", "staging-eu"]);
        // fzf syntax: ^prefix, suffix$, !negation.
        p.handle_key(ctrl('u'));
        typed(&mut p, "^st !eu");
        assert_eq!(shown(&p), ["stage"]);
        // Smart case: an upper-case letter must match exactly.
        p.handle_key(ctrl('u'));
        typed(&mut p, "Prod");
        assert!(shown(&p).is_empty());
    }

    #[test]
    fn erasing_the_filter_shows_everything_and_keeps_the_selection() {
        let mut p = picker();
        typed(&mut p, "dev");
        assert_eq!(selected(&p), "dev");
        for _ in 0..3 {
            p.handle_key(key(KeyCode::Backspace));
        }
        assert_eq!(p.filter(), "");
        assert_eq!(shown(&p).len(), 5);
        assert_eq!(selected(&p), "dev");
        p.handle_key(key(KeyCode::Backspace));
        assert_eq!(selected(&p), "dev", "backspace on nothing changes nothing");
        typed(&mut p, "prod web");
        assert_eq!(shown(&p), ["prod.web"]);
        p.handle_key(ctrl('w'));
        assert_eq!(p.filter(), "prod ");
        p.handle_key(ctrl('w'));
        assert_eq!(p.filter(), "");
        assert_eq!(shown(&p).len(), 5);
    }

    #[test]
    fn enter_chooses_the_selected_item() {
        let mut p = picker();
        typed(&mut p, "stage");
        assert_eq!(p.handle_key(key(KeyCode::Enter)), Action::Choose(3));
        let mut p = picker();
        assert_eq!(p.handle_key(key(KeyCode::Enter)), Action::Choose(2));
    }

    #[test]
    fn enter_refuses_nothing_and_unregistered_destinations() {
        let mut p = picker();
        typed(&mut p, "zzz");
        assert_eq!(p.handle_key(key(KeyCode::Enter)), Action::Continue);
        assert!(p.notice().unwrap().contains("nothing matches"));
        p.handle_key(ctrl('u'));
        assert_eq!(p.notice(), None, "a notice lasts until the next key");
        typed(&mut p, "eu");
        assert_eq!(p.handle_key(key(KeyCode::Enter)), Action::Continue);
        assert!(p.notice().unwrap().contains("staging-eu has no connector"));
    }

    #[test]
    fn esc_ctrl_c_and_q_leave() {
        assert_eq!(picker().handle_key(key(KeyCode::Esc)), Action::Cancel);
        assert_eq!(picker().handle_key(ctrl('c')), Action::Cancel);
        assert_eq!(picker().handle_key(key(KeyCode::Char('q'))), Action::Cancel);
        // With a filter, q is a letter; Esc and Ctrl-C still leave.
        let mut p = picker();
        typed(&mut p, "d");
        typed(&mut p, "q");
        assert_eq!(p.filter(), "dq");
        assert_eq!(p.handle_key(ctrl('c')), Action::Cancel);
        let mut p = picker();
        typed(&mut p, "dev");
        assert_eq!(p.handle_key(key(KeyCode::Esc)), Action::Cancel);
    }

    #[test]
    fn other_keys_change_nothing() {
        let mut p = picker();
        for k in [
            ctrl('z'),
            KeyEvent::new(KeyCode::Char('x'), KeyModifiers::ALT),
            key(KeyCode::Tab),
            key(KeyCode::F(1)),
            key(KeyCode::Char(' ')),
        ] {
            assert_eq!(p.handle_key(k), Action::Continue);
        }
        assert_eq!(p.filter(), "");
        assert_eq!(selected(&p), "prod.web");
        // Shifted letters are letters; releases are ignored.
        p.handle_key(KeyEvent::new(KeyCode::Char('D'), KeyModifiers::SHIFT));
        assert_eq!(p.filter(), "D");
        let mut release = key(KeyCode::Esc);
        release.kind = KeyEventKind::Release;
        assert_eq!(p.handle_key(release), Action::Continue);
    }

    #[test]
    fn empty_picker_cannot_choose() {
        let mut p = Picker::new("t", vec![]);
        assert_eq!(p.selected_item(), None);
        p.handle_key(key(KeyCode::Down));
        p.handle_key(key(KeyCode::Char('k')));
        assert_eq!(p.handle_key(key(KeyCode::Enter)), Action::Continue);
        assert_eq!(p.handle_key(key(KeyCode::Char('q'))), Action::Cancel);
    }
}
