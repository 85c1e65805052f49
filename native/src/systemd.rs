//! systemd's notify protocol (`sd_notify`): one datagram to `$NOTIFY_SOCKET`. Node's dgram
//! cannot send to AF_UNIX sockets, and linking libsystemd for one sendto is not worth it.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use napi_derive::napi;

/// Sends `state` (e.g. `"READY=1\nSTATUS=playing"`, `"WATCHDOG=1"`) to the service manager.
/// Returns false when not run under a notify-type unit (no `$NOTIFY_SOCKET`); a socket that
/// is set but unreachable is an error naming it.
#[napi]
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

fn notify_send(socket: &str, message: &[u8]) -> std::io::Result<()> {
    let address = match socket.strip_prefix('@') {
        // Abstract namespace: systemd hands these out inside containers.
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(socket)?,
    };
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
    fn a_missing_socket_is_an_error() {
        assert!(notify_send("/nonexistent/notify", b"READY=1").is_err());
    }
}
