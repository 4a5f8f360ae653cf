package aggregator

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/anonymizer/dp"
	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/loadgen/population"
	"github.com/shukei/shukei/pipeline/decision"
	"github.com/shukei/shukei/pipeline/topic"
	"github.com/shukei/shukei/policy"
	"github.com/shukei/shukei/registry"
)

// Partitions added to the raw topic move a tenant's later events to another partition
// (topic.KeyPartition over the new count). These tests add them while a window is open and
// check that the tenant is still bounded once in the window's release.

const (
	partsBefore = 2
	partsAfter  = 4
)

// movingTenant is a tenant of the rig's population whose partition changes when the raw topic
// grows from partsBefore to partsAfter partitions.
func movingTenant(t *testing.T, r *aggRig) registry.Tenant {
	t.Helper()
	for _, ten := range r.pop.Registry() {
		if ten.Status == registry.StatusContracted &&
			topic.KeyPartition([]byte(ten.ID), partsBefore) != topic.KeyPartition([]byte(ten.ID), partsAfter) {
			return ten
		}
	}
	t.Fatal("no contracted tenant of the population moves between partitions")
	return registry.Tenant{}
}

// spanEvents is one user's events of tenant ten in window w: one feature use of each feature,
// and app accesses (n of each action), at w.Start+from minutes on.
func spanEvents(ten registry.Tenant, w Window, from int, tag string, features []string, actions map[event.Action]int) []event.Event {
	var out []event.Event
	i := 0
	env := func(s event.Schema) event.Envelope {
		i++
		return event.Envelope{
			EventID: fmt.Sprintf("00000000-0000-4000-8000-%s%08d", tag, i), TenantID: ten.ID,
			OccurredAt: w.Start.Add(time.Duration(from+i) * time.Minute), Schema: s, Source: "test", User: "user-1",
			Client: event.Client{OS: event.OSWindows, DeviceKind: event.DeviceDesktop},
		}
	}
	for _, f := range features {
		out = append(out, event.Event{Envelope: env(event.SchemaFeatureUseV1), Data: &event.FeatureUse{FeatureID: f, Count: 1}})
	}
	for _, a := range slices.Sorted(maps.Keys(actions)) {
		for range actions[a] {
			out = append(out, event.Event{Envelope: env(event.SchemaAppAccessV1), Data: &event.AppAccess{AppID: "app-1", Action: a}})
		}
	}
	return out
}

// preNoise is the release's input for window w as the release step draws it (partialsOf):
// per metric and cell, the bounded value and the number of tenants, before any noise.
func preNoise(t *testing.T, a *Aggregator, w Window) map[string]map[string][2]int64 {
	t.Helper()
	ps, err := a.partialsOf(context.Background(), a.kinds[0], w)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string][2]int64{}
	for _, p := range ps {
		v, err := dp.PartialValue(p.State)
		if err != nil {
			t.Fatal(err)
		}
		if out[p.Metric] == nil {
			out[p.Metric] = map[string][2]int64{}
		}
		c := out[p.Metric][p.Cell]
		out[p.Metric][p.Cell] = [2]int64{c[0] + v, c[1] + p.Tenants}
	}
	return out
}

// TestPartitionsAddedWhileTheAggregatorRuns: a tenant's events of an open day land on one
// partition of a two-partition raw topic; two partitions are added to the live topic and the
// same tenant's later events of the same day land on a new one. The running aggregator must
// be assigned the new partitions, wait for them before releasing the day (the second new
// partition stays empty and must not stall it), and bound the tenant once across both.
func TestPartitionsAddedWhileTheAggregatorRuns(t *testing.T) { testPartitionsAdded(t, true) }

// TestPartitionsAddedWhileTheAggregatorIsStopped is the same with the aggregator stopped while
// partitions are added and the later events written, then started again: stopping the
// consumers does not end the open window, and the tenant must still be bounded once.
func TestPartitionsAddedWhileTheAggregatorIsStopped(t *testing.T) { testPartitionsAdded(t, false) }

