//! Where a linked server is in the conversation, kept apart from I/O so the
//! release rule can be tested on its own.

use std::collections::VecDeque;

use crate::protocol::{backend, frontend, TxStatus};

/// Where a linked server is in the conversation: the release rule of
/// docs/protocol.md, kept apart from I/O so it can be
/// tested on its own.
#[derive(Debug)]
pub(crate) struct LinkState {
    /// Sync points forwarded and not yet answered by ReadyForQuery,
    /// oldest first.
    syncs: VecDeque<SyncKind>,
    /// A message that needs a later Sync (Parse, Bind, Execute...) was
    /// forwarded since the last sync point.
    unsynced: bool,
    /// The client is sending COPY data.
    in_copy_in: bool,
    /// CopyDone / CopyFail the client sent before the server's
    /// CopyInResponse reached us (a client that pipelines its COPY data):
    /// that COPY is already over on the client's side when its `G` comes.
    early_copy_ends: u8,
    /// Status of the last ReadyForQuery.
    status: TxStatus,
}

/// A client message the server answers with ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncKind {
    Query,
    Sync,
    FunctionCall,
}

impl Default for LinkState {
    fn default() -> Self {
        LinkState {
            syncs: VecDeque::new(),
            unsynced: false,
            in_copy_in: false,
            early_copy_ends: 0,
            status: TxStatus::Idle,
        }
    }
}

impl LinkState {
    /// Back to a fresh link's state, keeping the queue's allocation (one
    /// per client, not one per transaction).
    pub(crate) fn reset(&mut self) {
        self.syncs.clear();
        self.unsynced = false;
        self.in_copy_in = false;
        self.early_copy_ends = 0;
        self.status = TxStatus::Idle;
    }

    /// A client message (its type byte) is being forwarded.
    pub(crate) fn client_message(&mut self, tag: u8) {
        let sync = match tag {
            frontend::QUERY => SyncKind::Query,
            frontend::FUNCTION_CALL => SyncKind::FunctionCall,
            // The server ignores Sync during COPY IN.
            frontend::SYNC if !self.in_copy_in => SyncKind::Sync,
            frontend::COPY_DONE | frontend::COPY_FAIL if self.in_copy_in => {
                self.in_copy_in = false;
                return;
            }
            frontend::COPY_DONE | frontend::COPY_FAIL => {
                self.early_copy_ends = self.early_copy_ends.saturating_add(1);
                return;
            }
            frontend::COPY_DATA | frontend::SYNC | frontend::FLUSH => return,
            _ => {
                self.unsynced = true;
                return;
            }
        };
        self.syncs.push_back(sync);
        self.unsynced = false;
    }

    /// A server message (its type byte) other than ReadyForQuery.
    pub(crate) fn server_message(&mut self, tag: u8) {
        if tag == backend::COPY_IN_RESPONSE {
            if self.early_copy_ends > 0 {
                self.early_copy_ends -= 1;
            } else {
                self.in_copy_in = true;
            }
            // An extended-protocol COPY: the Sync the client sent after
            // Execute reaches the server during COPY IN and is ignored;
            // the client sends another after CopyDone.
            if self.syncs.front() == Some(&SyncKind::Sync) {
                self.syncs.pop_front();
            }
        }
    }

    /// ReadyForQuery with this status.
    pub(crate) fn ready(&mut self, status: TxStatus) {
        self.syncs.pop_front();
        if self.syncs.is_empty() {
            // Nothing outstanding: a CopyDone counted above matched no
            // COPY (the server ignores a stray one).
            self.early_copy_ends = 0;
        }
        self.status = status;
    }

    pub(crate) fn status(&self) -> TxStatus {
        self.status
    }

    /// ReadyForQuery messages the client is owed (its Query, Sync and
    /// FunctionCall messages the server has not answered yet).
    pub(crate) fn owed(&self) -> usize {
        self.syncs.len()
    }

    /// A message that needs a later Sync was forwarded since the last
    /// sync point.
    pub(crate) fn unsynced(&self) -> bool {
        self.unsynced
    }

    pub(crate) fn in_copy_in(&self) -> bool {
        self.in_copy_in
    }

    /// Nothing outstanding: every sync point answered, nothing forwarded
    /// since, no COPY IN.
    pub(crate) fn quiet(&self) -> bool {
        self.syncs.is_empty() && !self.unsynced && !self.in_copy_in
    }

