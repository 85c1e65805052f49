//! systemd's notify protocol (`sd_notify`): one datagram to `$NOTIFY_SOCKET`. Node's dgram
//! cannot send to AF_UNIX sockets, and linking libsystemd for one sendto is not worth it.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use napi_derive::napi;

/// Sends `state` (e.g. `"READY=1\nSTATUS=playing"`, `"WATCHDOG=1"`) to the service manager.
/// Returns false when not run under a notify-type unit (no `$NOTIFY_SOCKET`); a socket that
/// is set but unreachable is an error naming it.
#[napi(catch_unwind)]
pub fn sd_notify(state: String) -> napi::Result<bool> {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = socket.to_string_lossy().into_owned();
    notify_send(&socket, state.as_bytes())
        .map(|()| true)
        .map_err(|e| {
            napi::Error::from_reason(format!("ERR_SD_NOTIFY: NOTIFY_SOCKET {socket}: {e}"))
        })
}

/// Sends `state` with one descriptor attached (SCM_RIGHTS), as `FDSTORE=1` needs. Returns
/// false when there is no `$NOTIFY_SOCKET`.
pub fn sd_notify_fd(state: &str, fd: BorrowedFd<'_>) -> napi::Result<bool> {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = socket.to_string_lossy().into_owned();
    notify_send_fd(&socket, state.as_bytes(), fd)
        .map(|()| true)
        .map_err(|e| {
            napi::Error::from_reason(format!("ERR_SD_NOTIFY: NOTIFY_SOCKET {socket}: {e}"))
        })
}

fn notify_address(socket: &str) -> std::io::Result<SocketAddr> {
    match socket.strip_prefix('@') {
        // Abstract namespace: systemd hands these out inside containers.
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(socket),
    }
}

fn notify_send_fd(socket: &str, message: &[u8], fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let sender = UnixDatagram::unbound()?;
    sender.connect_addr(&notify_address(socket)?)?;
    let mut iov = libc::iovec {
        iov_base: message.as_ptr() as *mut libc::c_void,
        iov_len: message.len(),
    };
    let fd_len = std::mem::size_of::<libc::c_int>() as u32;
    // u64s: the control buffer must be aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: plain libc calls on buffers that outlive them; CMSG_SPACE(4) = 24 bytes fits in 64.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(fd_len) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_len) as usize;
        let raw: libc::c_int = fd.as_raw_fd();
        std::ptr::copy_nonoverlapping(
            (&raw as *const libc::c_int).cast::<u8>(),
            libc::CMSG_DATA(cmsg),
            fd_len as usize,
        );
        libc::sendmsg(sender.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if sent as usize != message.len() {
        return Err(std::io::Error::other(format!(
            "sent {sent} of {} bytes",
            message.len()
        )));
    }
    Ok(())
}

fn notify_send(socket: &str, message: &[u8]) -> std::io::Result<()> {
    let address = notify_address(socket)?;
    let sender = UnixDatagram::unbound()?;
    let sent = sender.send_to_addr(message, &address)?;
    if sent != message.len() {
        return Err(std::io::Error::other(format!(
            "sent {sent} of {} bytes",
            message.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_path_socket_receives_the_state() {
        let dir = std::env::temp_dir().join(format!("mh-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        notify_send(path.to_str().unwrap(), b"READY=1\nSTATUS=ok").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_abstract_socket_receives_the_state() {
        let name = format!("mh-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&address).unwrap();
        notify_send(&format!("@{name}"), b"WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn a_descriptor_travels_with_the_state() {
        use std::os::unix::fs::MetadataExt;
        let name = format!("mh-notify-fd-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&address).unwrap();
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        notify_send_fd(
            &format!("@{name}"),
            b"FDSTORE=1\nFDNAME=kms-card0",
            file.as_fd(),
        )
        .unwrap();
        let mut buf = [0u8; 64];
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let (n, received) = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control);
            let n = libc::recvmsg(listener.as_raw_fd(), &mut msg, 0);
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            assert!(!cmsg.is_null(), "no descriptor attached");
            assert_eq!((*cmsg).cmsg_type, libc::SCM_RIGHTS);
            let mut fd: libc::c_int = -1;
            std::ptr::copy_nonoverlapping(
                libc::CMSG_DATA(cmsg),
                (&mut fd as *mut libc::c_int).cast::<u8>(),
                4,
            );
            (
                n,
                <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd),
            )
        };
        assert_eq!(&buf[..n as usize], b"FDSTORE=1\nFDNAME=kms-card0");
        // The same open file arrived, not just the same path.
        assert_eq!(
            received.metadata().unwrap().ino(),
            file.metadata().unwrap().ino()
        );
    }

    #[test]
    fn a_missing_socket_is_an_error() {
        assert!(notify_send("/nonexistent/notify", b"READY=1").is_err());
    }
}
