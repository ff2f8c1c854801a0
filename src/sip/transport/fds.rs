//! The process's file-descriptor budget: the soft `RLIMIT_NOFILE` raised to
//! the hard limit at start, and the descriptor numbers SIP over TCP may hold.
//!
//! The kernel gives a new descriptor the lowest free number, so a socket
//! accepted with a number at or above `limit - reserve` proves that fewer
//! than `reserve` descriptors are free: one comparison per accept, no count
//! of open descriptors. The two `unsafe` calls are `getrlimit`/`setrlimit`
//! on a local `rlimit`, which have no other precondition.

use std::io;

/// The soft and hard `RLIMIT_NOFILE` now.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (capped by the
/// kernel's `nr_open` when the hard limit is infinite); returns the soft
/// limit in force afterwards.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let (soft, hard) = nofile_limit()?;
    let target = if hard == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(1 << 20)
    } else {
        hard
    };
    if target <= soft {
        return Ok(soft);
    }
    let lim = libc::rlimit {
        rlim_cur: target,
        rlim_max: hard,
    };
    // SAFETY: `lim` is a valid rlimit; raising the soft limit up to the hard one is allowed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(target)
}

/// The first descriptor number SIP over TCP may not hold, keeping `reserve`
/// free: `limit - reserve`, but never below half the limit (a reserve larger
/// than that leaves SIP over TCP half, and says so in the log). `None` when
/// the limit cannot be read or does not fit a descriptor number.
pub fn tcp_ceiling(reserve: u32) -> Option<i32> {
    let (soft, _) = nofile_limit().ok()?;
    let soft = i32::try_from(soft).ok()?;
    let reserve = i32::try_from(reserve).unwrap_or(i32::MAX);
    let ceiling = soft.saturating_sub(reserve);
    if ceiling < soft / 2 {
        tracing::warn!(
            limit = soft,
            reserve,
            "sip.tcp_fd_reserve leaves SIP over TCP less than half the descriptor limit: \
             keeping half for it; raise the limit (ulimit -n, LimitNOFILE=) for more calls"
        );
        return Some(soft / 2);
    }
    Some(ceiling)
}
