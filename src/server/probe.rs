//! What a server's session holds that the pooler cannot see in the
//! traffic: asked after a transaction whose text may have changed it
//! (`session_state = follow`, docs/transaction-mode.md).

use bytes::{Bytes, BytesMut};

use super::{ours_ended, ServerConn};
use crate::protocol::{self, backend, ErrorFields, FrameError, Params};
use crate::Error;

/// The first column of a probe's rows: what the row is about.
mod row {
    pub(super) const SETTING: &[u8] = b"s";
    pub(super) const ADVISORY_LOCK: &[u8] = b"a";
    pub(super) const TEMP_TABLE: &[u8] = b"t";
    pub(super) const HOLD_CURSOR: &[u8] = b"c";
    pub(super) const SQL_PREPARE: &[u8] = b"q";
    pub(super) const LISTEN: &[u8] = b"l";
    pub(super) const ROLE: &[u8] = b"r";
}

/// One round trip: the session-level settings, then one row per kind of
/// state that ties the session to this server process (the letters of
/// [`row`]).
const PROBE: &[u8] = b"SELECT 's', name, setting FROM pg_catalog.pg_settings WHERE source = 'session' \
UNION ALL SELECT 'a', NULL, NULL WHERE EXISTS (SELECT FROM pg_catalog.pg_locks \
WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()) \
UNION ALL SELECT 't', NULL, NULL WHERE EXISTS (SELECT FROM pg_catalog.pg_class \
WHERE relnamespace = pg_catalog.pg_my_temp_schema()) \
UNION ALL SELECT 'c', NULL, NULL WHERE EXISTS (SELECT FROM pg_catalog.pg_cursors WHERE is_holdable) \
UNION ALL SELECT 'q', name, statement FROM pg_catalog.pg_prepared_statements WHERE from_sql \
UNION ALL SELECT 'l', c, NULL FROM pg_catalog.pg_listening_channels() c \
UNION ALL SELECT 'r', pg_catalog.current_setting('role'), session_user::text";

/// A SQL prepared statement in a record of settings: its name after this
/// (no setting's name has a space), its `PREPARE` text as the value.
const PREPARED: &str = "prepare ";

/// A client may keep at most this many session settings of its own that
/// the server does not report; beyond, it keeps its server instead (its
/// record would be unbounded: custom `x.y` settings have no limit).
pub(crate) const MAX_FOLLOWED: usize = 256;

/// Why a session cannot move to another server: a set of flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pins(u8);

impl Pins {
    pub const ADVISORY_LOCK: Pins = Pins(1);
    pub const TEMP_TABLE: Pins = Pins(2);
    pub const HOLD_CURSOR: Pins = Pins(4);
    pub const SQL_PREPARE: Pins = Pins(8);
    pub const LISTEN: Pins = Pins(16);
    pub const ROLE: Pins = Pins(32);
    pub const LOAD: Pins = Pins(64);
    /// More settings than [`MAX_FOLLOWED`].
    pub const SETTINGS: Pins = Pins(128);

