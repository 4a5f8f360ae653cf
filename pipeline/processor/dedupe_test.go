package processor

import (
	"encoding/binary"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"
)

// add records id as stored and reports whether it was new (the processor adds through claim
// and confirm, and warm).
func (d *dedupe) add(id eventID, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	ok := d.addLocked(id, now.UnixNano())
	d.stored = d.first + int64(d.n)
	return ok
}

// idOf is a distinct event id for each n.
func idOf(n int) eventID {
	var id eventID
	binary.BigEndian.PutUint64(id[8:], uint64(n)+1)
	return id
}

func TestDedupeHorizonAndBound(t *testing.T) {
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	d := newDedupe(time.Hour, 3)
	a := idOf(100)
	if !d.add(a, now) || d.add(a, now) {
		t.Fatal("a second add of the same id must report a duplicate")
	}
	if !d.has(a, now.Add(59*time.Minute)) || d.has(a, now.Add(61*time.Minute)) {
		t.Error("ids must be remembered for the horizon and no longer")
	}
	for i := range 5 {
		d.add(idOf(i), now.Add(2*time.Hour))
	}
	if d.has(idOf(0), now.Add(2*time.Hour)) || d.has(idOf(1), now.Add(2*time.Hour)) || !d.has(idOf(2), now.Add(2*time.Hour)) || !d.has(idOf(4), now.Add(2*time.Hour)) {
		t.Error("past the bound the oldest ids must go first")
	}
	if d.n != 3 || d.indexed() != 3 {
		t.Errorf("holds %d slots and %d ids, bound 3", d.n, d.indexed())
	}
	// An id evicted and seen again is new again, and takes one slot.
	if !d.add(idOf(0), now.Add(2*time.Hour)) || d.n != 3 || d.indexed() != 3 {
		t.Errorf("re-added evicted id: %d slots, %d ids", d.n, d.indexed())
	}
}

// indexed counts the ids the index holds.
func (d *dedupe) indexed() int {
	n := 0
	for _, c := range d.index {
		if c != 0 {
			n++
		}
	}
	return n
}

// The dedupe answers as a plain model (a map and a FIFO of ids, bounded and expiring) over
// random adds, lookups and the passing of time, with a small bound so that the index wraps,
// collides and shifts on every eviction.
func TestDedupeMatchesAModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, bound := range []int{1, 2, 3, 7, 8, 50} {
		d := newDedupe(time.Minute, bound)
		type entry struct {
			id int
			at time.Time
		}
		var fifo []entry
		inModel := map[int]bool{}
		expire := func(now time.Time) {
			for len(fifo) > 0 && (now.Sub(fifo[0].at) > time.Minute || len(fifo) > bound) {
				delete(inModel, fifo[0].id)
				fifo = fifo[1:]
			}
		}
		now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
		for op := range 20_000 {
			now = now.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
			id := rng.IntN(3 * bound)
			expire(now)
			if rng.IntN(2) == 0 {
				if got, want := d.has(idOf(id), now), inModel[id]; got != want {
					t.Fatalf("bound %d op %d: has(%d) = %v, model %v", bound, op, id, got, want)
				}
				continue
			}
			want := !inModel[id]
			if want {
				fifo = append(fifo, entry{id, now})
				inModel[id] = true
				expire(now)
			}
			if got := d.add(idOf(id), now); got != want {
				t.Fatalf("bound %d op %d: add(%d) = %v, model %v", bound, op, id, got, want)
			}
			if d.n != len(fifo) || d.indexed() != len(fifo) {
				t.Fatalf("bound %d op %d: %d slots, %d indexed, model %d", bound, op, d.n, d.indexed(), len(fifo))
			}
		}
	}
}

func TestDedupeOff(t *testing.T) {
	now := time.Now()
	for _, d := range []*dedupe{newDedupe(0, 10), newDedupe(time.Hour, 0)} {
		fresh := make([]bool, 3)
		d.confirm(d.claim([]eventID{idOf(1), idOf(2), idOf(1)}, now, fresh))
		if !fresh[0] || !fresh[1] || fresh[2] {
			t.Errorf("a dedupe that is off still catches a repeat within a chunk: %v", fresh)
		}
		d.warm([]eventID{idOf(3)}, now)
		if d.has(idOf(1), now) || d.has(idOf(3), now) {
			t.Error("a dedupe with no horizon or no room remembers nothing")
		}
	}
}

