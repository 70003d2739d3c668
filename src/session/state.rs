//! Session state in transaction and statement mode (`session_state`,
//! docs/transaction-mode.md): what the classifier saw in the client's
//! statements, the probe once its transaction is over, the settings that
//! follow the client to its next server, and the server a client keeps
//! while it holds state that cannot move.
//!
//! The classifier only decides when to look; the server says what is
//! there. A transaction whose text matches nothing costs one flag test.

use std::sync::Arc;

use bytes::{Buf, BytesMut};

use super::Session;
use crate::classify::{classify, Effects};
use crate::config::SessionState;
use crate::net::Conn;
use crate::protocol::{self, frontend};
use crate::server::Pins;
use crate::Error;

impl Session {
    /// Whether client messages are classified (`session_state` not off).
    #[inline]
    pub(super) fn classifies(&self) -> bool {
        self.sstate != SessionState::Off
    }

    /// The effects of a whole Query or Parse (`tag`, `body`) are added to
    /// the session's; the error that must stand in its place is returned
    /// if it is refused (see [`Judge::judge`]).
    pub(super) fn judge(&mut self, tag: u8, body: &[u8]) -> Option<Error> {
        if self.listens.is_some() {
            super::listen::note_statement(&mut self.listens, &mut self.notify_sent, tag, body);
        }
        let fx = statement_effects(tag, body);
        if fx.is_none() {
            return None;
        }
        let fx = fx | note_names((&mut self.custom, &mut self.named), tag, body, fx);
        let mut acc = self.fx;
        let refused = self.judge_of().judge(&mut acc, fx);
        self.fx = acc;
        refused
    }