    const NAMES: [(Pins, &'static str); 8] = [
        (Pins::ADVISORY_LOCK, "advisory_lock"),
        (Pins::TEMP_TABLE, "temp_table"),
        (Pins::HOLD_CURSOR, "hold_cursor"),
        (Pins::SQL_PREPARE, "prepare"),
        (Pins::LISTEN, "listen"),
        (Pins::ROLE, "role"),
        (Pins::LOAD, "load"),
        (Pins::SETTINGS, "settings"),
    ];

    pub fn any(self) -> bool {
        self.0 != 0
    }

    pub fn has(self, p: Pins) -> bool {
        self.0 & p.0 != 0
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn from_bits(bits: u8) -> Pins {
        Pins(bits)
    }

    pub fn add(&mut self, p: Pins) {
        self.0 |= p.0;
    }

    pub fn remove(&mut self, p: Pins) {
        self.0 &= !p.0;
    }

    /// The reasons as words, comma-separated (SHOW CLIENTS, logs).
    pub fn words(self) -> String {
        let names: Vec<&str> = Self::NAMES
            .iter()
            .filter(|(p, _)| self.0 & p.0 != 0)
            .map(|(_, n)| *n)
            .collect();
        names.join(",")
    }
}

/// What a probe found.
#[derive(Debug, Default)]
pub struct Probed {
    /// Session-level settings the server does not report (those it
    /// reports are followed from its ParameterStatus messages).
    pub settings: Params,
    pub pins: Pins,
    /// The channels it listens on.
    pub channels: Vec<Bytes>,
}

impl ServerConn {
    /// Ask the server what its session holds (see [`PROBE`]). `login_user`
    /// is the user it logged in as: a session authorization other than it
    /// ties the session here.
    ///
    /// `custom` names the custom settings (`app.x`) the client has set:
    /// PostgreSQL lists those nowhere, so they are asked for by name.
    /// `skip` says which settings the client's parameters follow already.
    pub async fn probe(
        &mut self,
        login_user: &str,
        custom: &[String],
        skip: &(dyn Fn(&str) -> bool + Sync),
        max_len: usize,
    ) -> Result<Probed, Error> {
        let mut sql = PROBE.to_vec();
        if !custom.is_empty() {
            sql.extend_from_slice(b" UNION ALL SELECT 's', n, ");
            settings_of(&mut sql, custom);
        }
        self.send_query(&sql).await?;
        let (mut found, mut error) = (Probed::default(), None);
        // Notifications that arrive meanwhile are the client's: they go
        // back in front of what is still unread, for the session to send.
        let mut notes = BytesMut::new();
        loop {
            let (tag, body) = self.next_message(max_len).await?;
            match tag {
                backend::DATA_ROW => self.probed_row(&body, login_user, skip, &mut found)?,
                backend::ERROR_RESPONSE => error = Some(ErrorFields::parse(&body)),
                backend::PARAMETER_STATUS => self.record_parameter(&body),
                backend::NOTIFICATION_RESPONSE => protocol::message(&mut notes, tag, &body),
                backend::READY_FOR_QUERY => {
                    if !notes.is_empty() {
                        notes.extend_from_slice(&self.rbuf);
                        self.rbuf = notes;
                    }
                    return ours_ended(&body, error).map(|()| found);
                }
                _ => {}
            }
        }
    }

    fn probed_row(
        &self,
        body: &Bytes,
        login_user: &str,
        skip: &(dyn Fn(&str) -> bool + Sync),
        found: &mut Probed,
    ) -> Result<(), Error> {
        let row = protocol::data_row(body)
            .ok_or(Error::ServerProtocol(FrameError::Malformed("DataRow")))?;
        let (kind, name, value) = match row.as_slice() {
            [Some(k), n, v] => (*k, *n, *v),
            _ => return Ok(()),
        };
        let pin = match kind {
            row::ADVISORY_LOCK => Pins::ADVISORY_LOCK,
            row::TEMP_TABLE => Pins::TEMP_TABLE,
            row::HOLD_CURSOR => Pins::HOLD_CURSOR,
            row::SQL_PREPARE => match (name, value) {
                // Made again on the client's next server, as a setting is.
                (Some(n), Some(v))
                    if crate::classify::is_lone_prepare(v)
                        && found.settings.len() < MAX_FOLLOWED =>
                {
                    let key = format!("{PREPARED}{}", String::from_utf8_lossy(n));
                    found.settings.set(&key, Bytes::copy_from_slice(v));
                    return Ok(());
                }
                _ => Pins::SQL_PREPARE,
            },
            row::LISTEN => {
                if let Some(c) = name {
                    found.channels.push(Bytes::copy_from_slice(c));
                }
                Pins::LISTEN
            }
            // SET ROLE, SET SESSION AUTHORIZATION (pg_settings hides both).
            row::ROLE if name != Some(b"none") || value != Some(login_user.as_bytes()) => {
                Pins::ROLE
            }
            row::SETTING => {
                // An unset custom setting reads as NULL, a reset one as ''.
                let (Some(n), Some(v)) = (name, value) else {
                    return Ok(());
                };
                if !v.is_empty() {
                    probed_setting(n, v, skip, found);
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        found.pins.add(pin);
        Ok(())
    }

    /// The current values of the settings `names` (NULL for an unknown
    /// one): what a transaction whose `SET`s all name their setting
    /// changed.
    pub async fn probe_named(
        &mut self,
        names: &[String],
        max_len: usize,
    ) -> Result<Vec<(String, Option<Bytes>)>, Error> {
        let mut sql = b"SELECT n, ".to_vec();
        settings_of(&mut sql, names);
        self.send_query(&sql).await?;
        let (mut values, mut error) = (Vec::new(), None);
        loop {
            let (tag, body) = self.next_message(max_len).await?;
            match tag {
                backend::DATA_ROW => {
                    let row = protocol::data_row(&body)
                        .ok_or(Error::ServerProtocol(FrameError::Malformed("DataRow")))?;
                    if let [Some(n), v] = row.as_slice() {
                        let name = String::from_utf8_lossy(n).into_owned();
                        values.push((name, v.map(Bytes::copy_from_slice)));
                    }
                }
                backend::ERROR_RESPONSE => error = Some(ErrorFields::parse(&body)),
                backend::PARAMETER_STATUS => self.record_parameter(&body),
                backend::READY_FOR_QUERY => return ours_ended(&body, error).map(|()| values),
                _ => {}
            }
        }
    }

    /// Run `sql` (LISTEN, UNLISTEN): the notifications that came before
    /// its end (those still unread, and those in its reply) are returned.
    pub async fn run_keeping_notes(
        &mut self,
        sql: &[u8],
        max_len: usize,
    ) -> Result<BytesMut, Error> {
        self.send_query(sql).await?;
        let (mut notes, mut error) = (BytesMut::new(), None);
        loop {
            let (tag, body) = self.next_message(max_len).await?;
            match tag {
                backend::ERROR_RESPONSE => error = Some(ErrorFields::parse(&body)),
                backend::PARAMETER_STATUS => self.record_parameter(&body),
                backend::NOTIFICATION_RESPONSE => protocol::message(&mut notes, tag, &body),
                backend::READY_FOR_QUERY => return ours_ended(&body, error).map(|()| notes),
                _ => {}
            }
        }
    }

    /// Send `sql` as a simple Query.
    async fn send_query(&mut self, sql: &[u8]) -> Result<(), Error> {
        let mut out = BytesMut::new();
        protocol::query(&mut out, sql);
        self.stream.send_all(&out).await.map_err(Error::server_gone)
    }

    /// Bring the session-level settings the server does not report in line
    /// with `want` (the client's record), from what this server holds
    /// (`followed`): `RESET` what the client does not have, `set_config`
    /// what differs. One round trip, none when equal.
    pub async fn apply_followed(
        &mut self,
        want: Option<&std::sync::Arc<Params>>,
        max_len: usize,
    ) -> Result<(), Error> {
        let empty = Params::default();
        let want_ref = want.map_or(&empty, |w| &**w);
        let have = self.followed.take().unwrap_or_default();
        // What goes first, then the settings, then the statements (made
        // with the client's settings, search_path among them).
        let (mut sql, mut prepares) = (Vec::new(), Vec::new());
        for (n, v) in have.iter() {
            let gone = want_ref.get(n) != Some(v);
            match n.strip_prefix(PREPARED) {
                Some(stmt) if gone => {
                    sql.extend_from_slice(b"DEALLOCATE ");
                    sql.extend_from_slice(protocol::quote_ident(stmt).as_bytes());
                    sql.push(b';');
                }
                None if want_ref.get(n).is_none() => {
                    sql.extend_from_slice(b"RESET ");
                    sql.extend_from_slice(protocol::quote_ident(n).as_bytes());
                    sql.push(b';');
                }
                _ => {}
            }
        }
        for (n, v) in want_ref.iter().filter(|(n, v)| have.get(n) != Some(*v)) {
            if n.starts_with(PREPARED) {
                prepares.extend_from_slice(v);
                prepares.push(b';');
                continue;
            }
            sql.extend_from_slice(b"SELECT pg_catalog.set_config(");
            sql.extend_from_slice(&protocol::quote_literal(n.as_bytes()));
            sql.push(b',');
            sql.extend_from_slice(&protocol::quote_literal(v));
            sql.extend_from_slice(b", false);");
        }
        sql.extend_from_slice(&prepares);
        if !sql.is_empty() {
            self.run_quiet(&sql, max_len).await?;
        }
        self.followed = want.cloned();
        Ok(())
    }
}

/// The rest of a `SELECT n, …` that reads the settings `names`: their
/// values (NULL for an unknown one) as the column after `n`.
fn settings_of(sql: &mut Vec<u8>, names: &[String]) {
    sql.extend_from_slice(b"pg_catalog.current_setting(n, true) FROM pg_catalog.unnest(ARRAY[");
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            sql.push(b',');
        }
        sql.extend_from_slice(&protocol::quote_literal(n.as_bytes()));
    }
    sql.extend_from_slice(b"]::text[]) n");
}

/// A session-level setting: followed, a reason to stay, or neither.
fn probed_setting(
    name: &[u8],
    value: &[u8],
    skip: &(dyn Fn(&str) -> bool + Sync),
    found: &mut Probed,
) {
    let name = String::from_utf8_lossy(name);
    // Those the client's parameters follow already (ParameterStatus).
    if skip(&name) {
        return;
    }
    if found.settings.len() >= MAX_FOLLOWED {
        found.pins.add(Pins::SETTINGS);
        return;
    }
    found.settings.set(&name, Bytes::copy_from_slice(value));
}
