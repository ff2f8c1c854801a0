//! The few Linux system calls the media workers make, wrapped once: epoll (level
//! triggered), an eventfd waker, and datagram I/O (`recvmsg`/`sendmsg`, or many at once
//! through a synchronously used io_uring) over buffers allocated when a worker starts; and
//! the [`MultiRing`]: multishot receives into a provided-buffer ring, sends from it.
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

/// Control-message space per received datagram: one `SCM_TIMESTAMPNS` (a `cmsghdr` and a
/// `timespec`, 16 + 16 bytes on 64-bit Linux) and one `SO_RXQ_OVFL` (16 + 8); checked
/// against `CMSG_SPACE` in the tests.
pub(super) const CONTROL_LEN: usize = 64;

fn set_int_opt(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Asks the kernel to stamp every datagram `fd` receives with its arrival time
/// (`SO_TIMESTAMPNS`: `CLOCK_REALTIME`, delivered as a control message with the datagram;
/// see [`arrival_in`]).
pub(super) fn enable_arrival_stamps(fd: RawFd) -> io::Result<()> {
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// Asks the kernel to say, with each datagram, how many datagrams it has dropped on
/// `fd` so far because the receive queue was full (`SO_RXQ_OVFL`; see [`Stamps`]).
pub(super) fn enable_drop_counts(fd: RawFd) -> io::Result<()> {
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)
}

/// A second UDP socket on `primary`'s address, connected to `peer`, with the same
/// options (`options`, called with its descriptor).
///
/// The kernel gives a datagram to the socket that matches it best, and a connected socket
/// that matches source and destination beats an unconnected one on the same port. So the
/// peer's datagrams arrive on the twin and everyone else's still on `primary`. A connected
/// socket sends without a destination: the kernel keeps the route and copies no address,
/// which is about a tenth of a relayed packet's cost (`bench/README.md`).
///
/// Two sockets may only share a port if both ask (`SO_REUSEPORT`, same user). Both ask
/// just for the twin's `bind`; then both stop asking, so no other socket can join the port
/// afterwards. `primary` stops asking even when this fails.
pub(super) fn connected_twin(
    primary: &std::net::UdpSocket,
    peer: SocketAddr,
    options: impl FnOnce(RawFd) -> io::Result<()>,
) -> io::Result<std::net::UdpSocket> {
    let local = primary.local_addr()?;
    let pfd = primary.as_raw_fd();
    set_int_opt(pfd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    let twin = (|| {
        let domain = if local.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let kind = libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        // SAFETY: plain system call; the descriptor is checked and then owned.
        let fd = check(unsafe { libc::socket(domain, kind, 0) })?;
        // SAFETY: `fd` is a new socket nobody else owns.
        let twin = unsafe { std::net::UdpSocket::from_raw_fd(fd) };
        set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut addr: libc::sockaddr_storage = unsafe { zeroed() };
        let len = to_storage(local, &mut addr);
        // SAFETY: `addr` holds a socket address of `len` bytes.
        check(unsafe {
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_storage).cast::<libc::sockaddr>(),
                len,
            )
        })?;
        set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 0)?;
        options(fd)?;
        twin.connect(peer)?;
        Ok(twin)
    })();
    set_int_opt(pfd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 0)?;
    twin
}

/// What the kernel said about a received datagram besides its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Stamps {
    /// When it arrived ([`arrival_in`]).
    pub(super) arrival: Option<std::time::Duration>,
    /// Datagrams the socket had dropped (queue full) when this one was queued, counted
    /// from the socket's creation; the kernel says nothing while none was dropped.
    pub(super) drops: Option<u32>,
}

impl Stamps {
    /// Reads a received datagram's control messages.
    pub(super) fn read(control: &[u8]) -> Stamps {
        Stamps {
            arrival: arrival_in(control),
            drops: cmsg_data(control, libc::SOL_SOCKET, libc::SO_RXQ_OVFL)
                .and_then(|d| Some(u32::from_ne_bytes(d.get(..4)?.try_into().ok()?))),
        }
    }
}

/// Bounds `fd`'s receive queue (`SO_RCVBUF`; the kernel doubles the value for its own
/// bookkeeping and counts each datagram at its buffer's true size, not its payload).
pub(crate) fn set_receive_buffer(fd: RawFd, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, v)
}

/// The arrival time (`CLOCK_REALTIME`, since the Unix epoch) in the control messages of a
/// received datagram: the `SCM_TIMESTAMPNS` that [`enable_arrival_stamps`] asks for.
/// `None` when there is none (stamps off, or a truncated control area). Pure: reads the
/// bytes as the kernel laid them out (`cmsghdr`, data at the next aligned offset).
pub(super) fn arrival_in(control: &[u8]) -> Option<std::time::Duration> {
    let d = cmsg_data(control, libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS)?;
    let word = |at: usize| Some(u64::from_ne_bytes(d.get(at..at + 8)?.try_into().ok()?));
    let (secs, nanos) = (word(0)?, word(8)?);
    if nanos >= 1_000_000_000 {
        return None;
    }
    Some(std::time::Duration::new(secs, nanos as u32))
}