    /// What [`Judge`] needs of the session.
    pub(super) fn judge_of(&self) -> Judge<'_> {
        Judge {
            sstate: self.sstate,
            pinned: self.pins.any(),
            mode: self.mode,
            cfg: &self.cfg,
            db: &self.db,
            pool: &self.pool,
        }
    }

    /// A transaction is over: if what it did may have changed session
    /// state, ask the server; record the client's settings, and keep or
    /// give up the server as the state requires. True: the client keeps
    /// its server.
    pub(super) async fn settle_state(&mut self) -> Result<bool, Error> {
        let mut fx = std::mem::take(&mut self.fx);
        if self.pins.has(Pins::LISTEN) {
            // Its own notifications: expected.
            fx = fx.without(Effects::NOTIFIED);
        }
        let pinned = self.pins.any();
        if self.sstate == SessionState::Off || !fx.needs_probe(pinned) {
            return Ok(pinned);
        }
        let named = std::mem::take(&mut self.named);
        // Only named settings changed: ask for just those (the full probe
        // costs PostgreSQL about a millisecond; this, microseconds).
        let only_named = fx.has(Effects::SETS)
            && !pinned
            && fx
                .without(Effects::SETS | Effects::SEQUENCE | Effects::ENDS)
                .is_none();
        let max = self.max_len();
        let Some(server) = self.server.as_mut() else {
            return Ok(false);
        };
        let (wanted, extra) = (&self.wanted, &self.cfg.settings.track_extra_parameters);
        // Settings the client's parameters follow already (ParameterStatus).
        let skip = |n: &str| {
            super::TRACKED.iter().any(|t| t.eq_ignore_ascii_case(n))
                || extra.contains_ci(n)
                || wanted.get(n).is_some()
        };
        if only_named {
            let values = server.probe_named(&named, max).await?;
            let mut record = self.followed.as_deref().cloned().unwrap_or_default();
            for (n, v) in values.into_iter().filter(|(n, _)| !skip(n)) {
                match v {
                    Some(v) if !v.is_empty() => record.set(&n, v),
                    _ => record.remove(&n),
                }
            }
            let record = (!record.is_empty()).then(|| Arc::new(record));
            server.followed = record.clone();
            self.followed = record;
            return Ok(false);
        }
        let found = server
            .probe(&self.pool.key.user, &self.custom, &skip, max)
            .await?;
        // What RESET left at the server's value goes back to the client's
        // own from its `options`, as it would on its own session.
        let mut mine = None;
        if let Some(start) = &self.startup {
            for (n, v) in start
                .iter()
                .filter(|(n, _)| found.settings.get(n).is_none())
            {
                mine.get_or_insert_with(|| found.settings.clone())
                    .set(n, v.clone());
            }
        }
        let held = (!found.settings.is_empty()).then(|| Arc::new(found.settings));
        self.followed = mine.map(Arc::new).or_else(|| held.clone());
        server.followed = held;
        let mut pins = found.pins;
        if fx.has(Effects::LOADS) || self.pins.has(Pins::LOAD) {
            pins.add(Pins::LOAD);
        }
        let moves = self.listens_move(pins);
        if moves {
            pins.remove(Pins::LISTEN);
        }
        self.set_pins(pins)?;
        if moves {
            Box::pin(self.hand_over_listens(found.channels)).await?;
        }
        Ok(self.pins.any())
    }

    /// Move to `pins`: a server newly kept leaves the pool's count; one no
    /// longer kept rejoins it, or is closed when the pool has no room.
    fn set_pins(&mut self, pins: Pins) -> Result<(), Error> {
        let was = self.pins.any();
        let (max, limits) = (self.judge_of().max_pinned(), self.limits());
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        match (was, pins.any()) {
            (false, true) => {
                if !self.pool.pin(server, max) {
                    // The state cannot be kept: it goes with the server.
                    server.close_needed = true;
                    return Err(too_many_pinned(&self.pool, max));
                }
                tracing::debug!("client keeps its server: {}", pins.words());
            }
            (true, false) if !self.pool.unpin(server, &limits) => server.close_needed = true,
            _ => {}
        }
        self.pins = pins;
        self.listed.entry.set_pinned(pins.bits());
        Ok(())
    }

    /// At link: whether the server last served another client (its
    /// `currval` / `lastval` would be that client's), noted; and whether
    /// the client's own settings must be applied to it
    /// (`ServerConn::apply_followed`). No future: it runs at every link.
    #[inline]
    pub(super) fn must_follow(&mut self, server: &mut crate::server::ServerConn) -> bool {
        let id = self.listed.entry.id;
        self.foreign = server.last_client != id;
        server.last_client = id;
        let same = match (&self.followed, &server.followed) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        !same && self.sstate != SessionState::Off
    }

    /// Whether the statements about to go first on this link read
    /// `currval` or `lastval` on a server another client used last; asked
    /// once per link.
    #[inline]
    pub(super) fn sequences_foreign(&mut self) -> bool {
        std::mem::take(&mut self.foreign) && self.fx.has(Effects::SEQUENCE)
    }

    /// Then they get an empty sequence state (PostgreSQL's own error for an
    /// unset one), never the other client's values.
    pub(super) async fn discard_sequences(&mut self) -> Result<(), Error> {
        let max = self.max_len();
        match self.server.as_mut() {
            Some(s) => s.run_quiet(b"DISCARD SEQUENCES", max).await,
            None => Ok(()),
        }
    }
}

impl Session {
    /// Forward the `pos` bytes before a refused message, then `instead` in
    /// place of the message (`len` bytes at `pos`).
    pub(super) async fn send_instead(
        &mut self,
        conn: &mut Conn,
        pos: usize,
        len: usize,
        instead: &[u8],
    ) -> Result<(), Error> {
        if self.sequences_foreign() {
            self.discard_sequences().await?;
        }
        let Some(server) = self.server.as_mut() else {
            return Ok(());
        };
        for part in [&conn.rbuf[..pos], instead] {
            server
                .stream
                .send_all(part)
                .await
                .map_err(Error::server_gone)?;
        }
        conn.rbuf.advance(pos + len);
        self.stats
            .add(crate::stats::C::Received, (pos + len) as u64);
        Ok(())
    }
}

/// What deciding on a statement needs of its session, borrowed apart from
/// the rest (the prepared-statement rewrite holds the others).
pub(super) struct Judge<'a> {
    pub sstate: SessionState,
    pub pinned: bool,
    pub mode: crate::config::PoolMode,
    pub cfg: &'a crate::config::Config,
    pub db: &'a crate::config::ResolvedDb,
    pub pool: &'a crate::pool::Pool,
}

