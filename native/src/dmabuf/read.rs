//! The CPU's read view of a dma-buf.

use std::os::fd::{AsRawFd, OwnedFd};

use super::error::{DmaBufError, DmaBufResult};

/// A read-only CPU view of a dma-buf, bracketed by DMA_BUF_IOCTL_SYNC so caches are coherent
/// with whatever device wrote it.
pub struct DmaBufRead {
    fd: i32,
    ptr: *const u8,
    len: usize,
}

#[repr(C)]
struct DmaBufSync {
    flags: u64,
}
const DMA_BUF_SYNC_READ: u64 = 1;
const DMA_BUF_SYNC_START: u64 = 0;
const DMA_BUF_SYNC_END: u64 = 4;
// _IOW('b', 0, struct dma_buf_sync)
const DMA_BUF_IOCTL_SYNC: libc::c_ulong = 0x4008_6200;

impl DmaBufRead {
    pub fn map((fd, size): &(OwnedFd, u64)) -> DmaBufResult<DmaBufRead> {
        let len = *size as usize;
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(DmaBufError::Io(
                "mmap dma-buf",
                std::io::Error::last_os_error(),
            ));
        }
        let sync = DmaBufSync {
            flags: DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ,
        };
        unsafe { libc::ioctl(fd.as_raw_fd(), DMA_BUF_IOCTL_SYNC, &sync) };
        Ok(DmaBufRead {
            fd: fd.as_raw_fd(),
            ptr: ptr.cast(),
            len,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for DmaBufRead {
    fn drop(&mut self) {
        let sync = DmaBufSync {
            flags: DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ,
        };
        unsafe {
            libc::ioctl(self.fd, DMA_BUF_IOCTL_SYNC, &sync);
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}