func testPartitionsAdded(t *testing.T, live bool) {
	r := newAggRig(t, 40)
	r.cfg.Kafka.RawTopic = servicetest.Topic(t, r.cfg.Kafka.Brokers, partsBefore)
	ctx := context.Background()
	w := WindowOf(day, 24*time.Hour)
	ten := movingTenant(t, r)
	oldPart, newPart := topic.KeyPartition([]byte(ten.ID), partsBefore), topic.KeyPartition([]byte(ten.ID), partsAfter)
	t.Logf("tenant %s: partition %d of %d, then %d of %d", ten.ID, oldPart, partsBefore, newPart, partsAfter)

	// Before: 12 features (feature_adoption's L0) and 10 app opens (app_access's LInf).
	// After: 12 other features, 10 more opens and 3 exports, all in the same day.
	before := spanEvents(ten, w, 0, "0001", population.Features[:12], map[event.Action]int{event.ActionOpen: 10})
	after := spanEvents(ten, w, 60, "0002", population.Features[12:24], map[event.Action]int{event.ActionOpen: 10, event.ActionExport: 3})

	r.clock.set(w.Start.Add(20 * time.Hour)) // inside the day: it stays open
	r.produce(t, before, 0)
	a := r.aggregator(t)
	stop := start(t, a)
	eventually(t, "the first events to be added", time.Minute, func() bool {
		return testutil.ToFloat64(a.m.events.WithLabelValues("added")) == float64(len(before))
	})
	eventually(t, "progress of both partitions", time.Minute, func() bool {
		c, err := a.store.closedAll(ctx)
		return err == nil && len(c) == partsBefore
	})
	if !live {
		stop()
	}

	client := &kafka.Client{Addr: kafka.TCP(r.cfg.Kafka.Brokers...), Timeout: 30 * time.Second}
	resp, err := client.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{Name: r.cfg.Kafka.RawTopic, Count: partsAfter}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := resp.Errors[r.cfg.Kafka.RawTopic]; err != nil {
		t.Fatalf("add partitions: %v", err)
	}
	eventually(t, "the topic's metadata to show the added partitions", 30*time.Second, func() bool {
		n, err := topic.Partitions(ctx, r.cfg.Kafka.Brokers, r.cfg.Kafka.RawTopic)
		return err == nil && n[r.cfg.Kafka.RawTopic] == partsAfter
	})
	if live {
		eventually(t, "the running aggregator to be assigned the added partitions", time.Minute, func() bool {
			return testutil.ToFloat64(a.m.assigned) == partsAfter
		})
	}
	r.produce(t, after, 0)
	where := map[int]int{}
	for _, m := range servicetest.ReadTopic(t, r.cfg.Kafka.Brokers, r.cfg.Kafka.RawTopic) {
		where[m.Partition]++
	}
	if want := map[int]int{oldPart: len(before), newPart: len(after)}; !maps.Equal(where, want) {
		t.Fatalf("messages per partition %v, want %v: the tenant did not move", where, want)
	}
	if !live {
		a = r.aggregator(t)
		start(t, a)
	}
	// The day is open in the tenant's old partition and in its new one: the new partition's
	// events were read.
	eventually(t, "the day to be open in two partitions", time.Minute, func() bool {
		return testutil.ToFloat64(a.m.openWindows) == 2
	})
	eventually(t, "progress of every partition, the empty added one too", time.Minute, func() bool {
		c, err := a.store.closedAll(ctx)
		return err == nil && len(c) == partsAfter
	})
	if n := len(r.releasesOf(t, w)); n != 0 {
		t.Fatalf("the open day was released (%d rows)", n)
	}

	r.clock.set(w.End.Add(3 * time.Hour)) // past the allowed lateness: every partition closes it
	eventually(t, "the release of the day", 90*time.Second, func() bool { return len(r.releasesOf(t, w)) > 0 })
	if n := testutil.ToFloat64(a.m.late); n != 0 {
		t.Fatalf("%v events counted late", n)
	}
	// What the release was drawn from, before noise: the tenant bounded once.
	got := preNoise(t, a, w)
	var cells, adoption int64
	for cell, v := range got["feature_adoption"] {
		cells++
		adoption += v[0]
		if v[0] > 1 || v[1] > 1 {
			t.Errorf("feature_adoption %s: value %d from %d tenants, want at most LInf 1 from the one tenant", cell, v[0], v[1])
		}
	}
	status := "|" + ten.Status
	open, export := got["app_access"]["open"+status], got["app_access"]["export"+status]
	t.Logf("pre-noise: feature_adoption %d cells summing to %d; app_access open %v, export %v (value, tenants)", cells, adoption, open, export)
	if cells != 12 || adoption != 12 {
		t.Errorf("feature_adoption: the tenant is in %d cells summing to %d, want L0 = 12 cells summing to 12", cells, adoption)
	}
	if open != [2]int64{10, 1} {
		t.Errorf("app_access open: (value, tenants) %v, want (LInf = 10, 1)", open)
	}
	if export != [2]int64{3, 1} {
		t.Errorf("app_access export: (value, tenants) %v, want (3, 1): the added partition's events must be in the release", export)
	}
	var parts []uint32
	rows, err := r.conn.Query(ctx, "SELECT DISTINCT partition FROM "+r.db+"_aggregator.aggregate_state WHERE kind = 'tenant' AND tenant_id = ? AND window_start = ? ORDER BY partition", ten.ID, w.Start)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var p uint32
		if err := rows.Scan(&p); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, p)
	}
	rows.Close()
	if len(parts) != 2 {
		t.Errorf("the tenant's stored rows of the day are in partitions %v, want two", parts)
	}

	// The release itself is drawn from it once and stays put.
	rel := r.releasesOf(t, w)
	time.Sleep(time.Second)
	if again := r.releasesOf(t, w); !slices.Equal(again, rel) {
		t.Errorf("the day's release changed after it was drawn")
	}
	if n := r.ledgerEntries(t); n != 1 {
		t.Errorf("ledger has %d entries, want 1", n)
	}
}