/// The data of the first control message of `level` and `kind` in `control`.
fn cmsg_data(control: &[u8], level_want: libc::c_int, kind_want: libc::c_int) -> Option<&[u8]> {
    const ALIGN: usize = size_of::<usize>();
    let align = |n: usize| n.div_ceil(ALIGN) * ALIGN;
    let hdr = size_of::<libc::cmsghdr>();
    let data_at = align(hdr);
    let word = |at: usize, n: usize| -> Option<u64> {
        let b = control.get(at..at.checked_add(n)?)?;
        Some(match n {
            4 => u64::from(u32::from_ne_bytes(b.try_into().ok()?)),
            _ => u64::from_ne_bytes(b.try_into().ok()?),
        })
    };
    let mut at = 0;
    while at + hdr <= control.len() {
        let len = usize::try_from(word(at, size_of::<libc::size_t>())?).ok()?;
        if len < hdr || len > control.len() - at {
            return None;
        }
        let level = word(at + size_of::<libc::size_t>(), 4)? as libc::c_int;
        let kind = word(at + size_of::<libc::size_t>() + 4, 4)? as libc::c_int;
        if level == level_want && kind == kind_want {
            return control.get(at + data_at.min(len)..at + len);
        }
        at = at.checked_add(align(len))?;
    }
    None
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

/// Converts a kernel socket address (as filled by `recvmsg`).
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
/// Slot `i` is a receive buffer, its source address and its `msghdr`; a send refers to a
/// receive slot's buffer (rewritten in place) with its own destination header. The
/// headers point into boxed slices that never move, so they are set up once and only
/// lengths change. With a [`Ring`], the receives of every ready socket go to the kernel in
/// one `io_uring_enter`, and so do the sends of the whole batch; without one (io_uring
/// missing or forbidden), one `recvmsg` and one `sendmsg` per datagram.
pub(super) struct Batch {
    bufs: Box<[[u8; MAX_DATAGRAM]]>,
    addrs: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::msghdr]>,
    /// Control messages per slot (the arrival stamp).
    ctrls: Box<[[u8; CONTROL_LEN]]>,
    /// Received length per slot; `None` after a failed or empty receive.
    lens: Box<[Option<usize>]>,
    send_addrs: Box<[libc::sockaddr_storage]>,
    send_iovs: Box<[libc::iovec]>,
    send_hdrs: Box<[libc::msghdr]>,
}

// SAFETY: the raw pointers in the headers point into this struct's own boxed slices, which
// move with it; nothing else aliases them.
unsafe impl Send for Batch {}

/// One datagram to send: the receive slot holding it, its length, where, from which fd.
#[derive(Debug, Clone, Copy)]
pub(super) struct Outgoing {
    pub(super) fd: RawFd,
    pub(super) slot: usize,
    pub(super) len: usize,
    pub(super) to: SocketAddr,
}

impl Batch {
    pub(super) fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        // SAFETY: all-zero is a valid value for these plain C structs.
        let zero_addr: libc::sockaddr_storage = unsafe { zeroed() };
        let zero_hdr: libc::msghdr = unsafe { zeroed() };
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut b = Batch {
            bufs: vec![[0u8; MAX_DATAGRAM]; slots].into_boxed_slice(),
            addrs: vec![zero_addr; slots].into_boxed_slice(),
            iovs: vec![iov; slots].into_boxed_slice(),
            hdrs: vec![zero_hdr; slots].into_boxed_slice(),
            ctrls: vec![[0u8; CONTROL_LEN]; slots].into_boxed_slice(),
            lens: vec![None; slots].into_boxed_slice(),
            send_addrs: vec![zero_addr; slots].into_boxed_slice(),
            send_iovs: vec![iov; slots].into_boxed_slice(),
            send_hdrs: vec![zero_hdr; slots].into_boxed_slice(),
        };
        for i in 0..slots {
            b.iovs[i].iov_base = b.bufs[i].as_mut_ptr().cast();
            b.iovs[i].iov_len = MAX_DATAGRAM;
            b.hdrs[i].msg_iov = &mut b.iovs[i];
            b.hdrs[i].msg_iovlen = 1;
            b.hdrs[i].msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
            b.hdrs[i].msg_control = b.ctrls[i].as_mut_ptr().cast();
            b.send_hdrs[i].msg_iov = &mut b.send_iovs[i];
            b.send_hdrs[i].msg_iovlen = 1;
            b.send_hdrs[i].msg_name = (&mut b.send_addrs[i] as *mut libc::sockaddr_storage).cast();
        }
        b
    }

    pub(super) fn slots(&self) -> usize {
        self.bufs.len()
    }

    /// Copies `bytes` into slot `k`'s buffer (to send it from there); returns the length
    /// copied (at most [`MAX_DATAGRAM`]), 0 if there is no slot `k`.
    pub(super) fn fill(&mut self, k: usize, bytes: &[u8]) -> usize {
        let Some(buf) = self.bufs.get_mut(k) else {
            return 0;
        };
        let n = bytes.len().min(MAX_DATAGRAM);
        buf[..n].copy_from_slice(&bytes[..n]);
        n
    }

    /// Readies slot `k`'s header for a receive; returns it for the kernel.
    fn prepare_recv(&mut self, k: usize) -> *mut libc::msghdr {
        let h = &mut self.hdrs[k];
        h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        h.msg_flags = 0;
        h.msg_controllen = CONTROL_LEN as _;
        // Zeroed, so a control area the kernel left empty reads as no message at all.
        self.ctrls[k] = [0; CONTROL_LEN];
        self.lens[k] = None;
        h
    }

    /// Records the result of slot `k`'s receive (bytes, or a negative errno).
    fn set_received(&mut self, k: usize, result: isize) {
        if let (Ok(n), Some(len)) = (usize::try_from(result), self.lens.get_mut(k)) {
            *len = Some(n);
        }
    }

    /// Fills send header `j` for `s`; returns it for the kernel.
    fn prepare_send(&mut self, j: usize, s: &Outgoing) -> *const libc::msghdr {
        let slot = s.slot.min(self.bufs.len() - 1);
        self.send_iovs[j].iov_base = self.bufs[slot].as_mut_ptr().cast();
        self.send_iovs[j].iov_len = s.len.min(MAX_DATAGRAM);
        self.send_hdrs[j].msg_namelen = to_storage(s.to, &mut self.send_addrs[j]);
        &self.send_hdrs[j]
    }

    /// Receives one datagram from `fd` into slot 0 without blocking. `Ok(false)` when
    /// nothing was waiting.
    pub(super) fn recv_one(&mut self, fd: RawFd) -> io::Result<bool> {
        let h = self.prepare_recv(0);
        // SAFETY: `h` is slot 0's msghdr over our own live buffer and address storage.
        let n = unsafe { libc::recvmsg(fd, h, libc::MSG_DONTWAIT) };
        if n >= 0 {
            self.set_received(0, n);
            return Ok(true);
        }
        match io::Error::last_os_error() {
            e if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            e => Err(e),
        }
    }

    /// Sends one datagram without blocking; `false` if the kernel refused it.
    pub(super) fn send_one(&mut self, s: &Outgoing) -> bool {
        let h = self.prepare_send(0, s);
        // SAFETY: `h` points at a live buffer of at least `len` bytes and a written address.
        unsafe { libc::sendmsg(s.fd, h, libc::MSG_DONTWAIT) >= 0 }
    }

    /// Slot `i` after a receive: the source address and the datagram, writable.
    pub(super) fn received(&mut self, i: usize) -> Option<(SocketAddr, &mut [u8])> {
        let len = (*self.lens.get(i)?)?;
        let truncated = self.hdrs.get(i)?.msg_flags & libc::MSG_TRUNC != 0;
        let from = from_storage(self.addrs.get(i)?)?;
        let buf = self.bufs.get_mut(i)?;
        // A truncated datagram keeps only its first MAX_DATAGRAM bytes; marking it empty
        // makes it fail validation instead of being relayed cut short.
        let len = if truncated { 0 } else { len.min(buf.len()) };
        Some((from, &mut buf[..len]))
    }

    /// What the kernel said about slot `i`'s datagram (see [`Stamps`]).
    pub(super) fn stamps(&self, i: usize) -> Stamps {
        self.control(i).map(Stamps::read).unwrap_or_default()
    }

    fn control(&self, i: usize) -> Option<&[u8]> {
        // `size_t` with glibc, `socklen_t` with musl.
        #[allow(clippy::useless_conversion)]
        let filled = usize::try_from(self.hdrs.get(i)?.msg_controllen).unwrap_or(0);
        let ctrl = self.ctrls.get(i)?;
        Some(&ctrl[..filled.min(CONTROL_LEN)])
    }
}

