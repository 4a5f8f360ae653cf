package processor

import (
	"hash/maphash"
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

// dedupe remembers the event ids of stored events for a horizon, bounded in count, and the ids
// of events decided but not yet stored (pending): a collector that retried after a lost reply
// sends the same event_id again, and the copy must not be stored twice.
//
// Its memory is fixed by its configuration (processor.dedupe_max), allocated once and free of
// pointers (the garbage collector never scans it): a ring of that many (id, time) slots in
// insertion order, and an open-addressing index of at least twice as many int32 cells that
// finds an id's slot. A new id takes the next slot; the oldest goes first when it is past the
// horizon or the ring is full. 24 bytes a slot and 8–16 of index: 2,000,000 ids take 64 MB.
// The index hashes with a key of the process's own (hash/maphash), so ids chosen by a client
// cannot be made to collide.
//
// Pending ids sit in the ring too, as its newest slots: batches are decided and stored in one
// order, so a stored batch's ids are always the oldest pending ones. Every slot ever taken has
// a sequence number; those below stored are stored, the rest pending. Storing a batch moves
// that boundary (confirm); abandoning the batches in flight drops the slots above it
// (dropPending). Each id is looked up once, when it is claimed.
type dedupe struct {
	mu      sync.Mutex
	horizon time.Duration
	ring    []slot // len == max; head is the oldest, n the number in use
	head, n int
	first   int64   // sequence number of ring[head]
	stored  int64   // slots numbered below are stored, the rest pending
	index   []int32 // slot+1, 0 empty; len a power of two ≥ 2·len(ring)
	seed    maphash.Seed
}

type slot struct {
	id eventID
	at int64 // UnixNano
}

func newDedupe(horizon time.Duration, maxIDs int) *dedupe {
	d := &dedupe{horizon: horizon, seed: maphash.MakeSeed()}
	if horizon > 0 && maxIDs > 0 {
		d.ring = make([]slot, maxIDs)
		size := 1
		for size < 2*maxIDs {
			size <<= 1
		}
		d.index = make([]int32, size)
	}
	return d
}

func (d *dedupe) off() bool { return len(d.ring) == 0 }

// home is id's first cell in the index.
func (d *dedupe) home(id eventID) int {
	return int(maphash.Bytes(d.seed, id[:]) & uint64(len(d.index)-1))
}

// find returns the index cell holding id, or -1 and the empty cell where it would go.
func (d *dedupe) find(id eventID) (cell, free int) {
	mask := len(d.index) - 1
	for c := d.home(id); ; c = (c + 1) & mask {
		s := d.index[c]
		if s == 0 {
			return -1, c
		}
		if d.ring[s-1].id == id {
			return c, -1
		}
	}
}

// addLocked takes a slot for id unless it is held; it reports whether id was new.
func (d *dedupe) addLocked(id eventID, now int64) bool {
	d.expire(now)
	cell, free := d.find(id)
	if cell >= 0 {
		return false
	}
	if d.n == len(d.ring) { // full: the oldest makes room
		d.evict()
		_, free = d.find(id) // the eviction may have moved cells
	}
	i := (d.head + d.n) % len(d.ring)
	d.ring[i] = slot{id: id, at: now}
	d.index[free] = int32(i + 1)
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
	cell, _ := d.find(id)
	return cell >= 0
}

// claim takes the ids of a chunk being decided as pending, in order: fresh[i] reports whether
// ids[i] was new (neither stored, pending, nor earlier in ids). end is the sequence number
// after the chunk's last id, for confirm once the batch holding it is stored. With the dedupe
// off, only repeats within ids are caught.
func (d *dedupe) claim(ids []eventID, now time.Time, fresh []bool) (end int64) {
	if d.off() {
		seen := make(map[eventID]struct{}, len(ids))
		for i, id := range ids {
			_, again := seen[id]
			fresh[i] = !again
			seen[id] = struct{}{}
		}
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	at := now.UnixNano()
	for i, id := range ids {
		fresh[i] = d.addLocked(id, at)
	}
	return d.first + int64(d.n)
}

// confirm marks every id claimed before end as stored.
func (d *dedupe) confirm(end int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stored = max(d.stored, end)
}

// dropPending forgets the ids of batches that were decided but never stored (the generation
// ended): they are the newest slots.
func (d *dedupe) dropPending() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.n > 0 && d.first+int64(d.n)-1 >= d.stored {
		last := (d.head + d.n - 1) % len(d.ring)
		if cell, _ := d.find(d.ring[last].id); cell >= 0 {
			d.unindex(cell)
		}
		d.n--
	}
	d.stored = d.first + int64(d.n)
}

// warm loads ids already in the store (after a restart or rebalance); nothing is pending then.
func (d *dedupe) warm(ids []eventID, now time.Time) {
	if d.off() {
		return
	}
	d.dropPending()
	d.mu.Lock()
	defer d.mu.Unlock()
	at := now.UnixNano()
	for _, id := range ids {
		d.addLocked(id, at)
	}
	d.stored = d.first + int64(d.n)
}

// expire evicts the ids older than the horizon.
func (d *dedupe) expire(now int64) {
	for d.n > 0 && now-d.ring[d.head].at > int64(d.horizon) {
		d.evict()
	}
}

// evict forgets the oldest id.
func (d *dedupe) evict() {
	if cell, _ := d.find(d.ring[d.head].id); cell >= 0 {
		d.unindex(cell)
	}
	d.head = (d.head + 1) % len(d.ring)
	d.n--
	d.first++
}

// unindex empties an index cell by backward shifting (Knuth's algorithm R), so every other id
// stays reachable from its home cell without tombstones.
func (d *dedupe) unindex(cell int) {
	mask := len(d.index) - 1
	i := cell
	for j := (i + 1) & mask; d.index[j] != 0; j = (j + 1) & mask {
		k := d.home(d.ring[d.index[j]-1].id)
		// The id in cell j may move to i unless its home lies cyclically in (i, j].
		if (i <= j && (i < k && k <= j)) || (i > j && (i < k || k <= j)) {
			continue
		}
		d.index[i] = d.index[j]
		i = j
	}
	d.index[i] = 0
}
