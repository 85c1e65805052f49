//! File descriptors that cross the JavaScript boundary. A number from JavaScript is only a
//! number: taking ownership of it (`from_raw_fd`) or closing it without checking would let a
//! wrong argument close Node's own sockets or libuv's epoll descriptor, and the process would
//! fail later somewhere unrelated. So a descriptor is checked for what it is before it is
//! owned, and `closeFd` closes only descriptors this addon handed out.

use std::collections::HashSet;
use std::fmt;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

/// The DRM subsystem's character-device major number (`DRM_MAJOR` in the kernel).
const DRM_MAJOR: u32 = 226;

/// Descriptors handed to JavaScript and not yet given back through `closeFd`.
static HANDED_OUT: Mutex<Option<HashSet<RawFd>>> = Mutex::new(None);

#[derive(Debug)]
pub enum FdError {
    /// Negative, or one of stdin/stdout/stderr: never something we were passed.
    Reserved(RawFd),
    NotOpen(RawFd, std::io::Error),
    /// Open, but not a DRM device node; names what it is instead.
    NotDrm(RawFd, &'static str),
    /// Not a descriptor this addon handed out (or already given back).
    NotHandedOut(RawFd),
}

impl fmt::Display for FdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdError::Reserved(fd) => write!(f, "descriptor {fd} is not a passed descriptor"),
            FdError::NotOpen(fd, e) => write!(f, "descriptor {fd} is not open ({e})"),
            FdError::NotDrm(fd, kind) => {
                write!(f, "descriptor {fd} is {kind}, not a DRM device node")
            }
            FdError::NotHandedOut(fd) => write!(
                f,
                "descriptor {fd} was not handed out by this addon (or was already closed)"
            ),
        }
    }
}

/// The descriptor is a number above stderr that names an open file.
pub fn check_open(fd: RawFd) -> Result<(), FdError> {
    if fd < 3 {
        return Err(FdError::Reserved(fd));
    }
    // SAFETY: F_GETFD reads flags only; any integer is a valid argument.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(FdError::NotOpen(fd, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The descriptor is open and is a DRM character device (a card or render node).
pub fn check_drm_device(fd: RawFd) -> Result<(), FdError> {
    check_open(fd)?;
    // SAFETY: fstat writes into the zeroed struct we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(FdError::NotOpen(fd, std::io::Error::last_os_error()));
    }
    let kind = file_kind(st.st_mode);
    if kind != "a character device" {
        return Err(FdError::NotDrm(fd, kind));
    }
    if libc::major(st.st_rdev) != DRM_MAJOR {
        return Err(FdError::NotDrm(fd, "a character device of another driver"));
    }
    Ok(())
}

fn file_kind(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFCHR => "a character device",
        libc::S_IFIFO => "a pipe",
        libc::S_IFSOCK => "a socket",
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFBLK => "a block device",
        _ => "another kind of file",
    }
}

/// Takes ownership of a descriptor JavaScript passed us, once `check` accepts it.
pub fn adopt(fd: RawFd, check: fn(RawFd) -> Result<(), FdError>) -> Result<OwnedFd, FdError> {
    check(fd)?;
    // SAFETY: checked open above; the caller passes a descriptor whose ownership it gives up.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Hands a descriptor to JavaScript, remembering it so `close_handed_out` accepts it.
pub fn hand_out(fd: OwnedFd) -> RawFd {
    let raw = fd.into_raw_fd();
    HANDED_OUT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(raw);
    raw
}

/// Closes a descriptor `hand_out` gave JavaScript; anything else is refused untouched.
pub fn close_handed_out(fd: RawFd) -> Result<(), FdError> {
    let known = HANDED_OUT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_mut()
        .is_some_and(|set| set.remove(&fd));
    if !known {
        return Err(FdError::NotHandedOut(fd));
    }
    // SAFETY: we created it, JavaScript gave it back, and it is out of the set: closed once.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[test]
    fn refuses_reserved_closed_and_non_drm_descriptors() {
        assert!(matches!(check_open(1), Err(FdError::Reserved(1))));
        assert!(matches!(check_open(-4), Err(FdError::Reserved(-4))));
        let (r, _w) = pipe();
        let raw = r.as_raw_fd();
        assert!(check_open(raw).is_ok());
        let e = check_drm_device(raw).unwrap_err();
        assert!(e.to_string().contains("a pipe"), "{e}");
        // Far above any descriptor a test process opens, so no parallel test reuses it.
        assert!(matches!(check_open(1 << 20), Err(FdError::NotOpen(..))));
        let null = std::fs::File::open("/dev/null").unwrap();
        let e = check_drm_device(null.as_raw_fd()).unwrap_err();
        assert!(e.to_string().contains("another driver"), "{e}");
    }

    #[test]
    fn closes_only_what_it_handed_out_and_only_once() {
        let (r, w) = pipe();
        let foreign = w.as_raw_fd();
        assert!(matches!(
            close_handed_out(foreign),
            Err(FdError::NotHandedOut(_))
        ));
        assert!(
            check_open(foreign).is_ok(),
            "a foreign descriptor was closed"
        );
        let ours = hand_out(r);
        assert!(close_handed_out(ours).is_ok());
        assert!(matches!(
            close_handed_out(ours),
            Err(FdError::NotHandedOut(_))
        ));
    }
}
