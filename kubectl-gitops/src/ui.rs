//! Everything the CLI prints goes through [`Ui`]: results to `out`, progress and diagnostics to
//! `err`. Writers are injected so that every command runs the same in a terminal and in tests.
//!
//! Rules kept here in one place: colours only when the stream is a terminal and `NO_COLOR` is not
//! set; spinners only on a terminal (plain lines otherwise); text from the cluster goes through
//! [`escape`] before it reaches a terminal.

use std::fmt::Write as _;
use std::io::{self, BufRead, Write};
use std::time::Duration;

use comfy_table::{CellAlignment, ColumnConstraint, ContentArrangement, Table};

/// The terminal (or the test's buffers) a command talks to.
pub struct Ui<'a> {
    /// Results: tables, YAML, diffs. Pipes expect only this.
    pub out: &'a mut dyn Write,
    /// Progress, outcomes, warnings and errors.
    pub err: &'a mut dyn Write,
    /// Answers to confirmations; `None` when there is nobody to ask.
    pub input: Option<&'a mut dyn BufRead>,
    /// ANSI colours on `err` (and on `out` for diffs).
    pub color: bool,
    /// `err` is an interactive terminal: spinners instead of plain progress lines.
    pub interactive: bool,
}

impl<'a> Ui<'a> {
    /// A Ui for plain buffers: no colours, no spinners, nobody to ask.
    pub fn plain(out: &'a mut dyn Write, err: &'a mut dyn Write) -> Self {
        Self {
            out,
            err,
            input: None,
            color: false,
            interactive: false,
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// A unified diff on `out`, each line escaped; added lines green and removed lines red
    /// (the `+++`/`---` headers stay plain).
    pub fn diff(&mut self, text: &str) -> io::Result<()> {
        for line in text.lines() {
            let line = escape(line);
            let painted = match line.chars().next() {
                Some('+') if !line.starts_with("+++") => self.paint("32", &line),
                Some('-') if !line.starts_with("---") => self.paint("31", &line),
                _ => line,
            };
            writeln!(self.out, "{painted}")?;
        }
        Ok(())
    }

    /// `► message`: an action is starting.
    pub fn step(&mut self, message: &str) -> io::Result<()> {
        let mark = self.paint("1;34", "►");
        writeln!(self.err, "{mark} {message}")
    }

    /// `✔ message`: something succeeded.
    pub fn success(&mut self, message: &str) -> io::Result<()> {
        let mark = self.paint("32", "✔");
        writeln!(self.err, "{mark} {message}")
    }

    /// `✗ message`: something failed (the command decides the exit code).
    pub fn failure(&mut self, message: &str) -> io::Result<()> {
        let mark = self.paint("31", "✗");
        writeln!(self.err, "{mark} {message}")
    }

    /// `⚠ message`: worth knowing, not a failure.
    pub fn warning(&mut self, message: &str) -> io::Result<()> {
        let mark = self.paint("33", "⚠");
        writeln!(self.err, "{mark} {message}")
    }

    /// Starts waiting: a spinner on a terminal, one `◎ message` line otherwise. The spinner is
    /// cleared when the returned value is dropped.
    pub fn waiting(&mut self, message: &str) -> io::Result<Waiting> {
        if self.interactive {
            let bar = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.set_message(message.to_owned());
            bar.enable_steady_tick(Duration::from_millis(100));
            Ok(Waiting { bar: Some(bar) })
        } else {
            let mark = self.paint("36", "◎");
            writeln!(self.err, "{mark} {message}")?;
            Ok(Waiting { bar: None })
        }
    }

    /// Asks a yes/no question on `err`, reading the answer from `input`. `None` when nobody can
    /// answer (no input): the caller must refuse rather than assume.
    pub fn confirm(&mut self, question: &str) -> io::Result<Option<bool>> {
        let Some(input) = self.input.as_mut() else {
            return Ok(None);
        };
        write!(self.err, "{question} [y/N] ")?;
        self.err.flush()?;
        let mut answer = String::new();
        input.read_line(&mut answer)?;
        let answer = answer.trim().to_ascii_lowercase();
        Ok(Some(answer == "y" || answer == "yes"))
    }
}

/// A wait in progress (see [`Ui::waiting`]).
pub struct Waiting {
    bar: Option<indicatif::ProgressBar>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Whether colours are wanted on a stream: it must be a terminal, and `NO_COLOR` must be unset
/// or empty (<https://no-color.org>).
pub fn colors_wanted(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Makes text from the cluster safe to print: control characters (escape sequences, carriage
/// returns, newlines, NUL, DEL, C1 controls) become visible escapes such as `\x1b` and `\n`, so
/// an object name or a status message cannot move the cursor, recolour or rewrite the terminal.
pub fn escape(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let code = c as u32;
                if code <= 0xff {
                    let _ = write!(out, "\\x{code:02x}");
                } else {
                    let _ = write!(out, "\\u{{{code:x}}}");
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Renders rows as kubectl does: upper-case headers, columns left-aligned and separated by three
/// spaces, widths adapting to the content, no borders, no wrapping, no trailing spaces. Every
/// cell is escaped.
pub fn render_table(header: &[&str], rows: &[Vec<String>], no_header: bool) -> String {
    let mut table = Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    if !no_header {
        table.set_header(header.iter().map(|h| h.to_string()));
    }
    for row in rows {
        table.add_row(row.iter().map(|cell| escape(cell)));
    }
    let last = header.len().saturating_sub(1);
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_cell_alignment(CellAlignment::Left);
        // kubectl's look: no left padding, three spaces between columns.
        column.set_padding((0, if i == last { 0 } else { 3 }));
        column.set_constraint(ColumnConstraint::ContentWidth);
    }
    let mut text = String::new();
    if header.is_empty() || (rows.is_empty() && no_header) {
        return text;
    }
    for line in table.lines() {
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("plain name"), "plain name");
        assert_eq!(
            escape("evil\x1b[2J\x1b]0;title\x07\r\nmore\u{9b}31m\u{7f}"),
            "evil\\x1b[2J\\x1b]0;title\\x07\\r\\nmore\\x9b31m\\x7f"
        );
        assert_eq!(escape("ünïcödé ✔"), "ünïcödé ✔");
    }

    #[test]
    fn tables_look_like_kubectl() {
        let rows = vec![
            vec!["a".into(), "main@sha1:1234".into(), "False".into()],
            vec!["longer-name".into(), String::new(), "True".into()],
        ];
        let text = render_table(&["NAME", "REVISION", "READY"], &rows, false);
        assert_eq!(
            text,
            "NAME          REVISION         READY\n\
             a             main@sha1:1234   False\n\
             longer-name                    True\n"
        );
        let text = render_table(&["NAME", "REVISION", "READY"], &rows, true);
        assert_eq!(text.lines().count(), 2);
        assert!(text.starts_with("a    "), "{text}");
    }

    #[test]
    fn cells_are_escaped_in_tables() {
        let rows = vec![vec!["x\x1b[31m".into(), "line\nbreak".into()]];
        let text = render_table(&["NAME", "MESSAGE"], &rows, true);
        assert_eq!(text, "x\\x1b[31m   line\\nbreak\n");
    }

    #[test]
    fn messages_carry_marks_without_colour_when_plain() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut ui = Ui::plain(&mut out, &mut err);
        ui.success("done").unwrap();
        ui.failure("broken").unwrap();
        drop(ui.waiting("waiting").unwrap());
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "✔ done\n✗ broken\n◎ waiting\n"
        );
        assert!(out.is_empty());
    }
}