// TestReleaseWaitsForAddedPartitions: a release step that still counts the partitions the
// topic had must not release a window that an added partition has stored progress for but
// not yet closed.
func TestReleaseWaitsForAddedPartitions(t *testing.T) {
	r := newAggRig(t, 1)
	a := r.aggregator(t)
	ctx := context.Background()
	w := WindowOf(day, 24*time.Hour)
	acc := a.plan.NewAcc(w)
	ten := &r.pop.Tenants[0].Tenant
	for _, ev := range spanEvents(*ten, w, 0, "0003", population.Features[:1], nil) {
		tg := decision.Tagged{Event: ev, Tenant: ten, Purposes: uint16(policy.AllPurposes), Pseudonym: fakePseudonym(ten.ID, ev.User)}
		acc.Add(&tg, 0)
	}
	ps, err := acc.Partials(a.sampleKey)
	if err != nil {
		t.Fatal(err)
	}
	closeThrough := func(part int, through time.Time, cws []closedWindow) {
		t.Helper()
		if err := a.store.writeClose(ctx, part, cws, progress{closed: through, resume: 1, high: 1}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	closeThrough(0, w.End, []closedWindow{{w: w, partials: ps, tenants: acc.TenantRows()}})
	closeThrough(1, w.End, nil)
	closeThrough(3, w.Start, nil) // an added partition that has not closed the day yet
	if err := a.ReleaseDue(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if n := len(r.releasesOf(t, w)); n != 0 {
		t.Fatalf("the day was released (%d rows) before added partition 3 closed it", n)
	}
	closeThrough(3, w.End, nil)
	if err := a.ReleaseDue(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if n := len(r.releasesOf(t, w)); n != 0 {
		t.Fatalf("the day was released (%d rows) before added partition 2 reported", n)
	}
	closeThrough(2, w.End, nil)
	if err := a.ReleaseDue(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if n := len(r.releasesOf(t, w)); n == 0 {
		t.Fatal("the day was not released once every partition closed it")
	}
}

// TestTenantRowsBoundLikePartials: released from the tenant rows of every partition, a window
// has exactly the pre-noise values and tenant counts of the partitions' own partials when no
// tenant is in two partitions; a tenant that is gets bounded once.
func TestTenantRowsBoundLikePartials(t *testing.T) {
	c := catalogueConfig()
	p := mustPlan(t, c)
	w := WindowOf(day, 24*time.Hour)
	key := []byte("test-key")
	pop := population.New(300, 5, "p-")
	tenants := map[string]*registry.Tenant{}
	for i := range pop.Tenants {
		tenants[pop.Tenants[i].ID] = &pop.Tenants[i].Tenant
	}
	accs := map[int]*Acc{}
	add := func(part int, ev event.Event, off int64) {
		if accs[part] == nil {
			accs[part] = p.NewAcc(w)
		}
		tg := decision.Tagged{Event: ev, Tenant: tenants[ev.TenantID], Purposes: uint16(policy.AllPurposes), Pseudonym: fakePseudonym(ev.TenantID, ev.User)}
		accs[part].Add(&tg, off)
	}
	for i, ev := range pop.Day(day) {
		add(topic.KeyPartition([]byte(ev.TenantID), 3), ev, int64(i))
	}
	sums := func(ps []Partial) map[string][2]int64 {
		out := map[string][2]int64{}
		for _, q := range ps {
			v, err := dp.PartialValue(q.State)
			if err != nil {
				t.Fatal(err)
			}
			k := q.Metric + " " + q.Cell
			out[k] = [2]int64{out[k][0] + v, out[k][1] + q.Tenants}
		}
		return out
	}
	viaRows := func() map[string][2]int64 {
		merged := p.NewAcc(w)
		for _, acc := range accs {
			if err := merged.AddRows(acc.TenantRows()); err != nil {
				t.Fatal(err)
			}
		}
		ps, err := merged.Partials(key)
		if err != nil {
			t.Fatal(err)
		}
		return sums(ps)
	}
	viaPartials := func() map[string][2]int64 {
		var all []Partial
		for _, acc := range accs {
			ps, err := acc.Partials(key)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, ps...)
		}
		return sums(all)
	}
	rows, partials := viaRows(), viaPartials()
	if len(rows) == 0 || !maps.Equal(rows, partials) {
		t.Fatalf("the tenant rows give %d cells, the partials %d, not all equal", len(rows), len(partials))
	}

	// A tenant of its own whose day is split over two partitions: 20 features and 10 opens in
	// each, so each partition alone bounds it to L0 = 12 cells and LInf = 10 opens.
	ten := registry.Tenant{ID: "p-spanning", Status: registry.StatusContracted, Edition: "standard"}
	tenants[ten.ID] = &ten
	for i, ev := range spanEvents(ten, w, 0, "0004", population.Features[:20], map[event.Action]int{event.ActionOpen: 10}) {
		add(0, ev, int64(1_000_000+i))
	}
	for i, ev := range spanEvents(ten, w, 0, "0005", population.Features[20:40], map[event.Action]int{event.ActionOpen: 10}) {
		add(1, ev, int64(1_000_000+i))
	}
	added := func(now, was map[string][2]int64, prefix string) (value, tenants int64) {
		for k, v := range now {
			if strings.HasPrefix(k, prefix) {
				value += v[0] - was[k][0]
				tenants += v[1] - was[k][1]
			}
		}
		return value, tenants
	}
	rows2, partials2 := viaRows(), viaPartials()
	for _, c := range []struct {
		prefix         string
		rows, partials [2]int64 // (value, tenants) the spanning tenant adds
	}{
		{"feature_adoption ", [2]int64{12, 12}, [2]int64{24, 24}},
		{"app_access open|" + ten.Status, [2]int64{10, 1}, [2]int64{20, 2}},
	} {
		v, n := added(rows2, rows, c.prefix)
		pv, pn := added(partials2, partials, c.prefix)
		t.Logf("%s: the spanning tenant adds (%d, %d) through the rows, (%d, %d) through the partitions' partials", c.prefix, v, n, pv, pn)
		if [2]int64{v, n} != c.rows || [2]int64{pv, pn} != c.partials {
			t.Errorf("%s: the spanning tenant adds (value, tenants) %v through the rows and %v through the partials, want %v and %v", c.prefix, [2]int64{v, n}, [2]int64{pv, pn}, c.rows, c.partials)
		}
	}
}