/// An io_uring used synchronously: every batch is submitted and all of its completions
/// reaped before the call returns, so no operation outlives the buffers it points into.
/// Receives and sends carry `MSG_DONTWAIT`, so on a socket with nothing to read io_uring
/// completes at once with `EAGAIN` instead of parking the request.
pub(super) struct Ring {
    ring: io_uring::IoUring,
}

impl Ring {
    pub(super) fn new(entries: u32) -> io::Result<Self> {
        Ok(Ring {
            ring: io_uring::IoUring::new(entries)?,
        })
    }

    fn capacity(&mut self) -> usize {
        self.ring.submission().capacity()
    }

    /// Submits what was pushed and reaps exactly `n` completions into `f(user_data, res)`.
    fn complete(&mut self, n: usize, mut f: impl FnMut(u64, i32)) -> io::Result<()> {
        let mut done = 0;
        while done < n {
            match self.ring.submit_and_wait(n - done) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            for cqe in self.ring.completion() {
                f(cqe.user_data(), cqe.result());
                done += 1;
            }
        }
        Ok(())
    }

    /// Receives one datagram from each of `fds` (slot `k` for `fds[k]`) in one system call.
    pub(super) fn recv_many(&mut self, batch: &mut Batch, fds: &[RawFd]) -> io::Result<()> {
        let n = fds.len().min(batch.slots()).min(self.capacity());
        for (k, &fd) in fds.iter().take(n).enumerate() {
            let h = batch.prepare_recv(k);
            let op = io_uring::opcode::RecvMsg::new(io_uring::types::Fd(fd), h)
                .flags(libc::MSG_DONTWAIT as u32)
                .build()
                .user_data(k as u64);
            // SAFETY: the header, its buffer and address live in `batch`, which is borrowed
            // until every completion is reaped below. The queue has room for `n` entries.
            if unsafe { self.ring.submission().push(&op) }.is_err() {
                return Err(io::Error::other("io_uring submission queue full"));
            }
        }
        self.complete(n, |k, res| {
            batch.set_received(usize::try_from(k).unwrap_or(usize::MAX), res as isize)
        })
    }

    /// Sends every entry of `sends` in one system call; returns how many the kernel took.
    pub(super) fn send_many(&mut self, batch: &mut Batch, sends: &[Outgoing]) -> io::Result<usize> {
        let mut sent = 0;
        self.send_each(batch, sends, |_, ok| sent += usize::from(ok))?;
        Ok(sent)
    }

