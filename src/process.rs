//! Becoming a service process: `-d` (daemon: into the background, stdio
//! to /dev/null) and `-u` / `user` (drop root for another OS user). Both
//! run before any thread is started: `fork` keeps only the calling thread.

use std::ffi::CString;

use nix::unistd::{Gid, Uid, User};

/// Switch to OS user `name` (its uid, gid and supplementary groups). Only
/// root may; switching to the user already running is a no-op.
pub fn switch_user(name: &str) -> Result<(), String> {
    let user = User::from_name(name)
        .map_err(|e| format!("cannot look up user \"{name}\": {e}"))?
        .ok_or_else(|| format!("no such user: \"{name}\""))?;
    if Uid::current() == user.uid {
        return Ok(());
    }
    if !Uid::current().is_root() {
        return Err(format!(
            "cannot switch to user \"{name}\": only root can (running as uid {})",
            Uid::current()
        ));
    }
    let cname = CString::new(name).map_err(|_| format!("invalid user name \"{name}\""))?;
    nix::unistd::initgroups(&cname, user.gid).map_err(|e| format!("initgroups: {e}"))?;
    nix::unistd::setgid(user.gid).map_err(|e| format!("setgid: {e}"))?;
    nix::unistd::setuid(user.uid).map_err(|e| format!("setuid: {e}"))?;
    // Dropping root must not be undoable.
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() || Gid::current() != user.gid {
        return Err(format!("could not drop privileges to \"{name}\""));
    }
    Ok(())
}

/// Go into the background: the parent exits 0, the child goes on with
/// stdin, stdout and stderr on /dev/null, in the same working directory
/// (relative paths in the config stay valid for RELOAD).
pub fn daemonize() -> Result<(), String> {
    nix::unistd::daemon(true, false).map_err(|e| format!("cannot go into the background: {e}"))
}
