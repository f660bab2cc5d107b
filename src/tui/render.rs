//! Draws a [`Picker`] into a ratatui frame: a title, the filter prompt with
//! the match count, the column header, the list (scrolled so the selection
//! is in view), a notice line and the help line. ASCII only, so it reads the
//! same on any terminal; colour only when the picker's `color` is on.
//! Tested with ratatui's `TestBackend` (tests below and tests/tui.rs).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::picker::{Picker, Status};

/// The help line while the filter is empty: j, k and q are keys.
pub const HELP_EMPTY: &str =
    " Up/Down or j/k: move   type: filter   Enter: switch   Esc or q: quit";
/// The help line once something is typed: every letter goes to the filter.
pub const HELP_TYPING: &str =
    " Up/Down ^N/^P: move   letters: filter   ^U: clear   Enter: switch   Esc: quit";

/// Left of each row: the selection marker and the current marker.
const GUTTER: usize = 4;
const GAP: usize = 2;

/// Draws the picker over the whole frame and places the cursor after the
/// filter. Updates the picker's scroll offset and page size.
pub fn draw(frame: &mut Frame, picker: &mut Picker) {
    let area = frame.area();
    let [title, prompt, header, list, notice, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let color = picker.color;
    let paint = |s: Style| if color { s } else { Style::new() };

    frame.render_widget(
        Paragraph::new(Line::from(format!(" {}", picker.title())))
            .style(Style::new().add_modifier(Modifier::BOLD)),
        title,
    );

    // The prompt, with the count at the right.
    let count = format!("{}/{} ", picker.matches().len(), picker.items().len());
    let prompt_text = format!("> {}", picker.filter());
    frame.render_widget(Paragraph::new(Line::from(prompt_text.clone())), prompt);
    let count_w = count.len() as u16;
    let prompt_w = Line::from(prompt_text.as_str()).width() as u16;
    if prompt.width > count_w + prompt_w + 1 {
        let right = Rect {
            x: prompt.x + prompt.width - count_w,
            width: count_w,
            ..prompt
        };
        frame.render_widget(
            Paragraph::new(Line::from(count)).style(paint(Style::new().fg(Color::DarkGray))),
            right,
        );
    }
    if prompt.height > 0 {
        let x = (prompt.x + prompt_w).min(prompt.x + prompt.width.saturating_sub(1));
        frame.set_cursor_position(Position::new(x, prompt.y));
    }

    // Column widths from every item, so filtering does not shift columns;
    // names give way first when the terminal is narrow.
    let status_w = Status::NotRegistered.label().len();
    let role_w = picker
        .items()
        .iter()
        .map(|i| i.roles.len())
        .chain([4])
        .max()
        .unwrap_or(4);
    let mut name_w = picker
        .items()
        .iter()
        .map(|i| i.name.chars().count())
        .chain([4])
        .max()
        .unwrap_or(4);
    let width = area.width as usize;
    let fixed = GUTTER + GAP + role_w + GAP + status_w;
    if fixed + name_w > width {
        name_w = width.saturating_sub(fixed).max(8).min(name_w);
    }

    let head = format!(
        "{:GUTTER$}{:name_w$}{:GAP$}{:role_w$}{:GAP$}STATUS",
        "", "NAME", "", "ROLE", ""
    );
    frame.render_widget(
        Paragraph::new(Line::from(head)).style(Style::new().add_modifier(Modifier::DIM)),
        header,
    );

    // Scroll so the selection is in view, and use the room there is.
    let rows = list.height as usize;
    picker.page = rows.max(1);
    let n = picker.matches().len();
    let selected = picker.selected();
    if let Some(sel) = selected {
        if sel < picker.offset {
            picker.offset = sel;
        } else if rows > 0 && sel >= picker.offset + rows {
            picker.offset = sel + 1 - rows;
        }
    }
    picker.offset = picker.offset.min(n.saturating_sub(rows));

    let mut lines: Vec<Line> = Vec::new();
    if picker.items().is_empty() {
        lines.push(Line::from("    no clusters to choose from"));
    } else if n == 0 {
        lines.push(Line::from("    nothing matches"));
    }
    for (i, m) in picker
        .matches()
        .iter()
        .enumerate()
        .skip(picker.offset)
        .take(rows)
    {
        let item = &picker.items()[m.item];
        let is_sel = selected == Some(i);
        let mut spans = vec![
            Span::raw(if is_sel { "> " } else { "  " }),
            if item.current {
                Span::styled(
                    "* ",
                    paint(Style::new().fg(Color::Green)).add_modifier(Modifier::BOLD),
                )
            } else {
                Span::raw("  ")
            },
        ];
        // The name, cut to its column, with the matched letters marked.
        let mark = if color {
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::UNDERLINED)
        };
        let chars: Vec<char> = item.name.chars().collect();
        let cut = chars.len() > name_w;
        let keep = if cut { name_w - 1 } else { chars.len() };
        for (pos, c) in chars.iter().take(keep).enumerate() {
            let style = if m.positions.binary_search(&pos).is_ok() {
                mark
            } else {
                Style::new()
            };
            spans.push(Span::styled(c.to_string(), style));
        }
        if cut {
            spans.push(Span::raw("~"));
        }
        let shown = keep + usize::from(cut);
        spans.push(Span::raw(" ".repeat(name_w.saturating_sub(shown) + GAP)));
        spans.push(Span::raw(format!("{:role_w$}{:GAP$}", item.roles, "")));
        let status_style = match item.status {
            Status::Connected => Style::new().fg(Color::Green),
            Status::Disconnected => Style::new().fg(Color::Red),
            Status::NotRegistered => Style::new().fg(Color::DarkGray),
        };
        spans.push(Span::styled(item.status.label(), paint(status_style)));
        let mut line = Line::from(spans);
        if is_sel {
            line = line.style(if color {
                Style::new()
                    .bg(Color::DarkGray)
                    .add_modifier(Modifier::BOLD)
            } else {
                Style::new().add_modifier(Modifier::REVERSED)
            });
        }
        lines.push(line);
    }
    frame.render_widget(Paragraph::new(lines), list);

    if let Some(text) = picker.notice() {
        frame.render_widget(
            Paragraph::new(Line::from(format!(" {text}")))
                .style(paint(Style::new().fg(Color::Yellow))),
            notice,
        );
    }
    let help_text = if picker.filter().is_empty() {
        HELP_EMPTY
    } else {
        HELP_TYPING
    };
    frame.render_widget(
        Paragraph::new(Line::from(help_text)).style(Style::new().add_modifier(Modifier::DIM)),
        help,
    );
}