    /// Sends every entry of `sends` in one system call and tells `f(j, taken)` for each
    /// (entries past the batch's or the ring's capacity are not sent: `taken` false).
    pub(super) fn send_each(
        &mut self,
        batch: &mut Batch,
        sends: &[Outgoing],
        mut f: impl FnMut(usize, bool),
    ) -> io::Result<()> {
        let n = sends.len().min(batch.slots()).min(self.capacity());
        for (j, s) in sends.iter().take(n).enumerate() {
            let h = batch.prepare_send(j, s);
            let op = io_uring::opcode::SendMsg::new(io_uring::types::Fd(s.fd), h)
                .flags(libc::MSG_DONTWAIT as u32)
                .build()
                .user_data(j as u64);
            // SAFETY: as in `recv_many`: everything pointed to lives in `batch`.
            if unsafe { self.ring.submission().push(&op) }.is_err() {
                return Err(io::Error::other("io_uring submission queue full"));
            }
        }
        self.complete(n, |j, res| {
            f(usize::try_from(j).unwrap_or(usize::MAX), res >= 0)
        })?;
        for j in n..sends.len() {
            f(j, false);
        }
        Ok(())
    }
}

/// What a completion of the [`MultiRing`] belongs to (the top two bits of its user data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tag {
    /// A multishot receive; the value is the worker's receiver index.
    Recv(usize),
    /// A send from provided buffer `bid`.
    Send(u16),
    /// A send of a locally made frame (prompt or ringback) from frame buffer `slot`.
    Frame { slot: u16, ringback: bool },
    /// The command waker's multishot poll.
    Waker,
    /// A cancel request (its own completion carries nothing of interest).
    Cancel,
}

const TAG_SHIFT: u32 = 62;
const TAG_MASK: u64 = (1 << TAG_SHIFT) - 1;
/// Within tag 1 (sends): the send is a local frame's, not a relayed datagram's.
const FRAME_BIT: u64 = 1 << 32;

impl Tag {
    fn user_data(self) -> u64 {
        match self {
            Tag::Recv(i) => i as u64 & TAG_MASK,
            Tag::Send(bid) => (1 << TAG_SHIFT) | u64::from(bid),
            Tag::Frame { slot, ringback } => {
                (1 << TAG_SHIFT) | FRAME_BIT | (u64::from(ringback) << 16) | u64::from(slot)
            }
            Tag::Waker => 2 << TAG_SHIFT,
            Tag::Cancel => 3 << TAG_SHIFT,
        }
    }

    fn of(user_data: u64) -> Tag {
        let v = user_data & TAG_MASK;
        match user_data >> TAG_SHIFT {
            0 => Tag::Recv(usize::try_from(v).unwrap_or(usize::MAX)),
            1 if v & FRAME_BIT != 0 => Tag::Frame {
                slot: (v & 0xffff) as u16,
                ringback: v & (1 << 16) != 0,
            },
            1 => Tag::Send(u16::try_from(v).unwrap_or(u16::MAX)),
            2 => Tag::Waker,
            _ => Tag::Cancel,
        }
    }
}

/// A socket as the [`MultiRing`] addresses it: by descriptor, or by its slot in the
/// ring's registered-file table (cheaper: no file lookup per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sock {
    pub(super) fd: RawFd,
    pub(super) fixed: Option<u32>,
}

/// One reaped completion of the [`MultiRing`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Completion {
    pub(super) tag: Tag,
    /// Bytes, or a negative errno.
    pub(super) result: i32,
    /// The provided buffer the kernel filled, if any.
    pub(super) buffer: Option<u16>,
    /// The request stays armed (`IORING_CQE_F_MORE`); otherwise it ended.
    pub(super) more: bool,
}

/// Layout of a provided buffer after a multishot `recvmsg`: the kernel's
/// `io_uring_recvmsg_out` header, a source-address field of fixed size, the control
/// messages (the arrival stamp) in a field of fixed size, the datagram.
const OUT_HDR: usize = 16;
const NAME_LEN: usize = size_of::<libc::sockaddr_in6>();
const CONTROL_AT: usize = OUT_HDR + NAME_LEN;
const PAYLOAD_AT: usize = CONTROL_AT + CONTROL_LEN;
/// Bytes the kernel may fill per buffer: a datagram longer than `MAX_DATAGRAM` is marked
/// truncated, as with `recvmsg`.
const RX_BUF_LEN: usize = PAYLOAD_AT + MAX_DATAGRAM;
/// Distance between buffers (cache-line multiple).
const RX_BUF_STRIDE: usize = RX_BUF_LEN.div_ceil(64) * 64;
/// Most registered-file slots per ring (also capped by `RLIMIT_NOFILE`).
const FIXED_FILES: u32 = 16_384;
/// The buffer group id of the worker's provided-buffer ring.
const BGID: u16 = 0;

/// Anonymous, page-aligned memory the kernel reads or writes behind our back; only ever
/// accessed through raw pointers (never held as a Rust reference while the kernel owns it).
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; the owner drops the ring first.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// An io_uring that receives by itself: one multishot `recvmsg` per socket, armed once,
/// draws buffers from a provided-buffer ring (`IORING_REGISTER_PBUF_RING`), so receiving
/// costs no `epoll_wait` and no submission per datagram. Sends (`SendMsg`, from the
/// received buffer rewritten in place) are queued and go to the kernel with the next wait,
/// in the same `io_uring_enter`. The ring is `SINGLE_ISSUER | DEFER_TASKRUN`: completions
/// are produced only while the worker waits in [`MultiRing::wait`], so the receive state
/// seen between two waits is stable (no completion appears behind the worker's back).
///
/// Buffer ownership: a buffer is the kernel's while it is in the ring; a receive
/// completion hands it to the worker, which either queues a send from it (it returns on
/// the send's completion) or gives it back at once ([`MultiRing::recycle`]). When the ring
/// runs dry a receive ends with `ENOBUFS` (the datagram stays queued on the socket) and
/// the worker re-arms it after recycling.
pub(super) struct MultiRing {
    // Declared first: dropped (requests cancelled) before the memory they point into.
    ring: io_uring::IoUring,
    bufs: Mapping,
    ring_mem: Mapping,
    entries: u16,
    tail: u16,
    dirty: bool,
    /// Slots in the registered-file table (0: none registered).
    fixed: u32,
    /// Template for the multishot receives: only the name and control lengths count.
    msg: Box<libc::msghdr>,
    send_addrs: Box<[libc::sockaddr_storage]>,
    /// Buffers of locally made frames on their way out (see [`MultiRing::send_frame`]);
    /// boxed, so a send's buffer stays put while the vector grows.
    #[allow(clippy::vec_box)] // the kernel reads each box's contents until its send ends
    frames: Vec<Box<FrameBuf>>,
    /// Indexes into `frames` free for the next frame.
    frames_free: Vec<u16>,
}

