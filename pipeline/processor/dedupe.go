package processor

import (
	"sync"
	"time"
)

// dedupe remembers stored event ids for a horizon, bounded in count: a collector that retried
// after a lost reply sends the same event_id again, and the copy must not be stored twice.
type dedupe struct {
	mu      sync.Mutex
	horizon time.Duration
	max     int
	seen    map[string]time.Time
	order   []entry             // insertion order, for expiry and eviction
	pending map[string]struct{} // decided, not yet written
}

type entry struct {
	id string
	at time.Time
}

func newDedupe(horizon time.Duration, maxIDs int) *dedupe {
	return &dedupe{horizon: horizon, max: maxIDs, seen: map[string]time.Time{}, pending: map[string]struct{}{}}
}

// add records id and reports whether it was new.
func (d *dedupe) add(id string, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.addLocked(id, now)
}

func (d *dedupe) addLocked(id string, now time.Time) bool {
	if d.horizon <= 0 || d.max <= 0 {
		return true
	}
	d.expire(now)
	if _, ok := d.seen[id]; ok {
		return false
	}
	d.seen[id] = now
	d.order = append(d.order, entry{id, now})
	return true
}

// has reports whether id was stored within the horizon.
func (d *dedupe) has(id string, now time.Time) bool {
	if d.horizon <= 0 || d.max <= 0 {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.expire(now)
	if _, ok := d.pending[id]; ok {
		return true
	}
	_, ok := d.seen[id]
	return ok
}

// addPending marks ids of a batch being written: taken for later batches, not yet stored.
func (d *dedupe) addPending(ids []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, id := range ids {
		d.pending[id] = struct{}{}
	}
}

// confirm moves a written batch's ids from pending to stored, in one step: a batch being
// decided meanwhile must find each id in one set or the other.
func (d *dedupe) confirm(ids []string, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, id := range ids {
		d.addLocked(id, now)
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
func (d *dedupe) warm(ids []string, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, id := range ids {
		d.addLocked(id, now)
	}
}

func (d *dedupe) expire(now time.Time) {
	n := 0
	for n < len(d.order) && (now.Sub(d.order[n].at) > d.horizon || len(d.order)-n > d.max) {
		if d.seen[d.order[n].id].Equal(d.order[n].at) {
			delete(d.seen, d.order[n].id)
		}
		n++
	}
	if n > 0 {
		d.order = append(d.order[:0:0], d.order[n:]...)
	}
}