#[cfg(test)]
mod tests {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::*;
    use crate::tui::picker::Item;

    fn picker(n: usize) -> Picker {
        let mut items = vec![
            Item {
                name: "prod".into(),
                roles: "view".into(),
                status: Status::Connected,
                current: false,
            },
            Item {
                name: "prod.web".into(),
                roles: "edit, view".into(),
                status: Status::Connected,
                current: true,
            },
            Item {
                name: "stage".into(),
                roles: "edit".into(),
                status: Status::Disconnected,
                current: false,
            },
            Item {
                name: "new".into(),
                roles: "view".into(),
                status: Status::NotRegistered,
                current: false,
            },
        ];
        for i in 0..n {
            items.push(Item {
                name: format!("extra-{i:02}"),
                roles: "view".into(),
                status: Status::Connected,
                current: false,
            });
        }
        let mut p = Picker::new("Switch kubectl to a cluster on infra.example.com", items);
        p.color = false;
        p
    }

    /// The screen as text, one string per row, trailing spaces cut.
    fn screen(p: &mut Picker, w: u16, h: u16) -> Vec<String> {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, p)).unwrap();
        let buf = t.backend().buffer();
        (0..h)
            .map(|y| {
                (0..w)
                    .map(|x| buf[(x, y)].symbol())
                    .collect::<String>()
                    .trim_end()
                    .to_string()
            })
            .collect()
    }

    fn key(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    #[test]
    fn draws_the_list_with_markers_in_80_by_24() {
        let mut p = picker(0);
        let s = screen(&mut p, 80, 24);
        assert_eq!(s[0], " Switch kubectl to a cluster on infra.example.com");
        assert_eq!(s[1], format!("{:<76}4/4", ">"));
        assert_eq!(s[2], "    NAME      ROLE        STATUS");
        assert_eq!(s[3], "    prod      view        connected");
        assert_eq!(s[4], "> * prod.web  edit, view  connected");
        assert_eq!(s[5], "    stage     edit        disconnected");
        assert_eq!(s[6], "    new       view        not registered");
        for row in &s[7..23] {
            assert_eq!(row, "");
        }
        assert_eq!(s[23], HELP_EMPTY);
    }

    #[test]
    fn both_help_lines_fit_in_80_columns() {
        assert!(HELP_EMPTY.len() <= 80, "{}", HELP_EMPTY.len());
        assert!(HELP_TYPING.len() <= 80, "{}", HELP_TYPING.len());
        assert!(HELP_EMPTY.contains("j/k") && HELP_EMPTY.contains(" q"));
    }

    #[test]
    fn filter_shows_in_the_prompt_with_the_typing_help() {
        let mut p = picker(0);
        for c in "st".chars() {
            p.handle_key(key(c));
        }
        let s = screen(&mut p, 80, 24);
        assert!(
            s[1].starts_with("> st ") && s[1].ends_with("1/4"),
            "{}",
            s[1]
        );
        assert_eq!(s[3], ">   stage     edit        disconnected");
        assert_eq!(s[4], "");
        assert_eq!(s[23], HELP_TYPING);
        p.handle_key(key('z'));
        let s = screen(&mut p, 80, 24);
        assert_eq!(s[3], "    nothing matches");
    }

    #[test]
    fn a_long_list_scrolls_to_keep_the_selection_in_view() {
        let mut p = picker(40);
        let s = screen(&mut p, 80, 24);
        // 24 rows: title, prompt, header, 19 of the list, notice, help.
        assert_eq!(s[3].trim(), "prod      view        connected");
        assert_eq!(s[21].trim(), "extra-14  view        connected");
        for _ in 0..30 {
            p.handle_key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE));
        }
        let s = screen(&mut p, 80, 24);
        assert_eq!(s[21], ">   extra-27  view        connected", "{s:#?}");
        assert_eq!(s[3].trim(), "extra-09  view        connected");
        // Bigger: the list uses the room and keeps the selection.
        let s = screen(&mut p, 80, 60);
        assert_eq!(s[3].trim(), "prod      view        connected");
        assert!(s.iter().any(|r| r.starts_with(">   extra-27")));
    }

    #[test]
    fn small_and_narrow_terminals_still_draw() {
        let mut p = picker(0);
        let s = screen(&mut p, 30, 8);
        assert_eq!(s[4], "> * prod.web  edit, view  conn");
        assert_eq!(s[7], HELP_EMPTY[..30].trim_end());
        // Long names give way to the other columns.
        let mut p = Picker::new(
            "t",
            vec![Item {
                name: "a-very-long-destination-name.with-a-long-namespace".into(),
                roles: "edit".into(),
                status: Status::Connected,
                current: false,
            }],
        );
        p.color = false;
        let s = screen(&mut p, 40, 10);
        assert_eq!(s[3], ">   a-very-long-d~  edit  connected");
        // Too small for anything but does not panic.
        for (w, h) in [(1, 1), (5, 2), (0, 0), (80, 3)] {
            screen(&mut picker(3), w, h);
        }
    }

    #[test]
    fn notices_show_above_the_help() {
        let mut p = picker(0);
        for _ in 0..2 {
            p.handle_key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE));
        }
        p.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        let s = screen(&mut p, 80, 24);
        assert_eq!(
            s[22],
            " new has no connector yet, so there is nothing to switch to"
        );
    }

    #[test]
    fn colour_marks_matches_and_status() {
        let mut p = picker(0);
        p.color = true;
        for c in "web".chars() {
            p.handle_key(key(c));
        }
        let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
        t.draw(|f| draw(f, &mut p)).unwrap();
        let buf = t.backend().buffer();
        // "> * prod.web": the w at column 9 is marked.
        assert_eq!(buf[(9, 3)].symbol(), "w");
        assert_eq!(buf[(9, 3)].fg, Color::Yellow);
        assert_eq!(buf[(8, 3)].fg, Color::Reset);
        // Without colour, nothing is coloured.
        p.color = false;
        t.draw(|f| draw(f, &mut p)).unwrap();
        let buf = t.backend().buffer();
        for y in 0..24 {
            for x in 0..80 {
                assert_eq!(buf[(x, y)].fg, Color::Reset, "({x},{y})");
            }
        }
    }
}