    /// The server may be released (transaction mode): quiet and idle.
    pub(crate) fn releasable(&self) -> bool {
        self.quiet() && self.status == TxStatus::Idle
    }

    /// A query is outstanding (for query_timeout).
    pub(crate) fn busy(&self) -> bool {
        !self.syncs.is_empty() || self.unsynced
    }
}

#[cfg(test)]
mod tests {
    use super::LinkState;
    use crate::protocol::{backend, TxStatus};

    fn feed(s: &mut LinkState, client: &[u8]) {
        for &t in client {
            s.client_message(t);
        }
    }

    #[test]
    fn simple_query_releases_on_idle_ready() {
        let mut s = LinkState::default();
        feed(&mut s, b"Q");
        assert!(!s.releasable());
        s.ready(TxStatus::InBlock);
        assert!(s.quiet() && !s.releasable(), "inside a transaction");
        feed(&mut s, b"Q");
        s.ready(TxStatus::Idle);
        assert!(s.releasable());
    }

    #[test]
    fn pipelines_count_syncs_and_unsynced_work() {
        let mut s = LinkState::default();
        // P B E S P B E S: two syncs, then a third batch without its Sync.
        feed(&mut s, b"PBESPBES");
        s.ready(TxStatus::Idle);
        assert!(!s.releasable(), "one Sync still unanswered");
        s.ready(TxStatus::Idle);
        assert!(s.releasable());
        feed(&mut s, b"PBE");
        assert!(!s.releasable(), "Execute without Sync keeps the link");
        // Parse/Describe/Flush, answered without ReadyForQuery.
        let mut s = LinkState::default();
        feed(&mut s, b"PDH");
        assert!(!s.releasable() && s.busy());
        feed(&mut s, b"BES");
        s.ready(TxStatus::Idle);
        assert!(s.releasable());
    }

    #[test]
    fn copy_in_holds_the_link_until_the_client_ends_it() {
        // Simple-protocol COPY that fails mid-stream: the server answers
        // ErrorResponse + ReadyForQuery while the client still sends data.
        let mut s = LinkState::default();
        feed(&mut s, b"Q");
        s.server_message(backend::COPY_IN_RESPONSE);
        feed(&mut s, b"dd");
        s.ready(TxStatus::Idle);
        assert!(!s.releasable(), "client still in COPY IN");
        feed(&mut s, b"dc");
        assert!(s.releasable());
    }

    #[test]
    fn extended_copy_ignores_the_sync_sent_before_copy_data() {
        let mut s = LinkState::default();
        feed(&mut s, b"PBES");
        s.server_message(backend::COPY_IN_RESPONSE);
        feed(&mut s, b"ddSH");
        feed(&mut s, b"cS");
        s.ready(TxStatus::Idle);
        assert!(
            s.releasable(),
            "one ReadyForQuery for the Sync after CopyDone"
        );
    }

    #[test]
    fn copy_data_sent_before_the_copy_began_ends_it_all_the_same() {
        // The client sends its data and CopyDone without waiting for
        // CopyInResponse; we see them before the server's `G`.
        let mut s = LinkState::default();
        feed(&mut s, b"Qddc");
        s.server_message(backend::COPY_IN_RESPONSE);
        s.ready(TxStatus::Idle);
        assert!(s.releasable(), "the COPY ended before its G reached us");
        // The same by the extended protocol, its first Sync ignored.
        let mut s = LinkState::default();
        feed(&mut s, b"PBESdcS");
        s.server_message(backend::COPY_IN_RESPONSE);
        s.ready(TxStatus::Idle);
        assert!(s.releasable());
        // A COPY that failed before it began (no G): the CopyDone counted
        // early matches nothing, and the next COPY is held as usual.
        let mut s = LinkState::default();
        feed(&mut s, b"Qdc");
        s.ready(TxStatus::Idle);
        feed(&mut s, b"Q");
        s.server_message(backend::COPY_IN_RESPONSE);
        s.ready(TxStatus::Idle);
        assert!(!s.releasable(), "client still in COPY IN");
        feed(&mut s, b"c");
        assert!(s.releasable());
    }

    #[test]
    fn function_call_is_a_sync_point() {
        let mut s = LinkState::default();
        feed(&mut s, b"F");
        assert!(s.busy());
        s.ready(TxStatus::Idle);
        assert!(s.releasable());
    }
}
