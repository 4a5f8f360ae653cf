package attack

// Promise 14: "The key names the tenant." (docs/promises.md; brief: ABUSE.md)

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/internal/servicetest"
)

// abPartition is the raw partition Shukei's partitioner (consistent Murmur2) gives a key.
func abPartition(key []byte, parts int) int {
	ps := make([]int, parts)
	for i := range ps {
		ps[i] = i
	}
	return (&kafka.Murmur2Balancer{Consistent: true}).Balance(kafka.Message{Key: key}, ps...)
}

// TestAbuseForgedKafkaKeysAreRefused writes straight to the raw topic events of tenant A keyed
// with tenant B's id, with random keys, with an empty or missing key, with near-misses of A's
// own id, keyed with every other tenant's id (so A lands in every partition), and events of B
// keyed with A's id; alongside, every tenant's ordinary events with their own key. The
// processor and an aggregator releasing one-minute base windows (servicetest.AggregatorEnv)
// run over it. Every forged message must be refused as key_mismatch and stored nowhere else
// (no events table, no purpose mart), and the aggregator must count none of them: no cell of
// a forged feature in its partials, tenant rows or releases; each tenant's raw material per
// cell exactly what its own events give (every tenant sent the same); each cell's tenants,
// summed over partitions, at most the number of tenants (a tenant spread over partitions
// would be counted once in each).
func TestAbuseForgedKafkaKeysAreRefused(t *testing.T) {
	t.Parallel()
	s := newStack(t, 2*time.Second)
	s.env = append(s.env, "SHUKEI_LOG_LEVEL=info")
	a, b := "kfa-"+randHex(3), "kfb-"+randHex(3)
	for abPartition([]byte(b), s.rawParts) == abPartition([]byte(a), s.rawParts) {
		b = "kfb-" + randHex(3)
	}
	tenants := []string{a, b}
	covered := map[int]bool{abPartition([]byte(a), s.rawParts): true, abPartition([]byte(b), s.rawParts): true}
	for len(covered) < s.rawParts {
		c := "kfc-" + randHex(3)
		if p := abPartition([]byte(c), s.rawParts); !covered[p] {
			covered[p] = true
			tenants = append(tenants, c)
		}
	}
	// A control tenant no forged message names, with the same own events as every other.
	control := "kfd-" + randHex(3)
	keyed := append([]string(nil), tenants[1:]...) // the tenants A's forged messages are keyed with
	tenants = append(tenants, control)
	for _, ten := range tenants {
		s.addTenant(ten, "contracted")
	}
	const legitFeature = "legit.feature.one"
	releases := servicetest.Topic(t, s.brokers, 1)
	aggAddr := freeAddr(t)
	s.addrs["aggregator"] = aggAddr
	aggEnv := append(abAggregatorEnv(releases, aggAddr),
		"SHUKEI_AGGREGATOR_WINDOW=1m", "SHUKEI_AGGREGATOR_ALLOWED_LATENESS=1s",
		"SHUKEI_AGGREGATOR_FEATURES="+legitFeature,
		// Weekly releases on, so each close also stores each tenant's raw material (kind
		// 'tenant', migrations/0012): the exact per-tenant counts compared below.
		"SHUKEI_AGGREGATOR_WEEK_EPSILON=0.5")
	agg := s.start("aggregator", aggEnv...)

	// The window everything is in: this minute, or the next if this one is nearly over.
	now := time.Now()
	w := now.Truncate(time.Minute)
	at := now.Add(-time.Second)
	if time.Until(w.Add(time.Minute)) < 25*time.Second {
		w = w.Add(time.Minute)
		at = w.Add(2 * time.Second)
	}
	if at.Before(w) {
		at = w.Add(500 * time.Millisecond)
	}

	// Every tenant's own events: the same for each, so each tenant's raw material is the same.
	const perTenant = 4
	var msgs []rawMsg
	legitIDs := map[string]string{} // event id → tenant
	for _, ten := range tenants {
		for range perTenant {
			body, id, _ := abFeature(ten, legitFeature, at)
			msgs = append(msgs, rawMsg{key: []byte(ten), value: body})
			legitIDs[id] = ten
		}
	}
	// The forged messages.
	type forged struct {
		label string
		id    string
	}
	forgedBy := map[string]*forged{} // body → forged
	forge := func(label, payloadTenant, feature string, key []byte) {
		body, id, _ := abFeature(payloadTenant, feature, at)
		msgs = append(msgs, rawMsg{key: key, value: body})
		forgedBy[string(body)] = &forged{label: label, id: id}
	}
	for i := range 5 {
		forge("payload A, key B", a, "frg.key-b."+strconv.Itoa(i), []byte(b))
		forge("payload A, key B, A's own feature", a, legitFeature, []byte(b))
		forge("payload B, key A", b, "frg.b-key-a."+strconv.Itoa(i), []byte(a))
	}
	for i := range 12 {
		forge("payload A, random key", a, "frg.random."+strconv.Itoa(i), []byte("kfr-"+randHex(4)))
	}
	forge("payload A, empty key", a, "frg.empty.0", []byte{})
	forge("payload A, empty key", a, "frg.empty.1", []byte{})
	forge("payload A, no key", a, "frg.nokey.0", nil)
	forge("payload A, no key", a, "frg.nokey.1", nil)
	for i, k := range []string{strings.ToUpper(a), a + " ", " " + a, a + "\x00", a + "\n", strings.Replace(a, "-", "_", 1)} {
		forge("payload A, key a near-miss of A", a, "frg.near."+strconv.Itoa(i), []byte(k))
	}
	for _, other := range keyed {
		for i := range 2 {
			forge("payload A, keyed with another registered tenant (every partition)", a, "frg.spread."+strconv.Itoa(i), []byte(other))
			forge("payload A, keyed with another registered tenant, A's own feature", a, legitFeature, []byte(other))
		}
	}
	spread := map[int]bool{}
	for _, m := range msgs {
		if forgedBy[string(m.value)] != nil && m.key != nil {
			spread[abPartition(m.key, s.rawParts)] = true
		}
	}
	if len(spread) < s.rawParts {
		t.Errorf("harness: the forged messages reach %d of %d partitions", len(spread), s.rawParts)
	}
	s.produce(msgs)
	t.Logf("window %s: %d tenants × %d own events, %d forged messages over %d partitions", w.Format("15:04"), len(tenants), perTenant, len(forgedBy), len(spread))

	// Past the window's end and its lateness, every partition gets a later event, so every
	// partition closes the window whether its watermark follows event time or the clock.
	time.Sleep(time.Until(w.Add(time.Minute + 3*time.Second)))
	var tickers []rawMsg
	for _, ten := range tenants {
		body, id, _ := abFeature(ten, legitFeature, time.Now())
		tickers = append(tickers, rawMsg{key: []byte(ten), value: body})
		legitIDs[id] = ten
	}
	s.produce(tickers)

	// ---- the processor: refused as key_mismatch, stored nowhere else ----
	raw := s.readRaw()
	describe := func(m kafka.Message) string {
		if f := forgedBy[string(m.Value)]; f != nil {
			return "forged: " + f.label
		}
		return fmt.Sprintf("own event of %s", string(m.Key))
	}
	s.runProcessor(len(raw), 2*time.Minute)
	outs := s.accountFor(raw, describe)
	var bad []string
	seen := 0
	for _, m := range raw {
		f := forgedBy[string(m.Value)]
		if f == nil {
			continue
		}
		seen++
		o := outs[[2]int64{int64(m.Partition), m.Offset}]
		switch {
		case o == nil:
			bad = append(bad, fmt.Sprintf("%s (key %q, %d/%d): neither stored nor refused", f.label, m.Key, m.Partition, m.Offset))
		case o.stored > 0:
			bad = append(bad, fmt.Sprintf("%s (key %q, %d/%d): STORED as an event", f.label, m.Key, m.Partition, m.Offset))
		case len(o.reasons) != 1 || o.reasons[0] != "key_mismatch":
			bad = append(bad, fmt.Sprintf("%s (key %q, %d/%d): refused as %v, want key_mismatch", f.label, m.Key, m.Partition, m.Offset, o.reasons))
		}
	}
	if seen != len(forgedBy) {
		t.Errorf("harness: %d of %d forged messages found back in the raw topic", seen, len(forgedBy))
	}
	stored := s.storedEventIDs()
	for _, f := range forgedBy {
		if tb := stored[f.id]; len(tb) > 0 {
			bad = append(bad, fmt.Sprintf("%s: event %s is in %v", f.label, f.id, tb))
		}
	}
	var legitMissing int
	for id := range legitIDs {
		if len(stored[id]) == 0 {
			legitMissing++
		}
	}
	if legitMissing > 0 {
		t.Errorf("canary: %d of %d own events of the tenants are not stored", legitMissing, len(legitIDs))
	}
	reportList(t, "promise 14: a raw message whose key is not its tenant id is refused (key_mismatch) and stored nowhere but among the refusals", bad)

	// ---- the aggregator: the window released, and no forged message counted ----
	ctx := context.Background()
	deadline := time.Now().Add(90 * time.Second)
	for {
		var n uint64
		err := s.conn.QueryRow(ctx, "SELECT count() FROM "+s.db+"_external_aggregate.budget_ledger WHERE window_start = ?", w).Scan(&n)
		if err == nil && n > 0 {
			break
		}
		if !agg.running() {
			t.Fatalf("the aggregator exited (%v):\n%s", agg.err, tail(agg.out, 30))
		}
		if time.Now().After(deadline) {
			t.Fatalf("the aggregator did not release window %s within 90 s of its end (ledger: %d charges, err %v); its last lines:\n%s", w.Format("15:04"), n, err, tail(agg.out, 20))
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(time.Second)
	metrics := scrape(t, "http://"+aggAddr+"/metrics")
	s.stop(agg)

	type stRow struct {
		kind, metric, cell, tenant string
		partition, tenants         uint32
		events                     uint64
	}
	rows, err := s.conn.Query(ctx, "SELECT toString(kind), partition, metric, cell, tenants, tenant_id, events FROM "+s.db+"_aggregator.aggregate_state WHERE window_start = ? AND kind != 'progress'", w)
	if err != nil {
		t.Fatalf("read aggregate_state: %v", err)
	}
	var state []stRow
	for rows.Next() {
		var r stRow
		if err := rows.Scan(&r.kind, &r.partition, &r.metric, &r.cell, &r.tenants, &r.tenant, &r.events); err != nil {
			t.Fatal(err)
		}
		state = append(state, r)
	}
	rows.Close()
	var abad []string
	partialTenants := map[[2]string]uint32{}     // (metric, cell) → tenants summed over partitions
	perTenant2 := map[string]map[string]uint64{} // tenant → metric|cell → events
	var nPartial, nTenant int
	for _, r := range state {
		if strings.Contains(r.cell, "frg.") {
			abad = append(abad, fmt.Sprintf("aggregate_state %s row (partition %d, metric %s, tenant %q) has a cell of a forged message: %q", r.kind, r.partition, r.metric, r.tenant, r.cell))
		}
		switch r.kind {
		case "partial":
			nPartial++
			partialTenants[[2]string{r.metric, r.cell}] += r.tenants
		case "tenant":
			nTenant++
			if perTenant2[r.tenant] == nil {
				perTenant2[r.tenant] = map[string]uint64{}
			}
			perTenant2[r.tenant][r.metric+"|"+r.cell] += r.events
		}
	}
	for k, n := range partialTenants {
		if int(n) > len(tenants) {
			abad = append(abad, fmt.Sprintf("partials of metric %s cell %q count %d tenants over the partitions, but only %d tenants sent events: a tenant was counted in more than one partition", k[0], k[1], n, len(tenants)))
		}
	}
	if nPartial == 0 {
		abad = append(abad, "canary: no partial aggregate of the window at all")
	}
	if nTenant == 0 {
		t.Logf("no per-tenant rows (kind 'tenant') for the window: the per-tenant comparison is skipped, the partials' tenant counts remain")
	} else {
		ref := perTenant2[control]
		if len(ref) == 0 {
			abad = append(abad, fmt.Sprintf("canary: no per-tenant rows for control tenant %s", control))
		}
		for _, ten := range tenants {
			got := perTenant2[ten]
			if d := diffCounts(ref, got); d != "" {
				abad = append(abad, fmt.Sprintf("tenant %s's raw material differs from control tenant %s's (both sent the same %d events): %s", ten, control, perTenant, d))
			}
		}
		for ten := range perTenant2 {
			if !containsStr(tenants, ten) {
				abad = append(abad, fmt.Sprintf("per-tenant rows for %q, which is no registered tenant (a forged key?)", ten))
			}
		}
	}
	var rel, relFrg uint64
	if err := s.conn.QueryRow(ctx, "SELECT count(), countIf(position(dims, 'frg.') > 0 OR arrayExists(x -> position(x, 'frg.') > 0, dim_values)) FROM "+s.db+"_external_aggregate.releases WHERE window_start = ?", w).Scan(&rel, &relFrg); err != nil {
		t.Errorf("read the releases: %v", err)
	}
	if relFrg > 0 {
		abad = append(abad, fmt.Sprintf("%d released cells of window %s name a forged feature", relFrg, w.Format("15:04")))
	}
	reportList(t, "promise 14: the aggregator counts a message whose key is not its tenant id in no release", abad)
	t.Logf("aggregator, window %s: %d partial rows, %d per-tenant rows (%d tenants), %d released cells; partial tenants per cell %v", w.Format("15:04"), nPartial, nTenant, len(perTenant2), rel, partialTenants)

	// The aggregator's own count of key_mismatch refusals, if it exports one.
	var lines []string
	var sum float64
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, "#") || !strings.Contains(l, "key_mismatch") {
			continue
		}
		lines = append(lines, l)
		f := strings.Fields(l)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	switch {
	case len(lines) == 0:
		// No reason label: its count of refused messages must be exactly the forged ones
		// (every other message of the topic is valid and its tenant's own).
		var rej []string
		var n float64
		for _, l := range strings.Split(metrics, "\n") {
			if !strings.HasPrefix(l, "#") && strings.Contains(l, "reject") {
				rej = append(rej, l)
				if strings.HasPrefix(l, "shukei_aggregator_events_total{") {
					f := strings.Fields(l)
					v, _ := strconv.ParseFloat(f[len(f)-1], 64)
					n += v
				}
			}
		}
		if int(n) != len(forgedBy) {
			t.Errorf("promise 14: the aggregator refused %v messages (shukei_aggregator_events_total, rejected), but %d forged messages were written and every other message is valid: %v", n, len(forgedBy), rej)
		} else {
			t.Logf("the aggregator exports no series labelled key_mismatch; it refused exactly the %d forged messages: %v", len(forgedBy), rej)
		}
	case int(sum) != len(forgedBy):
		t.Errorf("promise 14: the aggregator's key_mismatch series sum to %v, but %d forged messages were written: %v", sum, len(forgedBy), lines)
	default:
		t.Logf("the aggregator counted %v key_mismatch refusals (%d forged): %v", sum, len(forgedBy), lines)
	}
}

func diffCounts(want, got map[string]uint64) string {
	var d []string
	for k, v := range want {
		if got[k] != v {
			d = append(d, fmt.Sprintf("%s: %d, control %d", k, got[k], v))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			d = append(d, fmt.Sprintf("%s: %d, control none", k, v))
		}
	}
	sort.Strings(d)
	if len(d) > 6 {
		d = append(d[:6], fmt.Sprintf("… %d more", len(d)-6))
	}
	return strings.Join(d, "; ")
}

func containsStr(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		t.Logf("scrape %s: %v", url, err)
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
