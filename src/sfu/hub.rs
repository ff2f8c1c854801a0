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
        Ok(self.slot(id)?.room.tap(side, capacity))
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

    /// Routes a datagram: to the room that took this source last, else to the first room
    /// whose peers accept it (remembered). Returns the room, or `None` (ignored, counted).
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
