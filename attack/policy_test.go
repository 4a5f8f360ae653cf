package attack

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/internal/servicetest"
	"github.com/shukei/shukei/registry"
)

// TestRefusedUserIdsOfPolicyRefusals attacks promise 2 with events that are perfectly valid
// but refused (or at least not pseudonymisable) for policy reasons, each with its own random
// raw user, written straight to the raw topic:
//   - a tenant that was never registered;
//   - a registered tenant whose pseudonymisation keys were destroyed (registry.DestroyKeys:
//     the CLI has no command for it);
//   - a tenant deleted by 'shukei retention run' (contract ended 120 days ago: registry entry
//     and keys gone);
//   - and, as the control that shows the scan can see what is stored, an ordinary contracted
//     tenant (its users must be pseudonymised, never raw).
//
// After the processor has accounted for every raw offset, no raw user may be found in any
// String column of any table, any DLQ record or any line any role printed.
func TestRefusedUserIdsOfPolicyRefusals(t *testing.T) {
	began := time.Now()
	s := newStack(t, 2*time.Second)
	root := servicetest.ModuleRoot(t)
	vecs := loadVectors(t, root)
	ctx := context.Background()
	sfx := randHex(4)

	unknown := "atk-unknown-" + sfx
	shredded := "atk-shredded-" + sfx
	deleted := "atk-deleted-" + sfx
	control := "atk-control-" + sfx

	s.addTenant(shredded, "contracted")
	if err := registry.New(s.conn, s.db, nil).DestroyKeys(ctx, shredded); err != nil {
		t.Fatalf("destroy the pseudonymisation keys of %s: %v", shredded, err)
	}
	s.addTenant(deleted, "terminated", "--contract-end", time.Now().UTC().AddDate(0, 0, -120).Format("2006-01-02"))
	s.cli("retention", "run")
	if list := s.cli("tenants", "list"); strings.Contains(list, deleted) {
		t.Fatalf("harness: 'shukei retention run' left %s (contract ended 120 days ago) in the registry:\n%s", deleted, list)
	}
	var roots uint64
	if err := s.conn.QueryRow(ctx, "SELECT count() FROM "+s.db+"_keys.pseudonym_roots WHERE tenant_id IN (?, ?)", shredded, deleted).Scan(&roots); err != nil || roots != 0 {
		t.Fatalf("harness: pseudonymisation roots of the shredded and deleted tenants still stored: %d (%v)", roots, err)
	}
	s.addTenant(control, "contracted")

	kinds := []struct{ tenant, label string }{
		{unknown, "tenant never registered"},
		{shredded, "tenant whose keys were destroyed"},
		{deleted, "tenant deleted by retention"},
		{control, "control: contracted tenant"},
	}
	var evs []*sent
	for _, k := range kinds {
		for _, v := range vecs {
			for range 2 {
				body, id, user := build(v, k.tenant, "", nil)
				evs = append(evs, &sent{path: "kafka", vector: v.name, label: k.label, tenant: k.tenant, eventID: id, user: user, body: body, key: []byte(k.tenant)})
			}
		}
	}
	sc := newScanner()
	for _, e := range evs {
		if e.user != "" {
			sc.addUser(e.user, "of the "+e.describe(), e)
		}
	}
	sc.add(&needle{id: "canary", desc: "the control tenant's id, stored with its events and in the registry", value: control, canary: true})
	s.redact = sc.redactor()

	var msgs []rawMsg
	for _, e := range evs {
		msgs = append(msgs, rawMsg{key: e.key, value: e.body})
	}
	s.produce(msgs)
	raw := s.readRaw()
	ident := newIdentify(evs)
	byOffset := map[[2]int64]*sent{}
	for _, m := range raw {
		if e := ident.of(m.Value); e != nil {
			byOffset[[2]int64{int64(m.Partition), m.Offset}] = e
		} else {
			t.Errorf("harness: raw offset %d/%d is none of the events the test sent", m.Partition, m.Offset)
		}
	}
	describe := func(m kafka.Message) string {
		if e := byOffset[[2]int64{int64(m.Partition), m.Offset}]; e != nil {
			return e.describe()
		}
		return "a message the test cannot name"
	}
	attr := func(p, o int64) string {
		if e := byOffset[[2]int64{p, o}]; e != nil {
			return e.describe()
		}
		return "an offset the raw topic does not hold"
	}

	s.runProcessor(len(raw), 2*time.Minute)
	outs := s.accountFor(raw, describe)
	per := map[string]map[string]int{}
	storedEv := map[*sent]bool{}
	for _, m := range raw {
		e := byOffset[[2]int64{int64(m.Partition), m.Offset}]
		o := outs[[2]int64{int64(m.Partition), m.Offset}]
		if e == nil {
			continue
		}
		if per[e.label] == nil {
			per[e.label] = map[string]int{}
		}
		switch {
		case o == nil:
			per[e.label]["unaccounted"]++
		case o.stored > 0:
			per[e.label]["stored"] += o.stored
			storedEv[e] = true
		}
		if o != nil {
			for _, r := range o.reasons {
				per[e.label]["refused:"+r]++
			}
		}
	}

	tables := scanTables(t, s, sc, attr)
	dlq := s.readDLQ()
	scanDLQ(sc, s.dlq, dlq)
	scanLogs(s, sc)
	const promise = "promise 2: the raw user of a refused event is kept nowhere"
	classify := func(f *finding) string {
		if f.n.owner != nil && storedEv[f.n.owner] {
			return "README (users are pseudonymised before storage): the raw user of an event the processor STORED is kept"
		}
		return ""
	}
	inTables := sc.report(t, "table", promise, classify)
	inDLQ := sc.report(t, "DLQ", promise, classify)
	inLogs := sc.report(t, "log", promise, classify)
	sc.checkCanaries(t)

	for _, k := range kinds {
		t.Logf("%s (%s): %s", k.label, k.tenant, counts(per[k.label]))
	}
	t.Logf("sent %d events straight to Kafka, %d raw users recorded; DLQ %d records; scanned %d table values, %d DLQ fields, %d log lines",
		len(evs), len(sc.users), len(dlq), sc.scanned["table"], sc.scanned["DLQ"], sc.scanned["log"])
	t.Logf("tables with rows: %s", tableSummary(tables))
	t.Logf("findings: %d in tables, %d in the DLQ, %d in logs; runtime %s", inTables, inDLQ, inLogs, time.Since(began).Round(time.Second))
}
