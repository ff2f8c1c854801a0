//! RTP port allocation over the configured range (`[rtp] port_min..=port_max`).
//!
//! Each media stream gets an even port for RTP and the next odd port for RTCP (RFC 3550
//! §11). Allocation and release are O(1): free pairs wait in a FIFO queue, so a port that
//! was just released is the *last* to be handed out again — late packets of an ended call
//! then rarely reach a new one. A bitmap catches double releases. Exhaustion is a typed
//! error that the call flow answers with SIP 503.
//!
//! This is a pure data structure: binding the sockets is the driver's job (a driver that
//! fails to bind a pair — another process holds it — simply keeps it out of the pool by
//! not releasing it until it retries). One allocator serves the node; drivers wrap it in a
//! mutex taken once per call set-up and end, never per packet.

use std::collections::VecDeque;
use thiserror::Error;

/// Errors of the port allocator.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum PortError {
    /// The range holds no even/odd pair.
    #[error("RTP port range {min}-{max} holds no even RTP port with its RTCP port")]
    EmptyRange {
        /// Configured lower bound.
        min: u16,
        /// Configured upper bound.
        max: u16,
    },
    /// Every pair is in use.
    #[error("all RTP ports are in use")]
    Exhausted,
    /// Released a pair that is not allocated (double release or foreign port).
    #[error("RTP port {0} is not allocated")]
    NotAllocated(u16),
}

impl PortError {
    /// The SIP status a call set-up answers with when allocation fails.
    pub fn sip_status(&self) -> u16 {
        503
    }
}

/// An allocated RTP/RTCP port pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortPair {
    rtp: u16,
}

impl PortPair {
    /// The even RTP port.
    pub fn rtp(self) -> u16 {
        self.rtp
    }

    /// The RTCP port, `rtp + 1`.
    pub fn rtcp(self) -> u16 {
        self.rtp + 1
    }
}

/// O(1) allocator of even RTP ports (with RTP+1 for RTCP) within a range.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    /// First even port of the range; pair `i` is `base + 2 i`.
    base: u16,
    /// Free pair indexes, oldest release first.
    free: VecDeque<u16>,
    /// `in_use[i]` tells whether pair `i` is allocated.
    in_use: Vec<bool>,
}

impl PortAllocator {
    /// An allocator over `min..=max`; RTP ports are the even ports whose odd successor is
    /// also within the range.
    pub fn new(min: u16, max: u16) -> Result<Self, PortError> {
        let base = min
            .checked_add(min % 2)
            .ok_or(PortError::EmptyRange { min, max })?;
        if max <= base {
            return Err(PortError::EmptyRange { min, max });
        }
        // Even ports p in base..=max-1, so that p + 1 <= max.
        let pairs = (max - 1 - base) / 2 + 1;
        Ok(PortAllocator {
            base,
            free: (0..pairs).collect(),
            in_use: vec![false; usize::from(pairs)],
        })
    }

    /// Takes a free pair, the one released longest ago.
    pub fn allocate(&mut self) -> Result<PortPair, PortError> {
        let index = self.free.pop_front().ok_or(PortError::Exhausted)?;
        if let Some(used) = self.in_use.get_mut(usize::from(index)) {
            *used = true;
        }
        Ok(PortPair {
            rtp: self.base + 2 * index,
        })
    }

    /// Returns a pair to the pool (at call end).
    pub fn release(&mut self, pair: PortPair) -> Result<(), PortError> {
        let index = self
            .index_of(pair.rtp)
            .ok_or(PortError::NotAllocated(pair.rtp))?;
        match self.in_use.get_mut(usize::from(index)) {
            Some(used) if *used => {
                *used = false;
                self.free.push_back(index);
                Ok(())
            }
            _ => Err(PortError::NotAllocated(pair.rtp)),
        }
    }

    fn index_of(&self, rtp: u16) -> Option<u16> {
        let offset = rtp.checked_sub(self.base)?;
        (offset % 2 == 0).then_some(offset / 2)
    }

    /// Pairs currently free.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Pairs in the range.
    pub fn capacity(&self) -> usize {
        self.in_use.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_range_gives_500_pairs() {
        let a = PortAllocator::new(20000, 20999).unwrap();
        assert_eq!(a.capacity(), 500);
    }

    #[test]
    fn odd_bounds_and_tiny_ranges() {
        let a = PortAllocator::new(20001, 20006).unwrap(); // 20002/3, 20004/5
        assert_eq!(a.capacity(), 2);
        assert_eq!(PortAllocator::new(20000, 20001).unwrap().capacity(), 1);
        assert!(PortAllocator::new(20000, 20000).is_err());
        assert!(PortAllocator::new(20001, 20002).is_err());
        assert!(PortAllocator::new(65535, 65535).is_err());
        assert!(PortAllocator::new(30000, 20000).is_err());
        assert_eq!(PortAllocator::new(65534, 65535).unwrap().capacity(), 1);
    }
}
