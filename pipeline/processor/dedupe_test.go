package processor

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestDedupeHorizonAndBound(t *testing.T) {
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	d := newDedupe(time.Hour, 3)
	if !d.add("a", now) || d.add("a", now) {
		t.Fatal("a second add of the same id must report a duplicate")
	}
	if !d.has("a", now.Add(59*time.Minute)) || d.has("a", now.Add(61*time.Minute)) {
		t.Error("ids must be remembered for the horizon and no longer")
	}
	for i := range 5 {
		d.add(fmt.Sprint(i), now.Add(2*time.Hour))
	}
	if d.has("0", now.Add(2*time.Hour)) || !d.has("4", now.Add(2*time.Hour)) {
		t.Error("past the bound the oldest ids must go first")
	}
}

// While a written batch's ids move from pending to stored, a batch being decided must find
// every one of them in one set or the other.
func TestDedupeConfirmIsAtomic(t *testing.T) {
	now := time.Now()
	d := newDedupe(time.Hour, 1_000_000)
	for round := range 200 {
		ids := make([]string, 100)
		for i := range ids {
			ids[i] = fmt.Sprintf("%d-%d", round, i)
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
	d.addPending([]string{"never-written"})
	d.dropPending()
	if d.has("never-written", now) {
		t.Error("an id of an abandoned batch still counts as stored")
	}
}
