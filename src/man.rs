//! Manual pages, made from the sources users already read so that they
//! cannot drift: tidepool(1) from the command line's definition (in the
//! binary, with clap_mangen) and tidepool(5) from the configuration
//! reference, docs/configuration.md, embedded here and turned into roff.
//!
//! The Markdown in that file is a small, regular subset: headings,
//! paragraphs, `-` lists, fenced code and key tables. Only that subset is
//! read; anything else comes through as text.

/// The configuration reference, as built into this binary.
const REFERENCE: &str = include_str!("../docs/configuration.md");

/// tidepool(5): the configuration reference as a manual page.
pub fn config_page(version: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        ".TH TIDEPOOL 5 \"\" \"tidepool {}\" \"File Formats\"\n",
        text(version)
    ));
    out.push_str(".SH NAME\ntidepool \\- configuration files of tidepool, the PostgreSQL connection pooler\n");
    out.push_str(".SH SYNOPSIS\n/etc/tidepool/pgbouncer.ini, /etc/tidepool/userlist.txt\n");
    let mut lines = REFERENCE.lines().peekable();
    let mut table: Option<Vec<String>> = None;
    while let Some(line) = lines.next() {
        if let Some(head) = &table {
            if let Some(cells) = row(line) {
                if !cells
                    .iter()
                    .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
                {
                    out.push_str(&table_row(head, &cells));
                }
                continue;
            }
            table = None;
        }
        if line.starts_with("# ") {
            out.push_str(".SH DESCRIPTION\n");
        } else if let Some(h) = line.strip_prefix("## ") {
            out.push_str(&format!(".SH \"{}\"\n", plain(h).to_uppercase()));
        } else if let Some(h) = line.strip_prefix("### ") {
            out.push_str(&format!(".SS \"{}\"\n", plain(h)));
        } else if line.starts_with("```") {
            out.push_str(".PP\n.RS 4\n.nf\n");
            for code in lines.by_ref() {
                if code.starts_with("```") {
                    break;
                }
                out.push_str(&verbatim(code));
                out.push('\n');
            }
            out.push_str(".fi\n.RE\n");
        } else if let Some(cells) = row(line) {
            table = Some(cells);
        } else if let Some(item) = line.strip_prefix("- ") {
            out.push_str(".IP \\(bu 2\n");
            out.push_str(&inline(item));
            out.push('\n');
        } else if line.trim().is_empty() {
            // A paragraph starts at the next text line.
            if lines
                .peek()
                .is_some_and(|l| !l.trim().is_empty() && !l.starts_with('#'))
            {
                out.push_str(".PP\n");
            }
        } else {
            out.push_str(&inline(line.trim_start()));
            out.push('\n');
        }
    }
    out.push_str(".SH \"SEE ALSO\"\ntidepool(1), pgbouncer(5)\n");
    out
}

/// A table line's cells, or None for any other line.
fn row(line: &str) -> Option<Vec<String>> {
    let inner = line.trim().strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(|c| c.trim().to_string()).collect())
}

/// One table row: its first cell as the tag, the others labelled by their
/// column's heading.
fn table_row(head: &[String], cells: &[String]) -> String {
    let mut out = String::from(".TP\n");
    out.push_str(&inline(cells.first().map_or("", String::as_str)));
    out.push('\n');
    let mut facts = Vec::new();
    let mut notes = String::new();
    for (h, c) in head.iter().zip(cells).skip(1) {
        if c.is_empty() {
            continue;
        }
        if h == "notes" {
            notes = inline(c);
        } else {
            facts.push(format!("{}: {}", plain(h), inline(c)));
        }
    }
    if !facts.is_empty() {
        out.push_str(&facts.join("; "));
        out.push('\n');
    }
    if !notes.is_empty() {
        if !facts.is_empty() {
            out.push_str(".br\n");
        }
        out.push_str(&notes);
        out.push('\n');
    }
    out
}

/// A heading's words without their Markdown marks.
fn plain(s: &str) -> String {
    text(&s.replace(['`', '*'], ""))
}

/// Text with `code` in bold and **bold** / *italic* kept, escaped for roff.
fn inline(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        let mark = match c {
            '`' => Some(("`", "\\fB")),
            '*' if rest.starts_with("**") => Some(("**", "\\fB")),
            '*' => Some(("*", "\\fI")),
            _ => None,
        };
        if let Some((m, font)) = mark {
            if let Some(end) = rest[m.len()..].find(m) {
                let inner = &rest[m.len()..m.len() + end];
                out.push_str(font);
                out.push_str(&text(inner));
                out.push_str("\\fR");
                rest = &rest[m.len() + end + m.len()..];
                continue;
            }
        }
        out.push_str(&text(&rest[..c.len_utf8()]));
        rest = &rest[c.len_utf8()..];
    }
    guard(out)
}

/// A line of code, as it is (escaped).
fn verbatim(s: &str) -> String {
    guard(text(s))
}

/// Escapes roff's escape character, and writes characters beyond ASCII
/// as groff's Unicode escapes (plain `groff` reads its input as Latin-1).
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            c if c.is_ascii() => out.push(c),
            c => out.push_str(&format!("\\[u{:04X}]", u32::from(c))),
        }
    }
    out
}

/// A line that would start with a control character is kept as text.
fn guard(s: String) -> String {
    match s.starts_with('.') || s.starts_with('\'') {
        true => format!("\\&{s}"),
        false => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_marks_become_fonts() {
        assert_eq!(
            inline("a `b` **c** *d* e"),
            "a \\fBb\\fR \\fBc\\fR \\fId\\fR e"
        );
        assert_eq!(inline("x \\ y"), "x \\e y");
        assert_eq!(inline("a … b"), "a \\[u2026] b");
        assert_eq!(inline(".starts with a dot"), "\\&.starts with a dot");
        // An unclosed mark is text.
        assert_eq!(inline("2 * 3"), "2 * 3");
    }

    #[test]
    fn tables_become_tagged_paragraphs() {
        let head: Vec<String> = ["key", "default", "notes"].map(String::from).to_vec();
        let cells: Vec<String> = ["`pool_mode`", "`session`", "one of three"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            table_row(&head, &cells),
            ".TP\n\\fBpool_mode\\fR\ndefault: \\fBsession\\fR\n.br\none of three\n"
        );
    }

    #[test]
    fn the_page_has_every_section_and_no_markdown_left() {
        let page = config_page("1.0");
        assert!(page.starts_with(".TH TIDEPOOL 5"));
        for h in [
            "\n.SH NAME\n",
            "\n.SH DESCRIPTION\n",
            "\n.SH \"[DATABASES]\"\n",
        ] {
            assert!(page.contains(h), "{h}");
        }
        assert!(!page.contains("|---"), "a table separator was left");
        assert!(!page.contains("```"), "a fence was left");
        assert!(!page.contains("\n## "), "a heading was left");
    }

    #[test]
    fn every_key_is_on_the_page() {
        use crate::config::{DatabaseConfig, Settings, UserConfig};
        let page = config_page("1.0");
        for k in Settings::KEYS
            .iter()
            .chain(DatabaseConfig::KEYS)
            .chain(UserConfig::KEYS)
        {
            let tag = format!("\n.TP\n\\fB{}\\fR\n", k.name);
            assert!(page.contains(&tag), "{} is not in tidepool(5)", k.name);
        }
    }
}
