//! A router hands a copy of its users' socket to the server that adopts it.
//!
//! The server binds each router's users' socket, keeps it, and starts the router on a copy
//! ([`crate::routerproc`]), so when the router exits the socket stays open and connections
//! wait in its queue for the next router. A server restarted while its routers run adopts
//! them, but it has no copy of their sockets: if an adopted router then died, the address
//! would be closed until the new server bound it again, and users connecting in that gap would
//! be refused. So each router the server starts also serves a Unix socket
//! (`run/<workload>.router-socket`, mode 0600) over which it sends a copy of its users' socket
//! (`SCM_RIGHTS`) to a process of the same user; the adopting server takes it there, checks it
//! came from the router it adopted and listens on the router's address, and keeps it as if it
//! had bound it.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

/// How long either side waits for the other: both are on this machine, answering at once.
const TIMEOUT: Duration = Duration::from_secs(1);

/// Longest path a Unix socket address holds (`sun_path`, with its terminating NUL).
const MAX_PATH: usize = 107;

/// Where `workload`'s router serves its users' socket, if the path fits a Unix socket address
/// (a data directory deep enough makes it too long: the router then has none, and a server
/// that adopts it has no copy of its socket, as before this existed).
pub fn path(data_dir: &Path, workload: &str) -> Option<PathBuf> {
    let path = data_dir.join("run").join(format!("{workload}.router-socket"));
    (path.as_os_str().len() <= MAX_PATH).then_some(path)
}

/// Serves copies of `socket` at `path`, in a thread of its own, for as long as the process
/// runs: to processes of this user only. A file left at `path` (by a router that was killed)
/// is replaced.
pub fn serve(path: &Path, socket: OwnedFd) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt as _;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).with_context(|| format!("cannot replace {}", path.display()))?;
        }
        Ok(_) => bail!("{} exists and is not a socket: it is left alone", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let listener = UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} private", path.display()))?;
    let shown = path.display().to_string();
    std::thread::Builder::new()
        .name("socket-handover".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let accepted = conn.is_ok();
                let result = conn.context("cannot accept").and_then(|c| give(&c, &socket));
                if let Err(e) = result {
                    tracing::warn!(at = shown, error = %format!("{e:#}"), "the users' socket was not handed over");
                }
                if !accepted {
                    // Out of descriptors, say: wait rather than spin on the router's CPUs.
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        })
        .context("cannot start the socket handover thread")?;
    Ok(())
}

fn give(conn: &UnixStream, socket: &OwnedFd) -> anyhow::Result<()> {
    conn.set_write_timeout(Some(TIMEOUT))?;
    let peer = peer(conn).context("cannot read who asks")?;
    let me = nix::unistd::getuid().as_raw();
    if peer.uid() != me {
        bail!("refused to process {} of user {} (this router runs as user {me})", peer.pid(), peer.uid());
    }
    let fds = [socket.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        bail!("no room for the socket in the message");
    }
    rustix::net::sendmsg(conn, &[IoSlice::new(b"L")], &mut control, SendFlags::NOSIGNAL).context("cannot send it")?;
    Ok(())
}

/// Who is at the other end of `conn` (`SO_PEERCRED`).
fn peer(conn: &UnixStream) -> nix::Result<nix::sys::socket::UnixCredentials> {
    nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::PeerCredentials)
}

/// A copy of the users' socket of router `pid`, asked for at `path`: refused unless it comes
/// from that process and listens on `listen`.
pub fn take(path: &Path, pid: u32, listen: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let conn = UnixStream::connect(path).with_context(|| format!("cannot connect to {}", path.display()))?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    let from = peer(&conn).context("cannot read who answers")?.pid();
    // A peer in a pid namespace this process cannot see shows as 0: never the router.
    if from <= 0 || i64::from(from) != i64::from(pid) {
        bail!("{} is served by process {from}, not by the router (process {pid})", path.display());
    }
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    rustix::net::recvmsg(&conn, &mut [IoSliceMut::new(&mut byte)], &mut control, RecvFlags::CMSG_CLOEXEC)
        .with_context(|| format!("no answer from {}", path.display()))?;
    let mut got = None;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            // Every descriptor received is owned here, and closed unless it is the one kept.
            for fd in fds {
                got.get_or_insert(fd);
            }
        }
    }
    let fd = got.with_context(|| format!("{} sent no socket", path.display()))?;
    if !rustix::net::sockopt::socket_acceptconn(&fd).unwrap_or(false) {
        bail!("{} sent a socket that is not listening", path.display());
    }
    let socket = std::net::TcpListener::from(fd);
    let local = socket.local_addr().context("the socket sent has no address")?;
    if local != listen {
        bail!("{} sent a socket listening on {local}, not on {listen}", path.display());
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_of_the_listening_socket_is_taken_from_this_process_and_accepts_its_connections() {
        let dir = tempfile::tempdir().unwrap();
        let at = path(dir.path(), "shop").unwrap();
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(&at, b"not a socket").unwrap();
        let users = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = users.local_addr().unwrap();
        let e = serve(&at, OwnedFd::from(users.try_clone().unwrap())).unwrap_err();
        assert!(format!("{e:#}").contains("is not a socket"), "{e:#}");
        assert_eq!(std::fs::read(&at).unwrap(), b"not a socket", "left alone");
        // A socket left by a router that was killed is replaced.
        std::fs::remove_file(&at).unwrap();
        drop(UnixListener::bind(&at).unwrap());
        serve(&at, OwnedFd::from(users.try_clone().unwrap())).unwrap();
        assert_eq!(std::fs::metadata(&at).unwrap().permissions().mode() & 0o777, 0o600);

        let me = std::process::id();
        let e = take(&at, me + 1, addr).unwrap_err();
        assert!(format!("{e:#}").contains("not by the router"), "{e:#}");
        let other: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let e = take(&at, me, other).unwrap_err();
        assert!(format!("{e:#}").contains(&format!("listening on {addr}, not on {other}")), "{e:#}");

        let copy = take(&at, me, addr).unwrap();
        drop(users);
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = copy.accept().unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), client.local_addr().unwrap());
    }

    #[test]
    fn no_path_when_it_does_not_fit_a_unix_socket_address() {
        assert!(path(Path::new("/var/lib/ringfence"), "shop").is_some());
        assert!(path(&Path::new("/").join("d".repeat(100)), "shop").is_none());
    }
}
