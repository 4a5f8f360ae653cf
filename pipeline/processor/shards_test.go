package processor

import (
	"fmt"
	"testing"

	"github.com/shukei/shukei/registry"
)

// A tenant stays on the shard the registry recorded when a shard is added; new tenants spread
// over every shard, the new one included; a tenant with none recorded is placed by its hash.
func TestShardOfFollowsTheRecordedShard(t *testing.T) {
	two := []Shard{{Num: 1}, {Num: 2}}
	three := []Shard{{Num: 1}, {Num: 2}, {Num: 3}}
	moved, onNew := 0, 0
	for i := range 600 {
		id := fmt.Sprintf("tenant-%03d", i)
		placed := registry.PlaceShard(id, []uint16{1, 2})
		old := &registry.Tenant{ID: id, Shard: placed}
		if got := two[shardOf(old, two)].Num; got != placed {
			t.Fatalf("%s recorded on shard %d is written to shard %d", id, placed, got)
		}
		if got := three[shardOf(old, three)].Num; got != placed {
			t.Fatalf("%s recorded on shard %d moved to shard %d when a shard was added", id, placed, got)
		}
		// The same tenant unrecorded would have moved with the modulo: that is what recording
		// prevents.
		if three[shardOf(&registry.Tenant{ID: id}, three)].Num != placed {
			moved++
		}
		fresh := registry.PlaceShard(id, []uint16{1, 2, 3})
		if got := three[shardOf(&registry.Tenant{ID: id, Shard: fresh}, three)].Num; got != fresh {
			t.Fatalf("new tenant %s placed on %d written to %d", id, fresh, got)
		}
		if fresh == 3 {
			onNew++
		}
	}
	// Of 600 tenants, about a third land on the new shard, and the modulo alone would move
	// about two thirds of the old ones.
	if onNew < 150 || onNew > 250 {
		t.Errorf("%d of 600 new tenants on the new shard, want about 200", onNew)
	}
	if moved < 300 {
		t.Errorf("hash placement would move only %d of 600 tenants; the test does not show what recording prevents", moved)
	}
	// A recorded shard the cluster no longer has falls back to the hash, within range.
	gone := &registry.Tenant{ID: "tenant-x", Shard: 9}
	if i := shardOf(gone, two); i < 0 || i > 1 {
		t.Errorf("tenant on a removed shard: index %d", i)
	}
	if shardOf(&registry.Tenant{ID: "a", Shard: 2}, []Shard{{}}) != 0 {
		t.Error("one server: every tenant on shard index 0")
	}
}
