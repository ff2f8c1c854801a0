//! The few Linux system calls the media workers make, wrapped once: epoll (level
//! triggered), an eventfd waker, and batched datagram I/O (`recvmmsg`/`sendmmsg`) over
//! buffers allocated when a worker starts.
//!
//! Every `unsafe` block is here, each with the invariant it relies on; the rest of the
//! engine is safe Rust. Addresses cross the boundary as [`SocketAddr`] (IPv4 and IPv6).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Largest datagram the relay accepts; longer ones are truncated by the kernel and then
/// fail RTP validation (G.711 at 120 ms ptime is 972 bytes).
pub(super) const MAX_DATAGRAM: usize = 2048;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// An epoll instance; sockets are registered level-triggered for input.
#[derive(Debug)]
pub(super) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new fd we own.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for input; `token` comes back in [`Events::token`].
    pub(super) fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        check(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        Ok(())
    }

    /// Stops watching `fd` (before it is closed).
    pub(super) fn delete(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`; a failure (fd not registered) leaves nothing to undo.
        unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Waits up to `timeout_ms` (-1: forever) and fills `events`.
    pub(super) fn wait(&self, events: &mut Events, timeout_ms: i32) -> io::Result<()> {
        let cap = libc::c_int::try_from(events.buf.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: the kernel writes at most `cap` entries into `events.buf`.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                events.buf.as_mut_ptr(),
                cap,
                timeout_ms,
            )
        };
        events.len = match check(n) {
            Ok(n) => usize::try_from(n).unwrap_or(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        Ok(())
    }
}

/// The ready list of one [`Epoll::wait`].
pub(super) struct Events {
    buf: Vec<libc::epoll_event>,
    len: usize,
}

impl Events {
    pub(super) fn with_capacity(n: usize) -> Self {
        Events {
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; n.max(1)],
            len: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The token of ready entry `i`.
    pub(super) fn token(&self, i: usize) -> Option<u64> {
        self.buf.get(..self.len)?.get(i).map(|e| e.u64)
    }
}

/// An eventfd that wakes a worker blocked in `epoll_wait` when a command is queued.
#[derive(Debug)]
pub(super) struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: no pointers; a non-negative result is a new fd we own.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: fresh fd, owned by nobody else.
        Ok(Waker {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub(super) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(super) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. A full counter (EAGAIN) already wakes.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    pub(super) fn drain(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64; EAGAIN when already drained.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
    }
}

/// Converts a kernel socket address (as filled by `recvmmsg`).
fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it outsizes.
            let a: &libc::sockaddr_in = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which it outsizes.
            let a: &libc::sockaddr_in6 = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Writes `addr` into `s`, returning the length to pass to the kernel.
fn to_storage(addr: SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let out: &mut libc::sockaddr_in =
                unsafe { &mut *(s as *mut _ as *mut libc::sockaddr_in) };
            out.sin_family = libc::AF_INET as libc::sa_family_t;
            out.sin_port = a.port().to_be();
            out.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let out: &mut libc::sockaddr_in6 =
                unsafe { &mut *(s as *mut _ as *mut libc::sockaddr_in6) };
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = a.port().to_be();
            out.sin6_flowinfo = a.flowinfo();
            out.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            out.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Datagram buffers and the kernel headers pointing into them, allocated once per worker.
///
/// Slot `i` is a buffer, a source address and its `mmsghdr`; [`Self::recv`] fills a run
/// of slots with one `recvmmsg`, and [`Self::send`] sends a list of slots (each with its
/// own destination and length) from one socket with one `sendmmsg`. The headers point into
/// boxed slices that never move, so they are set up once and only lengths change.
pub(super) struct Batch {
    bufs: Box<[[u8; MAX_DATAGRAM]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// Headers for sends: a send refers to a receive slot's buffer with another address.
    send_addrs: Box<[libc::sockaddr_storage]>,
    send_iovs: Box<[libc::iovec]>,
    send_hdrs: Box<[libc::mmsghdr]>,
}

// SAFETY: the raw pointers in the headers point into this struct's own boxed slices, which
// move with it; nothing else aliases them.
unsafe impl Send for Batch {}

impl Batch {
    pub(super) fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        // SAFETY: all-zero is a valid value for these plain C structs.
        let zero_addr: libc::sockaddr_storage = unsafe { zeroed() };
        let zero_hdr: libc::mmsghdr = unsafe { zeroed() };
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut b = Batch {
            bufs: vec![[0u8; MAX_DATAGRAM]; slots].into_boxed_slice(),
            addrs: vec![zero_addr; slots].into_boxed_slice(),
            iovs: vec![iov; slots].into_boxed_slice(),
            hdrs: vec![zero_hdr; slots].into_boxed_slice(),
            send_addrs: vec![zero_addr; slots].into_boxed_slice(),
            send_iovs: vec![iov; slots].into_boxed_slice(),
            send_hdrs: vec![zero_hdr; slots].into_boxed_slice(),
        };
        for i in 0..slots {
            b.iovs[i].iov_base = b.bufs[i].as_mut_ptr().cast();
            b.iovs[i].iov_len = MAX_DATAGRAM;
            b.hdrs[i].msg_hdr.msg_iov = &mut b.iovs[i];
            b.hdrs[i].msg_hdr.msg_iovlen = 1;
            b.hdrs[i].msg_hdr.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
            b.send_hdrs[i].msg_hdr.msg_iov = &mut b.send_iovs[i];
            b.send_hdrs[i].msg_hdr.msg_iovlen = 1;
            b.send_hdrs[i].msg_hdr.msg_name =
                (&mut b.send_addrs[i] as *mut libc::sockaddr_storage).cast();
        }
        b
    }

    pub(super) fn slots(&self) -> usize {
        self.bufs.len()
    }

    /// Receives up to `max` datagrams from `fd` into slots `0..n` without blocking.
    /// Returns `n` (0 when nothing was waiting).
    pub(super) fn recv(&mut self, fd: RawFd, max: usize) -> io::Result<usize> {
        let max = max.min(self.slots());
        for h in self.hdrs.iter_mut().take(max) {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        let vlen = libc::c_uint::try_from(max).unwrap_or(0);
        // SAFETY: `hdrs[..max]` are valid mmsghdrs whose iovecs and names point into our
        // own live buffers of the advertised sizes.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                vlen,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        match check(n) {
            Ok(n) => Ok(usize::try_from(n).unwrap_or(0)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Slot `i` after a [`Self::recv`]: the source address and the datagram, writable.
    pub(super) fn received(&mut self, i: usize) -> Option<(SocketAddr, &mut [u8])> {
        let len = self.hdrs.get(i)?.msg_len as usize;
        let truncated = self.hdrs.get(i)?.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let from = from_storage(self.addrs.get(i)?)?;
        let buf = self.bufs.get_mut(i)?;
        // A truncated datagram keeps only its first MAX_DATAGRAM bytes; marking it empty
        // makes it fail validation instead of being relayed cut short.
        let len = if truncated { 0 } else { len.min(buf.len()) };
        Some((from, &mut buf[..len]))
    }

    /// Sends `(slot, len, to)` entries from `fd` with one `sendmmsg`. Returns how many
    /// the kernel accepted (the rest were dropped: full socket buffer or an error).
    pub(super) fn send(&mut self, fd: RawFd, out: &[(usize, usize, SocketAddr)]) -> usize {
        let n = out.len().min(self.slots());
        for (k, &(slot, len, to)) in out.iter().take(n).enumerate() {
            let slot = slot.min(self.bufs.len() - 1);
            self.send_iovs[k].iov_base = self.bufs[slot].as_mut_ptr().cast();
            self.send_iovs[k].iov_len = len.min(MAX_DATAGRAM);
            self.send_hdrs[k].msg_hdr.msg_namelen = to_storage(to, &mut self.send_addrs[k]);
        }
        let mut sent = 0;
        while sent < n {
            let vlen = libc::c_uint::try_from(n - sent).unwrap_or(0);
            // SAFETY: `send_hdrs[sent..n]` point at live buffers, lengths within them, and
            // addresses written just above.
            let r = unsafe { libc::sendmmsg(fd, self.send_hdrs[sent..].as_mut_ptr(), vlen, 0) };
            match check(r) {
                Ok(0) => break,
                Ok(k) => sent += usize::try_from(k).unwrap_or(n),
                // One bad destination fails only its message: skip it and go on.
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => sent += 1,
                Err(_) => break,
            }
        }
        sent.min(n)
    }
}

/// Sends one datagram (a locally generated frame) from `fd`.
pub(super) fn send_to(fd: RawFd, buf: &[u8], to: SocketAddr) -> bool {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut addr: libc::sockaddr_storage = unsafe { zeroed() };
    let len = to_storage(to, &mut addr);
    // SAFETY: `buf` and `addr` are live for the call, with the lengths given.
    let r = unsafe {
        libc::sendto(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            (&addr as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    r >= 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for a in ["127.0.0.1:4000", "[::1]:5000", "[fe80::1%2]:6000"] {
            let a: SocketAddr = a.parse().unwrap();
            // SAFETY: all-zero is a valid sockaddr_storage.
            let mut s: libc::sockaddr_storage = unsafe { zeroed() };
            to_storage(a, &mut s);
            assert_eq!(from_storage(&s), Some(a));
        }
    }

    #[test]
    fn batch_receives_and_sends() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut b = Batch::new(4);
        assert_eq!(b.recv(rx.as_raw_fd(), 4).unwrap(), 0);
        tx.send_to(b"one", rx.local_addr().unwrap()).unwrap();
        tx.send_to(b"two", rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(b.recv(rx.as_raw_fd(), 4).unwrap(), 2);
        let (from, buf) = b.received(1).unwrap();
        assert_eq!((from, &*buf), (tx.local_addr().unwrap(), &b"two"[..]));
        let to = tx.local_addr().unwrap();
        assert_eq!(b.send(rx.as_raw_fd(), &[(0, 3, to), (1, 3, to)]), 2);
        let mut got = [0u8; 8];
        assert_eq!(tx.recv(&mut got).unwrap(), 3);
        assert_eq!(&got[..3], b"one");
    }
}
