//! Many rooms behind one UDP socket, sans-IO: which room a datagram belongs to, which rooms
//! need polling, and the earliest deadline among them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

use super::room::Room;
use super::{Datagram, Participant, RoomConfig, RoomEvent, SfuError, Side, TapReceiver};

/// The caller's name for a room (a visit's number).
pub type RoomId = u64;

/// What one [`Hub::poll`] produced; the driver sends and dispatches it, then clears it.
#[derive(Debug, Default)]
pub struct HubOutput {
    pub transmits: Vec<Datagram>,
    pub events: Vec<(RoomId, RoomEvent)>,
    /// The earliest deadline of all rooms; `None` with no peer anywhere.
    pub timeout: Option<Instant>,
}

#[derive(Debug)]
struct Slot {
    room: Room,
    /// The room's deadline as last polled (a heap entry that differs is stale).
    next: Option<Instant>,
    dirty: bool,
}

/// The rooms carried on one socket.
#[derive(Debug)]
pub struct Hub {
    /// The host candidate of every answer: advertised IP, the socket's port.
    local: SocketAddr,
    rooms: HashMap<RoomId, Slot>,
    /// Source address → the room that took its last datagram.
    routes: HashMap<SocketAddr, RoomId>,
    /// Rooms with input since their last poll.
    dirty: Vec<RoomId>,
    /// Room deadlines, earliest first; stale entries are skipped.
    timers: BinaryHeap<Reverse<(Instant, RoomId)>>,
    /// Scratch for one room's events.
    events: Vec<RoomEvent>,
    /// Datagrams no room took.
    pub unrouted: u64,
}

impl Hub {
    pub fn new(local: SocketAddr) -> Hub {
        Hub {
            local,
            rooms: HashMap::new(),
            routes: HashMap::new(),
            dirty: Vec::new(),
            timers: BinaryHeap::new(),
            events: Vec::new(),
            unrouted: 0,
        }
    }

    pub fn local(&self) -> SocketAddr {
        self.local
    }

