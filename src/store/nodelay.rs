//! `TCP_NODELAY` on the database's connections.
//!
//! sqlx 0.9.0 no longer sets it (sqlx issue #4335; the fix, pull request #4336, is merged but not
//! released). Over TLS, sqlx hands a message larger than one TLS record (16 KiB: an ingest
//! batch's rows) to the socket as one write per record, and with Nagle's algorithm on, a write
//! that follows an unacknowledged one waits for PostgreSQL's delayed ACK, about 40 ms:
//! ingest over TLS ran at 700-1,523 deliveries/s with a p99 of 185-188 ms (README, Configuration).
//! sqlx gives no handle on its sockets, so after each new connection this finds the process's
//! TCP sockets connected to the database's port (through a duplicate of each descriptor, by
//! `pidfd_getfd` on this process: no unsafe code) and turns Nagle's algorithm off on those that
//! still have it. Remove once a sqlx release sets it again.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use rustix::fs::{FileType, fstat};
use rustix::net::sockopt;
use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};

/// Sets `TCP_NODELAY` on every TCP socket of this process connected to `port` that lacks it;
/// returns how many it set.
pub(super) fn set_on_database_sockets(port: u16) -> std::io::Result<usize> {
    let mut set = 0;
    each_tcp_socket(|socket, _, peer| {
        if peer.port() == port && sockopt::tcp_nodelay(socket) == Ok(false) {
            sockopt::set_tcp_nodelay(socket, true)?;
            set += 1;
        }
        Ok(())
    })?;
    Ok(set)
}

/// Whether this process's TCP socket bound to `local_port` has `TCP_NODELAY` (none if there is
/// no such socket), for tests and tools that check a connection.
pub fn of_local_port(local_port: u16) -> std::io::Result<Option<bool>> {
    let mut found = None;
    each_tcp_socket(|socket, local, _| {
        if local.port() == local_port {
            found = Some(sockopt::tcp_nodelay(socket)?);
        }
        Ok(())
    })?;
    Ok(found)
}

/// Calls `visit` with each of this process's connected TCP sockets (a duplicate of its
/// descriptor, closed before the next one is made: near the descriptor limit the scan takes
/// three descriptors at most) and its local and peer address. A descriptor closed meanwhile, or
/// not a connected socket, is passed over.
///
/// Only sockets are duplicated: closing a duplicate of a file's descriptor would release this
/// process's POSIX locks on that file (SQLite's, for one). If a number is reused for a file
/// between the check and the duplication, that duplicate is leaked, not closed.
fn each_tcp_socket(
    mut visit: impl FnMut(&OwnedFd, SocketAddr, SocketAddr) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let this = pidfd_open(getpid(), PidfdFlags::empty())?;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let Ok(fd) = entry.file_name().to_string_lossy().parse() else {
            continue;
        };
        if !is_socket {
            continue;
        }
        let socket = match pidfd_getfd(&this, fd, PidfdGetfdFlags::empty()) {
            Ok(socket) => socket,
            // Closed since it was listed.
            Err(rustix::io::Errno::BADF) => continue,
            // Refused (a sandbox's syscall filter): say so rather than set nothing quietly.
            Err(error) => return Err(error.into()),
        };
        if !fstat(&socket)
            .is_ok_and(|stat| FileType::from_raw_mode(stat.st_mode) == FileType::Socket)
        {
            std::mem::forget(socket);
            continue;
        }
        let address = |found: Option<rustix::net::SocketAddrAny>| {
            found.and_then(|found| SocketAddr::try_from(found).ok())
        };
        let local = rustix::net::getsockname(&socket).ok();
        let peer = rustix::net::getpeername(&socket).ok().flatten();
        if let (Some(local), Some(peer)) = (address(local), address(peer)) {
            visit(&socket, local, peer)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    use rustix::fs::{FlockOperation, fcntl_lock};

    #[test]
    fn the_scan_leaves_this_processs_locks_on_files_held() {
        // Closing any descriptor of a file releases this process's POSIX locks on it: a scan that
        // duplicated a file's descriptor and closed the duplicate would free SQLite's locks.
        let file = tempfile::NamedTempFile::new().unwrap();
        fcntl_lock(file.as_file(), FlockOperation::NonBlockingLockExclusive).unwrap();
        assert_eq!(lock_seen_by_another_process(file.path()), "locked");
        let database = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _to_database = std::net::TcpStream::connect(database.local_addr().unwrap()).unwrap();

        set_on_database_sockets(database.local_addr().unwrap().port()).unwrap();
        of_local_port(database.local_addr().unwrap().port()).unwrap();

        assert_eq!(lock_seen_by_another_process(file.path()), "locked");
        fcntl_lock(file.as_file(), FlockOperation::NonBlockingUnlock).unwrap();
        assert_eq!(lock_seen_by_another_process(file.path()), "free");
    }

    /// "locked" or "free": whether another process (Python's `fcntl.lockf`) finds a POSIX write
    /// lock on `path`.
    fn lock_seen_by_another_process(path: &Path) -> String {
        let probe = "import errno, fcntl, sys\n\
                     f = open(sys.argv[1], 'r+')\n\
                     try:\n    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n    print('free')\n\
                     except OSError as e:\n    \
                     print('locked' if e.errno in (errno.EACCES, errno.EAGAIN) else e)";
        let output = Command::new("python3")
            .args(["-c", probe])
            .arg(path)
            .output()
            .expect("python3 runs");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    #[test]
    fn a_connection_to_the_port_gets_nodelay_and_others_keep_theirs() {
        let database = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to_database = std::net::TcpStream::connect(database.local_addr().unwrap()).unwrap();
        let to_other = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert!(!to_database.nodelay().unwrap());

        let set = set_on_database_sockets(database.local_addr().unwrap().port()).unwrap();

        assert_eq!(set, 1);
        assert!(to_database.nodelay().unwrap());
        assert!(!to_other.nodelay().unwrap());
        assert_eq!(
            set_on_database_sockets(database.local_addr().unwrap().port()).unwrap(),
            0,
            "already set"
        );
    }
}
