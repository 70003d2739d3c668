//! What a SQL text may do to session state, read from its bytes: the cheap
//! classifier behind `session_state` (docs/transaction-mode.md).
//!
//! It looks at the leading keywords of each statement (after whitespace and
//! comments) and at the names of the functions called anywhere in the text
//! (`set_config`, `pg_advisory_lock` and friends). It is aware of quotes,
//! dollar quotes and comments, reads bytes only (any client encoding: the
//! bytes it looks for are ASCII, which every server encoding keeps as is),
//! and is cheap on what matches nothing: a text with no `;` before its end
//! and no `(` costs one keyword and one `memchr2`.
//!
//! It is a first guess, never the last word: what a statement really did is
//! asked of the server afterwards (`server::probe`) whenever the guess says
//! it may have changed something. What it cannot see (a function that calls
//! `set_config` inside) is covered by what the server reports.

mod names;

pub use names::{custom_settings, is_lone_prepare, set_names};

/// What a text may do to session state: a set of flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effects(u16);

impl Effects {
    /// Nothing.
    pub const NONE: Effects = Effects(0);
    /// Changes a setting for the session: `SET`, `SET SESSION
    /// CHARACTERISTICS`, `set_config(…, false)`; or SQL `PREPARE`, which
    /// follows the client the same way.
    pub const SETS: Effects = Effects(1);
    /// Creates state that cannot move to another server: an advisory
    /// lock, a temp table, a `WITH HOLD` cursor, `SET ROLE`, `SET SESSION
    /// AUTHORIZATION`.
    pub const CREATES: Effects = Effects(2);
    /// `LOAD`: a library stays loaded for the life of the server process.
    pub const LOADS: Effects = Effects(4);
    /// May change session state in ways the text does not show (`RESET`,
    /// `DISCARD`, `DO`, `CALL`, `CREATE` naming `pg_temp`, a notification
    /// where none was expected): worth asking the server.
    pub const MAYBE: Effects = Effects(8);
    /// May end pinned state (`UNLISTEN`, `DEALLOCATE`, `CLOSE`, `DROP`,
    /// the unlock functions, `RESET ROLE`): worth asking the server when
    /// the client holds some.
    pub const ENDS: Effects = Effects(16);
    /// Reads `currval` / `lastval`, which depend on the session's earlier
    /// `nextval` calls.
    pub const SEQUENCE: Effects = Effects(32);
    /// Not from a statement: a notification came from the server (a
    /// LISTEN the text did not show, when the client was not listening).
    pub const NOTIFIED: Effects = Effects(64);
    /// A setting changed whose name the text does not give (a prepared
    /// `set_config($1, …)`, `SET SESSION CHARACTERISTICS`): the server is
    /// asked about all of them, not only the named ones.
    pub const UNNAMED: Effects = Effects(128);
    /// `LISTEN`: the channels move to the pool's listening connection
    /// once the transaction is over (they pin the client only when they
    /// cannot).
    pub const LISTENS: Effects = Effects(256);

    /// Whether any flag of `other` is set.
    #[inline]
    pub fn has(self, other: Effects) -> bool {
        self.0 & other.0 != 0
    }

    /// No flag set.
    #[inline]
    pub fn is_none(self) -> bool {
        self.0 == 0
    }

    /// These flags without those of `other`.
    #[inline]
    pub fn without(self, other: Effects) -> Effects {
        Effects(self.0 & !other.0)
    }

    /// What `session_state = error` refuses.
    #[inline]
    pub fn refused(self) -> bool {
        self.has(Effects(
            Self::SETS.0 | Self::CREATES.0 | Self::LOADS.0 | Self::LISTENS.0,
        ))
    }

    /// Whether the server should be asked what changed, once the
    /// transaction is over; `pinned`: the client holds pinned state.
    #[inline]
    pub fn needs_probe(self, pinned: bool) -> bool {
        let always = Self::SETS.0
            | Self::CREATES.0
            | Self::LOADS.0
            | Self::MAYBE.0
            | Self::NOTIFIED.0
            | Self::UNNAMED.0
            | Self::LISTENS.0;
        self.0 & always != 0 || (pinned && self.has(Self::ENDS))
    }
}

impl std::ops::BitOr for Effects {
    type Output = Effects;
    #[inline]
    fn bitor(self, o: Effects) -> Effects {
        Effects(self.0 | o.0)
    }
}