/// A locally made frame (prompt, ringback) and its destination, while its send is in
/// flight.
struct FrameBuf {
    data: [u8; MAX_DATAGRAM],
    addr: libc::sockaddr_storage,
}

/// Most frame buffers a [`MultiRing`] holds at once: frames in flight between two waits
/// (a few hundred calls hearing prompts); past it, frames go out one system call each.
pub(super) const MAX_FRAME_BUFS: usize = 4096;

// SAFETY: the raw pointers point into memory this struct owns (mappings and boxed
// slices), which moves with it; the ring is created on and only used by one thread.
unsafe impl Send for MultiRing {}

impl MultiRing {
    /// A ring with `buffers` provided buffers (a power of two, at most 32,768). Fails on
    /// kernels without `DEFER_TASKRUN` (before 6.1, which also lack multishot `recvmsg`).
    /// Must be created on the thread that uses it (`SINGLE_ISSUER`).
    pub(super) fn new(sq_entries: u32, buffers: u16) -> io::Result<Self> {
        if !buffers.is_power_of_two() || buffers > 32_768 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let ring = io_uring::IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize((4 * u32::from(buffers)).max(2 * sq_entries))
            .build(sq_entries)?;
        let n = usize::from(buffers);
        let bufs = Mapping::new(n * RX_BUF_STRIDE)?;
        let ring_mem = Mapping::new(n * size_of::<io_uring::types::BufRingEntry>())?;
        // SAFETY: `ring_mem` is page aligned, holds `buffers` entries and lives as long as
        // the ring (dropped after it).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(ring_mem.ptr as u64, buffers, BGID, 0)?;
        }
        // A sparse registered-file table, as large as the descriptor limit allows.
        // SAFETY: getrlimit writes one rlimit into a live struct.
        let mut lim: libc::rlimit = unsafe { zeroed() };
        let nofile = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } {
            0 => lim.rlim_cur.min(FIXED_FILES.into()) as u32,
            _ => 0,
        };
        let fixed = match ring.submitter().register_files_sparse(nofile) {
            Ok(()) => nofile,
            Err(e) => {
                tracing::debug!(error = %e, "media: no registered files for io_uring");
                0
            }
        };
        // SAFETY: all-zero is a valid value for these plain C structs.
        let zero_addr: libc::sockaddr_storage = unsafe { zeroed() };
        let mut msg: Box<libc::msghdr> = Box::new(unsafe { zeroed() });
        msg.msg_namelen = NAME_LEN as libc::socklen_t;
        msg.msg_controllen = CONTROL_LEN as _;
        let mut r = MultiRing {
            ring,
            bufs,
            ring_mem,
            entries: buffers,
            tail: 0,
            dirty: false,
            fixed,
            msg,
            send_addrs: vec![zero_addr; n].into_boxed_slice(),
            frames: Vec::new(),
            frames_free: Vec::new(),
        };
        for bid in 0..buffers {
            r.recycle(bid);
        }
        r.commit();
        Ok(r)
    }

    /// Buffers in the provided ring.
    pub(super) fn buffers(&self) -> u16 {
        self.entries
    }

    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        let i = usize::from(bid % self.entries);
        // SAFETY: `i < entries`, so the offset stays inside the buffer mapping.
        unsafe { self.bufs.ptr.add(i * RX_BUF_STRIDE) }
    }

    /// Gives buffer `bid` back to the kernel (visible after [`MultiRing::commit`]).
    pub(super) fn recycle(&mut self, bid: u16) {
        let bid = bid % self.entries;
        let slot = usize::from(self.tail & (self.entries - 1));
        let addr = self.buf_ptr(bid) as u64;
        // SAFETY: `slot < entries`; the entry at the tail is ours until the tail moves past
        // it (the kernel only reads entries between its head and the published tail).
        unsafe {
            let e = self
                .ring_mem
                .ptr
                .cast::<io_uring::types::BufRingEntry>()
                .add(slot);
            (*e).set_addr(addr);
            (*e).set_len(RX_BUF_LEN as u32);
            (*e).set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        self.dirty = true;
    }

    /// Publishes the recycled buffers to the kernel.
    pub(super) fn commit(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let base = self.ring_mem.ptr.cast::<io_uring::types::BufRingEntry>();
        // SAFETY: the ring's tail lives in entry 0 (the kernel ABI); the release store
        // orders the entries written above before it.
        unsafe {
            let tail = io_uring::types::BufRingEntry::tail(base).cast_mut();
            (*tail.cast::<std::sync::atomic::AtomicU16>())
                .store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }

    /// Queues `sqe`, flushing the submission queue to the kernel first if it is full.
    fn push(&mut self, sqe: &io_uring::squeue::Entry) -> io::Result<()> {
        for _ in 0..2 {
            // SAFETY: every entry queued here points only into memory owned by `self` (or
            // into nothing), which outlives the request: see the callers.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
        Err(io::Error::other("io_uring submission queue full"))
    }

    /// Arms a multishot receive on `sock`; completions carry `tag`.
    pub(super) fn arm_recv(&mut self, sock: Sock, tag: Tag) -> io::Result<()> {
        let msg: *const libc::msghdr = &*self.msg;
        let sqe = match sock.fixed {
            Some(k) => io_uring::opcode::RecvMsgMulti::new(io_uring::types::Fixed(k), msg, BGID),
            None => io_uring::opcode::RecvMsgMulti::new(io_uring::types::Fd(sock.fd), msg, BGID),
        };
        let sqe = sqe.build().user_data(tag.user_data());
        // The kernel copies the template header when the request is prepared; the data
        // goes to provided buffers, which live as long as the ring.
        self.push(&sqe)
    }

    /// Arms a multishot poll for input on `fd` (the command waker).
    pub(super) fn arm_poll(&mut self, fd: RawFd, tag: Tag) -> io::Result<()> {
        let sqe = io_uring::opcode::PollAdd::new(io_uring::types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(tag.user_data());
        self.push(&sqe)
    }

    /// Cancels the request armed with `tag`; its final completion follows.
    pub(super) fn cancel(&mut self, tag: Tag) -> io::Result<()> {
        let sqe = io_uring::opcode::AsyncCancel::new(tag.user_data())
            .build()
            .user_data(Tag::Cancel.user_data());
        self.push(&sqe)
    }

    /// The datagram in buffer `bid` after a receive completion of `result` bytes: the
    /// source address, when it arrived (if stamped: [`arrival_in`]) and the payload,
    /// writable. `None` if the kernel's header does not fit or the address is not
    /// IPv4/IPv6.
    pub(super) fn packet(
        &mut self,
        bid: u16,
        result: i32,
    ) -> Option<(SocketAddr, Stamps, &mut [u8])> {
        let filled = usize::try_from(result).ok()?.min(RX_BUF_LEN);
        if filled < PAYLOAD_AT {
            return None;
        }
        let p = self.buf_ptr(bid);
        // SAFETY: the completion handed buffer `bid` to us: the kernel no longer writes it
        // until it is recycled, and `filled <= RX_BUF_LEN` bytes of it are initialised.
        // The `&mut` borrows `self`, so the buffer cannot be recycled while it lives.
        let buf = unsafe { std::slice::from_raw_parts_mut(p, filled) };
        let word = |at: usize| {
            let b = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
            u32::from_ne_bytes(b)
        };
        let (namelen, controllen, payloadlen, flags) = (word(0), word(4), word(8), word(12));
        let controllen = usize::try_from(controllen).unwrap_or(0).min(CONTROL_LEN);
        let stamps = Stamps::read(&buf[CONTROL_AT..CONTROL_AT + controllen]);
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut addr: libc::sockaddr_storage = unsafe { zeroed() };
        let n = usize::try_from(namelen).unwrap_or(0).min(NAME_LEN);
        // SAFETY: copies `n <= NAME_LEN` bytes from the name field into a larger storage.
        unsafe {
            std::ptr::copy_nonoverlapping(
                buf.as_ptr().add(OUT_HDR),
                (&mut addr as *mut libc::sockaddr_storage).cast::<u8>(),
                n,
            );
        }
        let from = from_storage(&addr)?;
        let truncated = flags & libc::MSG_TRUNC as u32 != 0;
        let len = usize::try_from(payloadlen).unwrap_or(0);
        // As in `Batch::received`: a truncated datagram is made empty so it fails validation.
        let len = if truncated {
            0
        } else {
            len.min(filled - PAYLOAD_AT)
        };
        Some((from, stamps, &mut buf[PAYLOAD_AT..PAYLOAD_AT + len]))
    }

    /// Queues a send of `len` bytes of buffer `bid`'s payload from `from` to `to` (`None`:
    /// to the peer `from` is connected to); the buffer comes back in the send's completion
    /// (`Tag::Send(bid)`).
    pub(super) fn send(
        &mut self,
        from: Sock,
        bid: u16,
        len: usize,
        to: Option<SocketAddr>,
    ) -> io::Result<()> {
        let bid = bid % self.entries;
        let i = usize::from(bid);
        // SAFETY: the payload area starts `PAYLOAD_AT` bytes into the buffer and is
        // `MAX_DATAGRAM` long.
        let payload = unsafe { self.buf_ptr(bid).add(PAYLOAD_AT) };
        let len = len.min(MAX_DATAGRAM) as u32;
        let sqe = match from.fixed {
            Some(k) => io_uring::opcode::Send::new(io_uring::types::Fixed(k), payload, len),
            None => io_uring::opcode::Send::new(io_uring::types::Fd(from.fd), payload, len),
        };
        let sqe = match to {
            Some(to) => {
                let addr_len = to_storage(to, &mut self.send_addrs[i]);
                let addr: *const libc::sockaddr =
                    (&self.send_addrs[i] as *const libc::sockaddr_storage).cast();
                sqe.dest_addr(addr).dest_addr_len(addr_len)
            }
            None => sqe,
        };
        let sqe = sqe
            .flags(libc::MSG_DONTWAIT)
            .build()
            .user_data(Tag::Send(bid).user_data());
        // The address and the buffer belong to `bid`, which is not reused before this send
        // completes (it is recycled on its completion).
        self.push(&sqe)
    }

    /// Queues a send of a locally made frame (a copy of `frame`) from `from` to `to`; it
    /// goes to the kernel with the next wait, with the forwards of the batch, and its
    /// completion is `Tag::Frame`, after which [`MultiRing::frame_sent`] frees its buffer.
    /// `Ok(false)`: every frame buffer is in flight ([`MAX_FRAME_BUFS`]); nothing queued.
    pub(super) fn send_frame(
        &mut self,
        from: Sock,
        frame: &[u8],
        to: SocketAddr,
        ringback: bool,
    ) -> io::Result<bool> {
        let slot = match self.frames_free.pop() {
            Some(k) => k,
            None if self.frames.len() < MAX_FRAME_BUFS => {
                self.frames.push(Box::new(FrameBuf {
                    data: [0; MAX_DATAGRAM],
                    // SAFETY: all-zero is a valid sockaddr_storage.
                    addr: unsafe { zeroed() },
                }));
                (self.frames.len() - 1) as u16
            }
            None => return Ok(false),
        };
        let Some(f) = self.frames.get_mut(usize::from(slot)) else {
            return Ok(false);
        };
        let len = frame.len().min(MAX_DATAGRAM);
        f.data[..len].copy_from_slice(&frame[..len]);
        let addr_len = to_storage(to, &mut f.addr);
        let addr: *const libc::sockaddr = (&f.addr as *const libc::sockaddr_storage).cast();
        let data = f.data.as_ptr();
        let len = len as u32;
        let sqe = match from.fixed {
            Some(k) => io_uring::opcode::Send::new(io_uring::types::Fixed(k), data, len),
            None => io_uring::opcode::Send::new(io_uring::types::Fd(from.fd), data, len),
        };
        let sqe = sqe
            .dest_addr(addr)
            .dest_addr_len(addr_len)
            .flags(libc::MSG_DONTWAIT)
            .build()
            .user_data(Tag::Frame { slot, ringback }.user_data());
        // The frame and its address live in a boxed buffer owned by the ring, which is
        // neither freed nor reused before this send completes (`frame_sent`).
        match self.push(&sqe) {
            Ok(()) => Ok(true),
            Err(e) => {
                self.frames_free.push(slot);
                Err(e)
            }
        }
    }

    /// The send from frame buffer `slot` completed: the buffer is free again.
    pub(super) fn frame_sent(&mut self, slot: u16) {
        if usize::from(slot) < self.frames.len() {
            self.frames_free.push(slot);
        }
    }

    /// Puts `fd` in slot `k` of the ring's registered-file table, so that requests on it
    /// skip the per-request file lookup; `None` if the table has no slot `k`.
    pub(super) fn register(&mut self, k: usize, fd: RawFd) -> Option<u32> {
        let k = u32::try_from(k).ok().filter(|&k| k < self.fixed)?;
        match self.ring.submitter().register_files_update(k, &[fd]) {
            Ok(_) => Some(k),
            Err(e) => {
                tracing::debug!(error = %e, "media: cannot register a socket with io_uring");
                None
            }
        }
    }

    /// Empties slot `k` of the registered-file table (requests still using the file keep
    /// it open until they end).
    pub(super) fn unregister(&mut self, k: u32) {
        let _ = self.ring.submitter().register_files_update(k, &[-1]);
    }

    /// Whether the kernel supports a minimum wait (`min_wait_usec`, 6.12).
    pub(super) fn has_min_wait(&self) -> bool {
        self.ring.params().is_feature_min_timeout()
    }

    /// Submits what is queued and waits for `want` completions, at most `timeout`
    /// (`None`: no limit). With `min_wait` (see [`MultiRing::has_min_wait`]), once that
    /// long has passed the wait ends at the first completion. A timeout or a signal is
    /// not an error.
    pub(super) fn wait(
        &mut self,
        want: usize,
        timeout: Option<std::time::Duration>,
        min_wait: Option<std::time::Duration>,
    ) -> io::Result<()> {
        self.commit();
        let min_us = min_wait.map_or(0, |d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
        let ts = timeout.map(io_uring::types::Timespec::from);
        let r = match (&ts, min_us) {
            (None, 0) => self.ring.submit_and_wait(want),
            (Some(ts), _) => {
                let args = io_uring::types::SubmitArgs::new()
                    .min_wait_usec(min_us)
                    .timespec(ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
            (None, _) => {
                let args = io_uring::types::SubmitArgs::new().min_wait_usec(min_us);
                self.ring.submitter().submit_with_args(want, &args)
            }
        };
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Submits what is queued without waiting.
    pub(super) fn submit(&mut self) -> io::Result<()> {
        self.ring.submit().map(drop)
    }

    /// Moves every posted completion into `out` (cleared first).
    pub(super) fn reap(&mut self, out: &mut Vec<Completion>) {
        out.clear();
        for cqe in self.ring.completion() {
            let flags = cqe.flags();
            out.push(Completion {
                tag: Tag::of(cqe.user_data()),
                result: cqe.result(),
                buffer: io_uring::cqueue::buffer_select(flags),
                more: io_uring::cqueue::more(flags),
            });
        }
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

    /// One control message as the kernel writes it: header, data at the aligned offset.
    fn cmsg(level: libc::c_int, kind: libc::c_int, data: &[u8]) -> Vec<u8> {
        let hdr = size_of::<libc::cmsghdr>();
        let mut out = vec![0u8; hdr];
        out[..size_of::<usize>()].copy_from_slice(&(hdr + data.len()).to_ne_bytes());
        out[size_of::<usize>()..size_of::<usize>() + 4].copy_from_slice(&level.to_ne_bytes());
        out[size_of::<usize>() + 4..hdr].copy_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(8) * 8, 0);
        out
    }

    fn timespec(secs: u64, nanos: u64) -> Vec<u8> {
        [secs.to_ne_bytes(), nanos.to_ne_bytes()].concat()
    }

    #[test]
    fn arrival_stamps_are_read_from_control_messages() {
        // SAFETY: CMSG_SPACE only computes a size.
        let space =
            unsafe { libc::CMSG_SPACE(size_of::<libc::timespec>() as u32) + libc::CMSG_SPACE(4) }
                as usize;
        assert!(
            space <= CONTROL_LEN,
            "{space} bytes of control space needed"
        );
        let stamp = cmsg(
            libc::SOL_SOCKET,
            libc::SCM_TIMESTAMPNS,
            &timespec(1_700_000_000, 250),
        );
        let want = Some(std::time::Duration::new(1_700_000_000, 250));
        assert_eq!(arrival_in(&stamp), want);
        // After another message; and nothing in an empty, zeroed or cut-short area.
        let other = cmsg(libc::IPPROTO_IP, libc::IP_TTL, &64i32.to_ne_bytes());
        assert_eq!(arrival_in(&[other.clone(), stamp.clone()].concat()), want);
        assert_eq!(arrival_in(&other), None);
        assert_eq!(arrival_in(&[]), None);
        assert_eq!(arrival_in(&[0u8; CONTROL_LEN]), None);
        assert_eq!(arrival_in(&stamp[..stamp.len() - 1]), None);
        // Nonsense from a corrupted area is refused, not trusted.
        let bad = cmsg(
            libc::SOL_SOCKET,
            libc::SCM_TIMESTAMPNS,
            &timespec(1, 2_000_000_000),
        );
        assert_eq!(arrival_in(&bad), None);
        let mut huge = stamp.clone();
        huge[..size_of::<usize>()].copy_from_slice(&usize::MAX.to_ne_bytes());
        assert_eq!(arrival_in(&[other, huge].concat()), None);
        // The kernel's drop count (SO_RXQ_OVFL) beside the stamp, in either order.
        let drops = cmsg(libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &7u32.to_ne_bytes());
        let both = Stamps {
            arrival: want,
            drops: Some(7),
        };
        assert_eq!(Stamps::read(&[stamp.clone(), drops.clone()].concat()), both);
        assert_eq!(Stamps::read(&[drops, stamp.clone()].concat()), both);
        let none = Stamps {
            arrival: want,
            drops: None,
        };
        assert_eq!(Stamps::read(&stamp), none);
    }

    /// The kernel stamps datagrams on sockets that asked, on both batch receive paths.
    #[test]
    fn batch_receives_carry_arrival_stamps() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_arrival_stamps(rx.as_raw_fd()).unwrap();
        set_receive_buffer(rx.as_raw_fd(), 16 * 1024).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let wall = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
        };
        // The kernel turns stamping on a moment after the first socket asks (deferred
        // work); a datagram it did not stamp on arrival is stamped when read, later.
        let before = wall();
        for _ in 0..2 {
            tx.send_to(b"one", rx.local_addr().unwrap()).unwrap();
        }
        tx.send_to(b"two", plain.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut b = Batch::new(4);
        assert!(b.recv_one(rx.as_raw_fd()).unwrap());
        let after = wall();
        let at = b.stamps(0).arrival.expect("stamped");
        assert!(
            before <= at && at <= after,
            "{before:?} <= {at:?} <= {after:?}"
        );
        let Ok(mut ring) = Ring::new(8) else {
            eprintln!("io_uring unavailable: batched path not tested");
            return;
        };
        ring.recv_many(&mut b, &[rx.as_raw_fd(), plain.as_raw_fd()])
            .unwrap();
        let after = wall();
        assert_eq!(&*b.received(0).unwrap().1, b"one");
        let at = b.stamps(0).arrival.expect("stamped");
        assert!(
            before <= at && at <= after,
            "{before:?} <= {at:?} <= {after:?}"
        );
        assert_eq!(&*b.received(1).unwrap().1, b"two");
        assert_eq!(b.stamps(1).arrival, None, "not asked for");
    }

    #[test]
    fn batch_receives_and_sends_with_and_without_io_uring() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx2 = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .unwrap();
        let mut b = Batch::new(4);
        assert!(!b.recv_one(rx.as_raw_fd()).unwrap());
        tx.send_to(b"one", rx.local_addr().unwrap()).unwrap();
        tx.send_to(b"two", rx2.local_addr().unwrap()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(b.recv_one(rx.as_raw_fd()).unwrap());
        let (from, buf) = b.received(0).unwrap();
        assert_eq!((from, &*buf), (tx.local_addr().unwrap(), &b"one"[..]));
        let to = tx.local_addr().unwrap();
        let one = Outgoing {
            fd: rx.as_raw_fd(),
            slot: 0,
            len: 3,
            to,
        };
        assert!(b.send_one(&one));
        let mut got = [0u8; 8];
        assert_eq!(tx.recv(&mut got).unwrap(), 3);

        let Ok(mut ring) = Ring::new(8) else {
            eprintln!("io_uring unavailable: batched path not tested");
            return;
        };
        // rx has nothing waiting (EAGAIN at once, not parked); rx2 has "two".
        ring.recv_many(&mut b, &[rx.as_raw_fd(), rx2.as_raw_fd()])
            .unwrap();
        assert!(b.received(0).is_none());
        assert_eq!(&*b.received(1).unwrap().1, b"two");
        let sends = [
            Outgoing { slot: 1, ..one },
            Outgoing {
                fd: rx2.as_raw_fd(),
                slot: 1,
                len: 3,
                to,
            },
        ];
        assert_eq!(ring.send_many(&mut b, &sends).unwrap(), 2);
        for _ in 0..2 {
            assert_eq!(tx.recv(&mut got).unwrap(), 3);
            assert_eq!(&got[..3], b"two");
        }
    }
}