    pub fn room(&self, id: RoomId) -> Option<&Room> {
        self.rooms.get(&id).map(|s| &s.room)
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Opens an empty room; false if `id` is taken.
    pub fn open_room(&mut self, id: RoomId, config: RoomConfig) -> bool {
        if self.rooms.contains_key(&id) {
            return false;
        }
        let room = Room::new(config, self.local);
        self.rooms.insert(
            id,
            Slot {
                room,
                next: None,
                dirty: false,
            },
        );
        true
    }

    /// Drops a room and its peers at once (no goodbye is sent), and its routes.
    pub fn close_room(&mut self, id: RoomId) -> Option<Room> {
        let slot = self.rooms.remove(&id)?;
        self.routes.retain(|_, r| *r != id);
        Some(slot.room)
    }

    /// [`Room::accept_offer`] in room `id`.
    pub fn accept_offer(
        &mut self,
        id: RoomId,
        who: Participant,
        offer: &str,
        now: Instant,
    ) -> Result<String, SfuError> {
        let answer = self.slot(id)?.room.accept_offer(who, offer, now)?;
        self.mark(id);
        Ok(answer)
    }

    /// [`Room::remove`] in room `id`.
    pub fn remove(&mut self, id: RoomId, who: Participant) -> Result<(), SfuError> {
        self.slot(id)?.room.remove(who);
        self.mark(id);
        Ok(())
    }

    /// [`Room::tap`] in room `id`.
    pub fn tap(
        &mut self,
        id: RoomId,
        side: Side,
        capacity: usize,
    ) -> Result<TapReceiver, SfuError> {
        let receiver = self.slot(id)?.room.tap(side, capacity);
        self.mark(id); // polled soon: the tap's keyframe request goes out
        Ok(receiver)
    }

    fn slot(&mut self, id: RoomId) -> Result<&mut Slot, SfuError> {
        self.rooms.get_mut(&id).ok_or(SfuError::NoRoom(id))
    }

    fn mark(&mut self, id: RoomId) {
        if let Some(slot) = self.rooms.get_mut(&id) {
            if !slot.dirty {
                slot.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// Routes a datagram: to the room that took this source last, else (STUN only) to the
    /// first room whose peers accept it (remembered). Returns the room, or `None`
    /// (ignored, counted).
    pub fn handle_datagram(
        &mut self,
        source: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) -> Option<RoomId> {
        let local = self.local;
        if let Some(&id) = self.routes.get(&source) {
            let took = self
                .rooms
                .get_mut(&id)
                .is_some_and(|s| s.room.handle_datagram(source, local, bytes, now));
            if took {
                self.mark(id);
                return Some(id);
            }
            self.routes.remove(&source);
        }
        // A peer's first datagram from an address is always a STUN binding request (ICE
        // checks come first), so only STUN is worth a scan over the rooms: a flood of
        // anything else from unknown addresses costs one byte's look, not a scan.
        if !is_stun(bytes) {
            self.unrouted += 1;
            return None;
        }
        let found = self.rooms.iter_mut().find_map(|(&id, s)| {
            s.room
                .handle_datagram(source, local, bytes, now)
                .then_some(id)
        });
        match found {
            Some(id) => {
                self.routes.insert(source, id);
                self.mark(id);
            }
            None => self.unrouted += 1,
        }
        found
    }

    /// Polls the rooms that had input and those whose deadline has come.
    pub fn poll(&mut self, now: Instant, out: &mut HubOutput) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(slot) = self.rooms.get_mut(&id).filter(|s| s.next == Some(at)) {
                slot.next = None; // re-armed by the poll below, even at the same instant
                self.mark(id);
            }
        }
        let dirty = std::mem::take(&mut self.dirty);
        for id in &dirty {
            let Some(slot) = self.rooms.get_mut(id) else {
                continue;
            };
            slot.dirty = false;
            let next = slot
                .room
                .poll_into(now, &mut out.transmits, &mut self.events);
            out.events.extend(self.events.drain(..).map(|e| (*id, e)));
            if next != slot.next {
                slot.next = next;
                if let Some(at) = next {
                    self.timers.push(Reverse((at, *id)));
                }
            }
        }
        self.dirty = dirty;
        self.dirty.clear();
        out.timeout = self.earliest();
    }

    /// The earliest live deadline (dropping stale heap entries on the way).
    fn earliest(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if self.rooms.get(&id).is_some_and(|s| s.next == Some(at)) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }
}

/// RFC 7983 demultiplexing: a first byte 0–3 is STUN.
fn is_stun(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|&b| b < 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sfu::synthetic::SyntheticPeer;
    use std::time::Duration;

    const HUB: &str = "127.0.0.1:50000";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Two rooms with one participant each, pumped through the hub until both connect.
    fn two_rooms() -> (Hub, Vec<(RoomId, SyntheticPeer)>, Instant) {
        let mut now = Instant::now();
        let mut hub = Hub::new(addr(HUB));
        let mut clients = Vec::new();
        for (id, port) in [(7u64, 41_001u16), (8, 41_002)] {
            assert!(hub.open_room(id, RoomConfig::default()));
            let local = addr(&format!("127.0.0.1:{port}"));
            let (mut c, offer) = SyntheticPeer::offer(local, now).unwrap();
            let who = Participant::Side(Side::Visitor);
            let answer = hub.accept_offer(id, who, &offer, now).unwrap();
            c.accept_answer(&answer).unwrap();
            clients.push((id, c));
        }
        assert!(!hub.open_room(7, RoomConfig::default()), "ids are unique");
        let mut out = HubOutput::default();
        for _ in 0..100 {
            for (_, c) in clients.iter_mut() {
                let mut sent = Vec::new();
                c.poll(&mut sent);
                for d in sent {
                    hub.handle_datagram(c.local(), &d.bytes, now);
                }
            }
            hub.poll(now, &mut out);
            for d in out.transmits.drain(..) {
                if let Some((_, c)) = clients.iter_mut().find(|(_, c)| c.local() == d.to) {
                    c.handle_datagram(addr(HUB), &d.bytes, now);
                }
            }
            out.events.clear();
            now += Duration::from_millis(10);
            for (_, c) in clients.iter_mut() {
                c.handle_timeout(now);
            }
        }
        (hub, clients, now)
    }

    #[test]
    fn datagrams_reach_their_own_room_and_the_route_is_remembered() {
        let (mut hub, clients, now) = two_rooms();
        for (id, c) in &clients {
            assert!(c.is_connected());
            let who = Participant::Side(Side::Visitor);
            assert!(hub.room(*id).unwrap().is_connected(who));
            assert_eq!(hub.routes.get(&c.local()), Some(id));
        }
        assert_eq!(hub.routes.len(), 2);
        assert_eq!(
            hub.handle_datagram(addr("127.0.0.1:1"), &[0xff; 30], now),
            None
        );
        assert_eq!(hub.unrouted, 1);
        // Looks like STUN (first byte 0-3) but is not: scanned, taken by no room.
        assert_eq!(
            hub.handle_datagram(addr("127.0.0.1:1"), &[0x00; 30], now),
            None
        );
        assert_eq!(hub.unrouted, 2);
        assert!(hub.close_room(7).is_some());
        assert!(!hub.routes.values().any(|&r| r == 7));
        assert!(matches!(
            hub.accept_offer(7, Participant::Watcher(1), "v=0", now),
            Err(SfuError::NoRoom(7))
        ));
        assert_eq!(hub.room_count(), 1);
    }

    #[test]
    fn an_idle_hub_has_no_deadline_and_a_room_with_a_peer_has_one() {
        let (mut hub, _clients, now) = two_rooms();
        let mut out = HubOutput::default();
        hub.poll(now, &mut out);
        assert!(out
            .timeout
            .is_some_and(|t| t > now - Duration::from_secs(1)));
        hub.close_room(7);
        hub.close_room(8);
        hub.poll(now, &mut out);
        assert_eq!(out.timeout, None);
    }
}
