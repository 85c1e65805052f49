//! dma-bufs made from memfds (/dev/udmabuf): CPU-filled frames that import through the same
//! PRIME path as a hardware decoder's surfaces.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::error::{DmaBufError, DmaBufResult};

#[repr(C)]
struct UdmabufCreate {
    memfd: u32,
    flags: u32,
    offset: u64,
    size: u64,
}

const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;
// _IOW('u', 0x42, struct udmabuf_create)
const UDMABUF_CREATE: libc::c_ulong = 0x4018_7542;

/// A dma-buf holding `data`, padded to whole pages. The caller owns the returned fd.
pub fn udmabuf_create(data: &[u8]) -> DmaBufResult<OwnedFd> {
    let (dmabuf, memfd, _) = udmabuf_with_memfd(data.len())?;
    let mut written = 0;
    while written < data.len() {
        let n = unsafe {
            libc::pwrite(
                memfd.as_raw_fd(),
                data[written..].as_ptr().cast(),
                data.len() - written,
                written as libc::off_t,
            )
        };
        if n <= 0 {
            return Err(DmaBufError::Udmabuf(format!(
                "udmabuf: write: {}",
                std::io::Error::last_os_error()
            )));
        }
        written += n as usize;
    }
    Ok(dmabuf)
}

/// A dma-buf of at least `len` bytes (whole pages) and the memfd behind it, through which the
/// CPU fills it: returns (dma-buf, memfd, size).
pub fn udmabuf_with_memfd(len: usize) -> DmaBufResult<(OwnedFd, OwnedFd, usize)> {
    let (memfd, size) = memfd_sealed(len)?;
    let dmabuf = udmabuf_from_memfd(&memfd, size)?;
    Ok((dmabuf, memfd, size))
}

/// A memfd of at least `len` bytes (whole pages), sealed against shrinking as udmabuf requires.
pub fn memfd_sealed(len: usize) -> DmaBufResult<(OwnedFd, usize)> {
    let err = |what: &str| {
        DmaBufError::Udmabuf(format!(
            "udmabuf: {what}: {}",
            std::io::Error::last_os_error()
        ))
    };
    let page = 4096usize;
    let size = len.max(1).div_ceil(page) * page;
    let memfd = unsafe {
        libc::memfd_create(
            c"multihead-udmabuf".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if memfd < 0 {
        return Err(err("memfd_create"));
    }
    let memfd = unsafe { OwnedFd::from_raw_fd(memfd) };
    if unsafe { libc::ftruncate(memfd.as_raw_fd(), size as libc::off_t) } != 0 {
        return Err(err("ftruncate"));
    }
    if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) } != 0 {
        return Err(err("seal"));
    }
    Ok((memfd, size))
}

/// Wraps a sealed memfd's first `size` bytes in a dma-buf.
pub fn udmabuf_from_memfd(memfd: &OwnedFd, size: usize) -> DmaBufResult<OwnedFd> {
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/udmabuf")
        .map_err(|e| DmaBufError::Udmabuf(format!("udmabuf: /dev/udmabuf: {e}")))?;
    let request = UdmabufCreate {
        memfd: memfd.as_raw_fd() as u32,
        flags: UDMABUF_FLAGS_CLOEXEC,
        offset: 0,
        size: size as u64,
    };
    let fd = unsafe { libc::ioctl(dev.as_raw_fd(), UDMABUF_CREATE, &request) };
    if fd < 0 {
        return Err(DmaBufError::Udmabuf(format!(
            "udmabuf: UDMABUF_CREATE: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
