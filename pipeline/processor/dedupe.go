package processor

import (
	"sync"
	"time"

	"github.com/google/uuid"
)

// eventID is an event id as the dedupe keeps it: the UUID's 16 bytes. Stored events' ids are
// lowercase canonical UUIDs (event.IsEventID), so this is one-to-one with the text, and a
// remembered id holds nothing of the message it came from.
type eventID = uuid.UUID

// parseEventID is the id of a stored event; ok is false for text that is not a UUID (never
// the case for an event the decision accepted).
func parseEventID(s string) (eventID, bool) {
	id, err := uuid.Parse(s)
	return id, err == nil
}

// dedupe remembers stored event ids for a horizon, bounded in count: a collector that retried
// after a lost reply sends the same event_id again, and the copy must not be stored twice.
//
// Its memory is fixed by its configuration (processor.dedupe_max): a ring of that many
// (id, time) slots in insertion order, allocated once, and a map from id to its slot. A new id
// takes the next slot; the oldest goes first when it is past the horizon or the ring is full.
// About 24 bytes a slot plus the map's ~30 bytes an id: 2,000,000 ids take about 110 MB.
type dedupe struct {
	mu      sync.Mutex
	horizon time.Duration
	ring    []slot // len == max; head is the oldest, n the number in use
	head, n int
	seen    map[eventID]int32    // id → its slot in ring
	pending map[eventID]struct{} // decided, not yet written
}

type slot struct {
	id eventID
	at int64 // UnixNano
}

func newDedupe(horizon time.Duration, maxIDs int) *dedupe {
	d := &dedupe{horizon: horizon, pending: map[eventID]struct{}{}}
	if horizon > 0 && maxIDs > 0 {
		d.ring = make([]slot, maxIDs)
		d.seen = make(map[eventID]int32, maxIDs)
	}
	return d
}

func (d *dedupe) off() bool { return len(d.ring) == 0 }

// add records id and reports whether it was new.
func (d *dedupe) add(id eventID, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.addLocked(id, now.UnixNano())
}

func (d *dedupe) addLocked(id eventID, now int64) bool {
	if d.off() {
		return true
	}
	d.expire(now)
	if _, ok := d.seen[id]; ok {
		return false
	}
	if d.n == len(d.ring) { // full: the oldest makes room
		d.evict()
	}
	i := (d.head + d.n) % len(d.ring)
	d.ring[i] = slot{id: id, at: now}
	d.seen[id] = int32(i)
	d.n++
	return true
}

// has reports whether id was stored within the horizon, or is being written.
func (d *dedupe) has(id eventID, now time.Time) bool {
	if d.off() {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.expire(now.UnixNano())
	if _, ok := d.pending[id]; ok {
		return true
	}
	_, ok := d.seen[id]
	return ok
}

// addPending marks ids of a batch being written: taken for later batches, not yet stored.
func (d *dedupe) addPending(ids []eventID) {
	if d.off() {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, id := range ids {
		d.pending[id] = struct{}{}
	}
}

// confirm moves a written batch's ids from pending to stored, in one step: a batch being
// decided meanwhile must find each id in one set or the other.
func (d *dedupe) confirm(ids []eventID, now time.Time) {
	if d.off() {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	at := now.UnixNano()
	for _, id := range ids {
		d.addLocked(id, at)
		delete(d.pending, id)
	}
}

// dropPending forgets batches that were decided but never written (the generation ended).
func (d *dedupe) dropPending() {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.pending)
}

// warm loads ids already in the store (after a restart or rebalance).
func (d *dedupe) warm(ids []eventID, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	at := now.UnixNano()
	for _, id := range ids {
		d.addLocked(id, at)
	}
}

// expire evicts the ids older than the horizon.
func (d *dedupe) expire(now int64) {
	for d.n > 0 && now-d.ring[d.head].at > int64(d.horizon) {
		d.evict()
	}
}

// evict forgets the oldest id.
func (d *dedupe) evict() {
	s := d.ring[d.head]
	if i, ok := d.seen[s.id]; ok && int(i) == d.head {
		delete(d.seen, s.id)
	}
	d.head = (d.head + 1) % len(d.ring)
	d.n--
}