impl std::ops::BitOrAssign for Effects {
    #[inline]
    fn bitor_assign(&mut self, o: Effects) {
        self.0 |= o.0;
    }
}

/// What `sql` (one Query's text, or a Parse's) may do to session state.
///
/// Inline, with the walk out of line: the common case then saves no
/// registers.
#[inline]
pub fn classify(sql: &[u8]) -> Effects {
    // Most texts start with a keyword we need not read (SELECT, INSERT...):
    // told here, without a call.
    let fx = match sql.first() {
        Some(b) if b.is_ascii_alphabetic() && !may_be_keyword(sql, 0) => Effects::NONE,
        _ => leading(sql, 0),
    };
    match find2(b';', b'(', sql) {
        None => fx,
        // A final `;` (and blanks): nothing more to see.
        Some(i) if sql[i] == b';' && sql[i + 1..].iter().all(is_blank_or_semi) => fx,
        Some(_) => fx | lex(sql),
    }
}

/// What the statement of a Parse may do, `rest` being the body after the
/// statement's name: the text, a NUL, the parameter types.
///
/// A Parse holds one statement (PostgreSQL refuses more), so a text that
/// opens with a keyword is told by that keyword and, if it calls anything,
/// by a walk to its end: one scan finds the end or the first `(`, where
/// finding the end and then classifying took two (75 instructions per
/// Parse of pgbench's select).
///
/// Inline, with the rest out of line: the common case then saves no
/// registers (18 instructions per Parse).
#[inline]
pub fn classify_parse(rest: &[u8]) -> Effects {
    let found = match rest.first() {
        Some(b) if b.is_ascii_alphabetic() => find2(0, b'(', rest),
        _ => None,
    };
    match found {
        // Nearly every Parse: no call in it.
        Some(end) if rest[end] == 0 => {
            let sql = &rest[..end];
            match may_be_keyword(sql, 0) {
                false => Effects::NONE,
                true => keyword_effects(sql, 0),
            }
        }
        _ => parse_in_full(rest, found),
    }
}

/// [`classify_parse`] for a text that calls something (the `(` at
/// `paren`), or opens with blanks, a comment or an empty statement (`None`:
/// read in full).
#[inline(never)]
fn parse_in_full(rest: &[u8], paren: Option<usize>) -> Effects {
    let Some(paren) = paren else {
        return match memchr::memchr(0, rest) {
            Some(end) => classify(&rest[..end]),
            None => Effects::NONE,
        };
    };
    let end = memchr::memchr(0, &rest[paren..]).map_or(rest.len(), |k| paren + k);
    let sql = &rest[..end];
    leading(sql, 0) | lex(sql)
}

/// The first `a` or `b` in `hay`. On x86-64, memchr's SSE2 searcher
/// called directly: SSE2 is in the baseline, so there is no feature check
/// and no call through a pointer (measured on pgbench's select text: 80
/// instructions where `memchr2` took 103).
#[inline]
fn find2(a: u8, b: u8, hay: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if let Some(two) = memchr::arch::x86_64::sse2::memchr::Two::new(a, b) {
        return two.find(hay);
    }
    memchr::memchr2(a, b, hay)
}

fn is_blank_or_semi(b: &u8) -> bool {
    b.is_ascii_whitespace() || *b == b';' || *b == 0
}

/// Walk the whole text, skipping quotes and comments: each statement's
/// leading keywords and each function called.
#[inline(never)]
fn lex(sql: &[u8]) -> Effects {
    let mut fx = Effects::NONE;
    walk(sql, |at, paren| {
        fx |= if paren {
            called(sql, at)
        } else {
            leading(sql, at)
        };
    });
    fx
}

/// Call `visit(i, false)` at each statement start after a `;` and
/// `visit(i, true)` at each `(`, outside quotes and comments.
fn walk(sql: &[u8], mut visit: impl FnMut(usize, bool)) {
    let mut i = 0;
    while i < sql.len() {
        match sql[i] {
            b'\'' => i = skip_string(sql, i),
            b'"' => i = skip_quoted(sql, i + 1, b'"'),
            b'$' => i = skip_dollar(sql, i),
            b'-' if sql.get(i + 1) == Some(&b'-') => i = skip_line(sql, i),
            b'/' if sql.get(i + 1) == Some(&b'*') => i = skip_block(sql, i),
            b';' => {
                visit(i + 1, false);
                i += 1;
            }
            b'(' => {
                visit(i, true);
                i += 1;
            }
            _ => i += 1,
        }
    }
}

