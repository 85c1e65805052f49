//! The presentation thread: waits on the card for page-flip events and on the kernel's
//! uevent socket for hotplug, and drives the engine. Flip timing never waits on the
//! JavaScript event loop; JavaScript only hears about flips afterwards.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::engine::{Engine, EngineEvent};

const DRM_EVENT_FLIP_COMPLETE: u32 = 2;

/// What the thread reports, besides engine events: connectors changed.
pub enum Notice<'a> {
    Events(&'a [EngineEvent], &'a Engine),
    Hotplug(&'a Engine),
}

pub type Sink = Box<dyn Fn(Notice<'_>) + Send>;

pub struct Presenter {
    stop: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl Presenter {
    pub fn start(
        engine: Arc<Mutex<Option<Engine>>>,
        card_fd: RawFd,
        card_name: Vec<u8>,
        sink: Sink,
    ) -> std::io::Result<Presenter> {
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if stop < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        let stop_fd = stop.as_raw_fd();
        let uevents = uevent_socket().ok();
        let thread = std::thread::Builder::new()
            .name("multihead-present".into())
            .spawn(move || {
                crate::realtime::realtime_enter();
                presenter_run(engine, card_fd, &card_name, stop_fd, uevents, sink)
            })?;
        Ok(Presenter {
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(&mut self) {
        let one: u64 = 1;
        unsafe { libc::write(self.stop.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Presenter {
    fn drop(&mut self) {
        self.stop();
    }
}

fn presenter_run(
    engine: Arc<Mutex<Option<Engine>>>,
    card_fd: RawFd,
    card_name: &[u8],
    stop_fd: RawFd,
    uevents: Option<OwnedFd>,
    sink: Sink,
) {
    // Fixed buffers: the loop runs every frame and must not allocate.
    let mut buf = [0u8; 4096];
    let mut flips = [(0u32, 0u32, 0u64); 64];
    let uevent_fd = uevents.as_ref().map_or(-1, |fd| fd.as_raw_fd());
    let heartbeat = crate::heartbeat::Heartbeat::register("present");
    loop {
        heartbeat.beat();
        let mut fds = [
            libc::pollfd {
                fd: card_fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop_fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: uevent_fd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // A short timeout: bound video waits for its decoder's first frame without a flip
        // event to wake it (see Engine::idle_tick).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 3, 20) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        if n == 0 {
            let mut guard = engine.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(engine) = guard.as_mut() {
                engine.idle_tick();
                // A group that failed or stalled while no CRTC flips must still be heard of.
                if !engine.events.is_empty() {
                    sink(Notice::Events(&engine.events, engine));
                    engine.events.clear();
                }
            }
            continue;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            let len = unsafe { libc::read(card_fd, buf.as_mut_ptr().cast(), buf.len()) };
            if len > 0 {
                let count = flips_parse(&buf[..len as usize], &mut flips);
                let mut guard = engine.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(engine) = guard.as_mut() {
                    // The next frame is committed in here: this is the part that must not allocate.
                    crate::alloc_count::frame_path(|| {
                        for &(crtc, sequence, timestamp_ns) in &flips[..count] {
                            engine.flip_complete(crtc, sequence, timestamp_ns);
                        }
                    });
                    if !engine.events.is_empty() {
                        sink(Notice::Events(&engine.events, engine));
                        engine.events.clear();
                    }
                }
            }
        }
        if fds[2].revents & libc::POLLIN != 0 {
            let len = unsafe {
                libc::recv(
                    uevent_fd,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if len > 0 && uevent_is_drm_hotplug(&buf[..len as usize], card_name) {
                let mut guard = engine.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(engine) = guard.as_mut() {
                    if engine.refresh().is_ok() {
                        sink(Notice::Hotplug(engine));
                    }
                }
            }
        }
    }
}

/// (crtc, sequence, timestamp ns) of each flip-complete event in a read from the card.
fn flips_parse(mut data: &[u8], out: &mut [(u32, u32, u64)]) -> usize {
    let u32_at = |d: &[u8], at: usize| u32::from_ne_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]);
    let mut count = 0;
    while data.len() >= 8 {
        let kind = u32_at(data, 0);
        let length = u32_at(data, 4) as usize;
        if length < 8 || length > data.len() {
            break;
        }
        // struct drm_event_vblank: base, user_data, tv_sec, tv_usec, sequence, crtc_id
        if kind == DRM_EVENT_FLIP_COMPLETE && length >= 32 && count < out.len() {
            let sec = u64::from(u32_at(data, 16));
            let usec = u64::from(u32_at(data, 20));
            out[count] = (
                u32_at(data, 28),
                u32_at(data, 24),
                sec * 1_000_000_000 + usec * 1000,
            );
            count += 1;
        }
        data = &data[length..];
    }
    count
}

fn uevent_socket() -> std::io::Result<OwnedFd> {
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_KOBJECT_UEVENT,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    // Group 1: the kernel's own uevents, so this works without udev (the VM tests have none).
    addr.nl_groups = 1;
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// A DRM hotplug uevent for this card (`card_name` such as b"card1"). Uevents of other
/// cards are not ours: another card appearing must not make us re-read our connectors.
fn uevent_is_drm_hotplug(message: &[u8], card_name: &[u8]) -> bool {
    let mut drm = false;
    let mut hotplug = false;
    let mut ours = true;
    for field in message.split(|&b| b == 0) {
        drm |= field == b"SUBSYSTEM=drm";
        hotplug |= field == b"HOTPLUG=1";
        if let Some(devname) = field.strip_prefix(b"DEVNAME=") {
            ours = devname.rsplit(|&b| b == b'/').next() == Some(card_name);
        }
    }
    drm && hotplug && ours
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flip_events_and_skips_others() {
        let mut data = Vec::new();
        // a vblank event (type 1), then a flip event on CRTC 41
        for (kind, seq, crtc) in [(1u32, 5u32, 40u32), (2, 6, 41)] {
            for v in [kind, 32, 0, 0, 3, 500, seq, crtc] {
                data.extend_from_slice(&v.to_ne_bytes());
            }
        }
        let mut out = [(0, 0, 0); 4];
        assert_eq!(flips_parse(&data, &mut out), 1);
        assert_eq!(out[0], (41, 6, 3_000_500_000));
    }

    #[test]
    fn recognises_drm_hotplug_uevents() {
        let card0 =
            b"change@/devices/card0\0ACTION=change\0DEVNAME=dri/card0\0SUBSYSTEM=drm\0HOTPLUG=1\0";
        assert!(uevent_is_drm_hotplug(card0, b"card0"));
        assert!(!uevent_is_drm_hotplug(card0, b"card1"));
        assert!(uevent_is_drm_hotplug(
            b"change@/devices/card0\0SUBSYSTEM=drm\0HOTPLUG=1\0",
            b"card0"
        ));
        assert!(!uevent_is_drm_hotplug(
            b"add@/devices/x\0SUBSYSTEM=usb\0",
            b"card0"
        ));
    }
}