// While a stored batch's ids become stored, a batch being decided must find every one of them.
func TestDedupeConfirmIsAtomic(t *testing.T) {
	now := time.Now()
	d := newDedupe(time.Hour, 1_000_000)
	for round := range 200 {
		ids := make([]eventID, 100)
		for i := range ids {
			ids[i] = idOf(round*1000 + i)
		}
		end := d.claim(ids, now, make([]bool, len(ids)))
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); d.confirm(end) }()
		for _, id := range ids {
			if !d.has(id, now) {
				t.Fatalf("id %s was neither pending nor stored during confirm", id)
			}
		}
		wg.Wait()
	}
	d.claim([]eventID{idOf(-5)}, now, make([]bool, 1))
	d.dropPending()
	if d.has(idOf(-5), now) {
		t.Error("an id of an abandoned batch still counts as stored")
	}
	if !d.has(idOf(199_099), now) {
		t.Error("dropping the pending ids dropped a stored one")
	}
}

// Claims, confirms and drops answer as a plain model: ids of confirmed batches stay (within
// the horizon and the bound), ids of batches in flight count as taken until they are dropped,
// and batches are confirmed in the order they were claimed. The bound is small, so pending ids
// are evicted too, and the index wraps and shifts.
func TestDedupePendingMatchesAModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, bound := range []int{1, 2, 5, 16, 64} {
		d := newDedupe(time.Minute, bound)
		type entry struct {
			id      int
			at      time.Time
			pending int // the batch's number, or -1 once stored
		}
		var fifo []entry
		var inFlight []int64 // claim ends of batches not yet confirmed, oldest first
		batchNo := 0
		expire := func(now time.Time) {
			for len(fifo) > 0 && (now.Sub(fifo[0].at) > time.Minute || len(fifo) > bound) {
				fifo = fifo[1:]
			}
		}
		inModel := func(id int) bool {
			for _, e := range fifo {
				if e.id == id {
					return true
				}
			}
			return false
		}
		now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
		for op := range 20_000 {
			now = now.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
			expire(now)
			switch r := rng.IntN(10); {
			case r < 3:
				id := rng.IntN(3 * bound)
				if got, want := d.has(idOf(id), now), inModel(id); got != want {
					t.Fatalf("bound %d op %d: has(%d) = %v, model %v", bound, op, id, got, want)
				}
			case r < 7: // a chunk of a new batch
				batchNo++
				ids := make([]eventID, 1+rng.IntN(4))
				want := make([]bool, len(ids))
				for i := range ids {
					id := rng.IntN(3 * bound)
					ids[i] = idOf(id)
					if want[i] = !inModel(id); want[i] {
						fifo = append(fifo, entry{id, now, batchNo})
						expire(now)
					}
				}
				fresh := make([]bool, len(ids))
				inFlight = append(inFlight, d.claim(ids, now, fresh))
				for i := range ids {
					if fresh[i] != want[i] {
						t.Fatalf("bound %d op %d: claim %d fresh %v, model %v", bound, op, i, fresh[i], want[i])
					}
				}
			case r < 9: // the oldest batch in flight is stored
				if len(inFlight) == 0 {
					continue
				}
				d.confirm(inFlight[0])
				inFlight = inFlight[1:]
				oldest := batchNo - len(inFlight)
				for i := range fifo {
					if fifo[i].pending != -1 && fifo[i].pending <= oldest {
						fifo[i].pending = -1
					}
				}
			default: // the generation ends: batches in flight are abandoned
				d.dropPending()
				inFlight = nil
				kept := fifo[:0]
				for _, e := range fifo {
					if e.pending == -1 {
						kept = append(kept, e)
					}
				}
				fifo = kept
			}
			d.mu.Lock()
			d.expire(now.UnixNano()) // confirm and dropPending leave expiry to the next lookup
			d.mu.Unlock()
			if d.n != len(fifo) || d.indexed() != len(fifo) {
				t.Fatalf("bound %d op %d: %d slots, %d indexed, model %d", bound, op, d.n, d.indexed(), len(fifo))
			}
		}
	}
}

// The dedupe's memory is fixed by its bound: filling it several times over keeps the heap
// within what the bound implies (24 bytes a slot, 8–16 of index).
func TestDedupeMemoryIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a dedupe of 500,000 ids four times")
	}
	const bound = 500_000
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	d := newDedupe(time.Hour, bound)
	now := time.Now()
	for i := range 4 * bound {
		d.add(idOf(i), now)
	}
	used := heap() - before
	if d.n != bound || d.indexed() != bound {
		t.Fatalf("holds %d slots and %d ids, bound %d", d.n, d.indexed(), bound)
	}
	if perID := float64(used) / bound; perID > 40 {
		t.Errorf("%.0f bytes an id after filling the bound four times, want at most 40", perID)
	} else {
		t.Logf("%.0f bytes an id (%d MB for %d ids)", perID, used>>20, bound)
	}
	runtime.KeepAlive(d)
}
