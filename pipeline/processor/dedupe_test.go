package processor

import (
	"encoding/binary"
	"runtime"
	"sync"
	"testing"
	"time"
)

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
	if d.n != 3 || len(d.seen) != 3 {
		t.Errorf("holds %d slots and %d ids, bound 3", d.n, len(d.seen))
	}
	// An id evicted and seen again is new again, and takes one slot.
	if !d.add(idOf(0), now.Add(2*time.Hour)) || d.n != 3 || len(d.seen) != 3 {
		t.Errorf("re-added evicted id: %d slots, %d ids", d.n, len(d.seen))
	}
}

func TestDedupeOff(t *testing.T) {
	now := time.Now()
	for _, d := range []*dedupe{newDedupe(0, 10), newDedupe(time.Hour, 0)} {
		d.addPending([]eventID{idOf(1)})
		d.confirm([]eventID{idOf(1)}, now)
		if !d.add(idOf(1), now) || d.has(idOf(1), now) {
			t.Error("a dedupe with no horizon or no room remembers nothing")
		}
	}
}

// While a written batch's ids move from pending to stored, a batch being decided must find
// every one of them in one set or the other.
func TestDedupeConfirmIsAtomic(t *testing.T) {
	now := time.Now()
	d := newDedupe(time.Hour, 1_000_000)
	for round := range 200 {
		ids := make([]eventID, 100)
		for i := range ids {
			ids[i] = idOf(round*1000 + i)
		}
		d.addPending(ids)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); d.confirm(ids, now) }()
		for _, id := range ids {
			if !d.has(id, now) {
				t.Fatalf("id %s was in neither set during confirm", id)
			}
		}
		wg.Wait()
	}
	d.addPending([]eventID{idOf(-5)})
	d.dropPending()
	if d.has(idOf(-5), now) {
		t.Error("an id of an abandoned batch still counts as stored")
	}
}

// The dedupe's memory is fixed by its bound: filling it several times over keeps the heap
// within what the bound implies (about 24 bytes a slot and the map's share of each id).
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
	if d.n != bound || len(d.seen) != bound {
		t.Fatalf("holds %d slots and %d ids, bound %d", d.n, len(d.seen), bound)
	}
	if perID := float64(used) / bound; perID > 80 {
		t.Errorf("%.0f bytes an id after filling the bound four times, want at most 80", perID)
	} else {
		t.Logf("%.0f bytes an id (%d MB for %d ids)", perID, used>>20, bound)
	}
	runtime.KeepAlive(d)
}