/// Past a `'…'` string at `i` (`''` inside; backslash escapes in an
/// `E'…'` string).
fn skip_string(sql: &[u8], i: usize) -> usize {
    let escapes =
        i > 0 && sql[i - 1].eq_ignore_ascii_case(&b"E"[0]) && (i < 2 || !is_ident(sql[i - 2]));
    let mut j = i + 1;
    while j < sql.len() {
        match sql[j] {
            b'\\' if escapes => j += 2,
            b'\'' if sql.get(j + 1) == Some(&b'\'') => j += 2,
            b'\'' => return j + 1,
            _ => j += 1,
        }
    }
    sql.len()
}

/// Past a quoted identifier whose body starts at `j` (doubled quotes inside).
fn skip_quoted(sql: &[u8], mut j: usize, q: u8) -> usize {
    while j < sql.len() {
        if sql[j] == q {
            if sql.get(j + 1) == Some(&q) {
                j += 2;
                continue;
            }
            return j + 1;
        }
        j += 1;
    }
    sql.len()
}

/// Past a dollar-quoted string at `i` (`$$…$$`, `$tag$…$tag$`); a `$`
/// that starts none (`$1`, or inside a name) is one byte.
fn skip_dollar(sql: &[u8], i: usize) -> usize {
    if i > 0 && is_ident(sql[i - 1]) {
        return i + 1;
    }
    let mut j = i + 1;
    if sql.get(j).is_some_and(|b| b.is_ascii_digit()) {
        return j;
    }
    while j < sql.len() && is_ident(sql[j]) && sql[j] != b'$' {
        j += 1;
    }
    if sql.get(j) != Some(&b'$') {
        return i + 1;
    }
    let tag = &sql[i..=j];
    match memchr::memmem::find(&sql[j + 1..], tag) {
        Some(k) => j + 1 + k + tag.len(),
        None => sql.len(),
    }
}

fn skip_line(sql: &[u8], i: usize) -> usize {
    memchr::memchr(b'\n', &sql[i..]).map_or(sql.len(), |k| i + k + 1)
}

/// Past a `/* … */` comment at `i`; they nest.
fn skip_block(sql: &[u8], i: usize) -> usize {
    let (mut depth, mut j) = (0usize, i);
    while j + 1 < sql.len() {
        match (sql[j], sql[j + 1]) {
            (b'/', b'*') => {
                depth += 1;
                j += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                j += 2;
                if depth == 0 {
                    return j;
                }
            }
            _ => j += 1,
        }
    }
    sql.len()
}

/// Past whitespace and comments from `i`.
#[inline]
pub(crate) fn skip_blank(sql: &[u8], mut i: usize) -> usize {
    loop {
        match sql.get(i) {
            Some(b) if b.is_ascii_whitespace() || *b == b'(' => i += 1,
            Some(b'-') if sql.get(i + 1) == Some(&b'-') => i = skip_line(sql, i),
            Some(b'/') if sql.get(i + 1) == Some(&b'*') => i = skip_block(sql, i),
            _ => return i,
        }
    }
}

/// Bytes that continue a name: letters, digits, `_`, `$`, and any byte of
/// a multi-byte character. A table: one load where the tests were five.
const IDENT: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
        b += 1;
    }
    t
};

#[inline(always)]
pub(crate) fn is_ident(b: u8) -> bool {
    IDENT[b as usize]
}

/// The keyword at `i` (after blanks and comments), lower-cased into `buf`
/// (longer words are cut: no keyword here is longer), and where it ends.
fn word(sql: &[u8], i: usize, buf: &mut [u8; 16]) -> (usize, usize) {
    let start = skip_blank(sql, i);
    let mut j = start;
    while j < sql.len() && is_ident(sql[j]) {
        if j - start < buf.len() {
            buf[j - start] = sql[j].to_ascii_lowercase();
        }
        j += 1;
    }
    ((j - start).min(buf.len()), j)
}