impl Judge<'_> {
    /// A statement with effects `fx`: refused (the error returned) by
    /// `session_state = error`, or when its state could not be kept (the
    /// pool's `max_pinned_servers` are all kept); else its effects are
    /// added to `acc`.
    pub(super) fn judge(&self, acc: &mut Effects, fx: Effects) -> Option<Error> {
        if self.sstate == SessionState::Error && fx.refused() {
            return Some(Error::NotSupported(format!(
                "statements that change session state are not allowed in {} pooling mode (session_state = error for database \"{}\")",
                self.mode, self.db.name
            )));
        }
        if fx.has(Effects::CREATES | Effects::LOADS) && !self.pinned {
            let max = self.max_pinned();
            if self.pool.pinned() >= max {
                return Some(too_many_pinned(self.pool, max));
            }
        }
        *acc |= fx;
        None
    }

    /// `max_pinned_servers`.
    fn max_pinned(&self) -> u32 {
        self.cfg.settings.max_pinned_servers
    }
}

pub(super) fn too_many_pinned(pool: &crate::pool::Pool, max: u32) -> Error {
    Error::TooManyClients(format!(
        "too many servers kept for session state in pool \"{}\" (max_pinned_servers = {max})",
        pool.key.db
    ))
}

/// The names a statement with effects `fx` gives: the custom settings
/// (`app.x`) it names, kept for the full probe to ask for (PostgreSQL lists
/// them nowhere), and the settings its `SET`s change, for the probe of
/// just those (`named`). Returns `UNNAMED` when a change has no name in
/// the text. At most as many names as are followed are kept.
pub(super) fn note_names(
    (custom, named): (&mut Vec<String>, &mut Vec<String>),
    tag: u8,
    body: &[u8],
    fx: Effects,
) -> Effects {
    if !fx.has(Effects::SETS | Effects::MAYBE) {
        return Effects::NONE;
    }
    let sql = match tag {
        frontend::QUERY => body.split_last().map_or(body, |(_, q)| q),
        _ => protocol::cstr(body)
            .and_then(|(_, rest)| protocol::cstr(rest))
            .map_or(&b""[..], |(q, _)| q),
    };
    let max = crate::server::MAX_FOLLOWED;
    if body.contains(&b'.') {
        for n in crate::classify::custom_settings(sql) {
            if custom.len() < max && !custom.contains(&n) {
                custom.push(n);
            }
        }
    }
    if !fx.has(Effects::SETS) {
        return Effects::NONE;
    }
    match crate::classify::set_names(sql) {
        Some(names) if named.len() + names.len() <= max => {
            for n in names {
                if !named.contains(&n) {
                    named.push(n);
                }
            }
            Effects::NONE
        }
        _ => Effects::UNNAMED,
    }
}

/// What a Query or Parse body may do to session state.
#[inline]
pub(super) fn statement_effects(tag: u8, body: &[u8]) -> Effects {
    let sql = match tag {
        // The text ends the body: no scan for its end.
        frontend::QUERY => body.split_last().map(|(_, q)| q),
        frontend::PARSE => {
            return protocol::cstr(body).map_or(Effects::NONE, |(_, rest)| parse_effects(rest));
        }
        _ => None,
    };
    sql.map_or(Effects::NONE, classify)
}

/// What the statement of a Parse body after its name (`rest`: the text,
/// a NUL, the parameter types) may do to session state.
#[inline]
pub(super) fn parse_effects(rest: &[u8]) -> Effects {
    crate::classify::classify_parse(rest)
}

/// A Query or Parse (`tag`, `body`) whose statement is replaced by one that
/// raises `e` on the server: the client gets the error where it would have
/// got the statement's, and the server's transaction fails as it would
/// have.
pub(super) fn raising(tag: u8, body: &[u8], e: &Error) -> BytesMut {
    let sql = format!(
        "DO $tidepool$BEGIN RAISE EXCEPTION USING ERRCODE = '{}', MESSAGE = {}; END$tidepool$",
        e.sqlstate(),
        String::from_utf8_lossy(&protocol::quote_literal(e.to_string().as_bytes()))
    );
    let mut out = BytesMut::new();
    match tag {
        frontend::PARSE => {
            // The name and parameter types stay: the client's Bind still
            // fits, and its Execute gets the error.
            let (name, rest) = protocol::cstr(body).unwrap_or((b"", b""));
            let types = protocol::cstr(rest).map_or(&b"\0\0"[..], |(_, t)| t);
            let mut rest = sql.into_bytes();
            rest.push(0);
            rest.extend_from_slice(types);
            out.extend_from_slice(&crate::prepared::build_parse(name, &rest));
        }
        _ => protocol::query(&mut out, sql.as_bytes()),
    }
    out
}