/// Whether the word at `start` may be one of the keywords [`leading`]
/// knows, by its first letter and where it ends: most statements (SELECT,
/// INSERT, UPDATE, BEGIN, COMMIT...) are told apart here with a few byte
/// tests, before any lower-casing.
#[inline(always)]
fn may_be_keyword(sql: &[u8], start: usize) -> bool {
    let ends = |len: usize| !sql.get(start + len).is_some_and(|b| is_ident(*b));
    let Some(first) = sql.get(start) else {
        return false;
    };
    match first | 0x20 {
        // set
        0x73 => ends(3),
        // reset
        0x72 => ends(5),
        // do, drop, discard / declare, deallocate
        0x64 => ends(2) || ends(4) || ends(7) || ends(10),
        // load, listen
        0x6c => ends(4) || ends(6),
        // unlisten
        0x75 => ends(8),
        // prepare
        0x70 => ends(7),
        // call, close, create
        0x63 => ends(4) || ends(5) || ends(6),
        _ => false,
    }
}

/// The effects named by the statement that starts at `i`.
#[inline]
fn leading(sql: &[u8], i: usize) -> Effects {
    // Nearly always a letter right there.
    let start = match sql.get(i) {
        Some(b) if b.is_ascii_alphabetic() => i,
        _ => skip_blank(sql, i),
    };
    if !may_be_keyword(sql, start) {
        return Effects::NONE;
    }
    keyword_effects(sql, start)
}

/// The effects of the statement whose keyword (maybe one we know) is at
/// `start`.
#[inline(never)]
fn keyword_effects(sql: &[u8], start: usize) -> Effects {
    let mut buf = [0u8; 16];
    let (n, end) = word(sql, start, &mut buf);
    match &buf[..n] {
        b"set" => after_set(sql, end),
        b"reset" => Effects::MAYBE | Effects::ENDS,
        b"discard" => Effects::MAYBE | Effects::ENDS,
        b"listen" => Effects::LISTENS,
        b"unlisten" | b"close" | b"drop" => Effects::ENDS,
        b"deallocate" => Effects::MAYBE | Effects::ENDS,
        b"prepare" => match next(sql, end) {
            (b"transaction", _) => Effects::NONE,
            // Followed like a setting (see `server::probe`).
            _ => Effects::SETS,
        },
        b"declare" if contains_ci(&sql[end..], b"hold") => Effects::CREATES,
        b"create" => after_create(sql, end),
        b"load" => Effects::LOADS,
        b"do" | b"call" => Effects::MAYBE,
        _ => Effects::NONE,
    }
}

/// The next keyword after `i`, lower-cased, and where it ends.
fn next(sql: &[u8], i: usize) -> (&'static [u8], usize) {
    const KNOWN: &[&[u8]] = &[
        b"local",
        b"transaction",
        b"constraints",
        b"session",
        b"characteristics",
        b"authorization",
        b"role",
        b"or",
        b"replace",
        b"global",
        b"temp",
        b"temporary",
    ];
    let mut buf = [0u8; 16];
    let (n, end) = word(sql, i, &mut buf);
    let w = KNOWN.iter().find(|k| **k == &buf[..n]).copied();
    (w.unwrap_or(b""), end)
}

/// `SET …`: local and transaction-only forms change nothing that lasts.
fn after_set(sql: &[u8], i: usize) -> Effects {
    match next(sql, i) {
        (b"local" | b"transaction" | b"constraints", _) => Effects::NONE,
        (b"role", _) => Effects::CREATES,
        (b"session", end) => match next(sql, end) {
            (b"authorization", _) => Effects::CREATES,
            _ => Effects::SETS,
        },
        _ => Effects::SETS,
    }
}

/// `CREATE [OR REPLACE] [GLOBAL | LOCAL] TEMP[ORARY] …`; anything else
/// that names the temp schema is only a maybe.
fn after_create(sql: &[u8], mut i: usize) -> Effects {
    loop {
        match next(sql, i) {
            (b"or" | b"replace" | b"global" | b"local", end) => i = end,
            (b"temp" | b"temporary", _) => return Effects::CREATES,
            _ if contains_ci(&sql[i..], b"pg_temp") => return Effects::MAYBE,
            _ => return Effects::NONE,
        }
    }
}

/// The name of the function called by the `(` at `i` (quoted or not).
fn called_name(sql: &[u8], i: usize) -> &[u8] {
    let mut end = i;
    while end > 0 && sql[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    if end > 0 && sql[end - 1] == b'"' {
        // A quoted name: `"pg_advisory_lock"(1)`.
        return match memchr::memrchr(b'"', &sql[..end - 1]) {
            Some(s) => &sql[s + 1..end - 1],
            None => b"",
        };
    }
    let mut s = end;
    while s > 0 && is_ident(sql[s - 1]) {
        s -= 1;
    }
    &sql[s..end]
}

/// The function called by the `(` at `i`, if it is one we know.
fn called(sql: &[u8], i: usize) -> Effects {
    let name = called_name(sql, i);
    if !(7..=27).contains(&name.len()) {
        return Effects::NONE;
    }
    let mut buf = [0u8; 27];
    for (d, s) in buf.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    match &buf[..name.len()] {
        b"set_config" => set_config(sql, i),
        b"pg_advisory_lock"
        | b"pg_advisory_lock_shared"
        | b"pg_try_advisory_lock"
        | b"pg_try_advisory_lock_shared" => Effects::CREATES,
        b"pg_advisory_unlock" | b"pg_advisory_unlock_shared" | b"pg_advisory_unlock_all" => {
            Effects::ENDS
        }
        b"currval" | b"lastval" => Effects::SEQUENCE,
        _ => Effects::NONE,
    }
}

/// `set_config(name, value, is_local)` at `(` `i`: a literal `true` as
/// its last argument makes it transaction-local.
fn set_config(sql: &[u8], i: usize) -> Effects {
    let close = memchr::memchr(b')', &sql[i..]).map_or(sql.len(), |k| i + k);
    let args = &sql[i..close];
    let last = args
        .iter()
        .rposition(|&b| b == b',')
        .map_or(&args[..0], |c| &args[c + 1..]);
    let last = last.trim_ascii();
    if last.eq_ignore_ascii_case(b"true") || last.eq_ignore_ascii_case(b"'true'") {
        Effects::NONE
    } else {
        Effects::SETS
    }
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(sql: &str) -> Effects {
        classify(sql.as_bytes())
    }

    #[test]
    fn plain_statements_match_nothing() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
            "select count(*) from t where x in (1, 2)",
            "INSERT INTO t VALUES ($1, 'SET x = 1; LISTEN y')",
            "UPDATE t SET a = 1",
            "SET LOCAL search_path = x",
            "set transaction isolation level serializable",
            "SET CONSTRAINTS ALL DEFERRED",
            "BEGIN; SET LOCAL statement_timeout = 5; COMMIT",
            "select set_config('a.b', 'c', true)",
            "SELECT pg_advisory_xact_lock(1)",
            "PREPARE TRANSACTION 'x'",
            "DECLARE c CURSOR FOR SELECT 1",
            "CREATE TABLE temperature (x int)",
            "SELECT $$ ; select pg_advisory_lock(1) $$",
            "SELECT 1 -- ; SET x = 1\n",
            "SELECT 1 /* ; LISTEN /* nested */ x; */",
            "SELECT \"lastval\" FROM t",
            "SELECT E'\\' ; SET x = 1'",
        ] {
            assert_eq!(c(sql), Effects::NONE, "{sql}");
        }
    }

    #[test]
    fn parse_bodies_read_as_their_text() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            "select count(*) from t where x in (1, 2)",
            "SELECT '(' || $1",
            "SELECT 1 -- (\n",
            "SET search_path = a",
            "  set statement_timeout to 5",
            ";SET x.y = 1",
            "/* ( */ LISTEN ch",
            "select set_config('a', 'b', false)",
            "SELECT pg_advisory_lock(1)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT (1)",
            "CREATE TEMP TABLE t (x int)",
            "",
        ] {
            // A NUL, then two parameter types whose bytes hold `(` (40).
            let mut rest = sql.as_bytes().to_vec();
            rest.extend_from_slice(b"\0\0\x02\0\0\0\x28\0\0\x28\0");
            assert_eq!(classify_parse(&rest), c(sql), "{sql}");
        }
        // No end: malformed, left to the server.
        assert_eq!(classify_parse(b"SET x = 1"), Effects::NONE);
        assert_eq!(classify_parse(b"SELECT f(1"), Effects::NONE);
    }

    #[test]
    fn session_settings() {
        for sql in [
            "SET search_path = a, b",
            "  /* c */ set statement_timeout to 5",
            "SET SESSION default_transaction_read_only = on",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "SET TIME ZONE 'UTC'",
            "SELECT 1; SET x.y = 1",
            "select pg_catalog.set_config('search_path', 'x', false)",
            "SELECT set_config('a', 'b', $1)",
            "SELECT \"set_config\"('a', 'b', false)",
        ] {
            assert!(c(sql).has(Effects::SETS), "{sql}");
            assert!(c(sql).refused() && c(sql).needs_probe(false), "{sql}");
        }
    }

    #[test]
    fn pinned_state() {
        for sql in [
            "SELECT pg_advisory_lock(1)",
            "select PG_TRY_ADVISORY_LOCK_SHARED (1, 2)",
            "CREATE TEMP TABLE t (x int)",
            "create or replace temporary view v as select 1",
            "CREATE GLOBAL TEMPORARY TABLE t (x int)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "SET ROLE other",
            "SET SESSION AUTHORIZATION other",
        ] {
            assert!(c(sql).has(Effects::CREATES), "{sql}");
        }
        // Moves to the pool's listening connection rather than pinning.
        assert!(!c("LISTEN ch").has(Effects::CREATES));
        assert!(c("listen ch").has(Effects::LISTENS) && c("LISTEN ch").needs_probe(false));
        assert!(c("PREPARE p AS SELECT 1").has(Effects::SETS));
        assert!(is_lone_prepare(b"prepare p (int) AS SELECT $1;"));
        assert!(!is_lone_prepare(b"PREPARE p AS SELECT 1; DELETE FROM t"));
        assert!(!is_lone_prepare(b"PREPARE TRANSACTION 'x'"));
        assert!(!is_lone_prepare(b"SELECT 1"));
        assert!(c("LOAD 'auto_explain'").has(Effects::LOADS));
    }

    #[test]
    fn maybes_and_ends() {
        assert!(c("DO $$ BEGIN EXECUTE 'LISTEN ch'; END $$").has(Effects::MAYBE));
        assert!(c("call p()").has(Effects::MAYBE));
        assert!(c("RESET ALL").needs_probe(false));
        assert!(c("DISCARD TEMP").needs_probe(false));
        assert!(c("CREATE TABLE pg_temp.t (x int)").has(Effects::MAYBE));
        for sql in [
            "UNLISTEN *",
            "CLOSE c",
            "DROP TABLE t",
            "SELECT pg_advisory_unlock_all()",
        ] {
            assert!(c(sql).has(Effects::ENDS), "{sql}");
            assert!(
                !c(sql).needs_probe(false) && c(sql).needs_probe(true),
                "{sql}"
            );
            assert!(!c(sql).refused(), "{sql}");
        }
        assert!(c("DEALLOCATE p").needs_probe(false));
        assert!(c("SELECT lastval()").has(Effects::SEQUENCE));
        assert!(c("select currval('s')").has(Effects::SEQUENCE));
    }

    #[test]
    fn custom_settings_are_named() {
        let n = |sql: &str| custom_settings(sql.as_bytes());
        assert_eq!(n("SET app.tenant = 4"), vec!["app.tenant"]);
        assert_eq!(
            n("set session App.X to 'y'; RESET b.c"),
            vec!["app.x", "b.c"]
        );
        assert_eq!(n("SELECT set_config('a.b', $1, false)"), vec!["a.b"]);
        assert!(n("SET search_path = x; SELECT 'SET a.b = 1'").is_empty());
    }

    #[test]
    fn set_names_are_read_from_the_text() {
        let n = |sql: &str| set_names(sql.as_bytes());
        assert_eq!(
            n("SET search_path = a, b"),
            Some(vec!["search_path".into()])
        );
        assert_eq!(
            n("set session Statement_Timeout to 5; SET TIME ZONE 'UTC'; SET LOCAL x = 1"),
            Some(vec!["statement_timeout".into(), "timezone".into()])
        );
        assert_eq!(
            n("SELECT set_config('app.x', $1, false)"),
            Some(vec!["app.x".into()])
        );
        assert_eq!(n("SELECT set_config($1, 'v', false)"), None);
        assert_eq!(
            n("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
            None
        );
        assert_eq!(n("PREPARE p AS SELECT 1"), None);
        assert_eq!(n("SELECT 1"), Some(vec![]));
    }

    #[test]
    fn hostile_texts_end() {
        for sql in [
            "'",
            "$",
            "$a",
            "$a$",
            "/*",
            "--",
            "E'\\",
            "\"",
            "(",
            ";",
            "set",
            "create or",
            "\u{fffd}(",
            "select \"x(",
        ] {
            let _ = c(sql);
        }
        let long = "(".repeat(100_000);
        assert_eq!(c(&long), Effects::NONE);
    }
}
