package attack

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/internal/servicetest"
)

// uniqueContent is a value for a free-string field that looks like ordinary usage data (it
// passes for an active tenant, which the control tenant shows) and appears nowhere else, so
// finding it anywhere means the event's content was kept. Enumerated fields keep the vector's
// value ("").
func uniqueContent(field string) string {
	d := randDigits(8)
	switch field {
	case "data.feature_id":
		return "feat." + d
	case "data.app_id":
		return "app-" + d
	case "data.setting_key":
		return "custom.k" + d
	case "data.operation_id":
		return "record.op" + d
	case "data.result_code":
		return "e_" + d
	case "data.request_id":
		return randHex(16)
	case "data.value":
		return "v" + d
	case "source":
		return "sdk-" + d
	}
	return ""
}

func countEvents(m map[*needle]*sent) int {
	seen := map[*sent]bool{}
	for _, e := range m {
		seen[e] = true
	}
	return len(seen)
}

// contentLike is a unique value that is content or identity by any reading, of one of five
// kinds in turn.
func contentLike(i int) (kind, value string) {
	d := randDigits(8)
	switch i % 5 {
	case 0:
		return "email", "atk" + d + "@example.co.jp"
	case 1:
		return "phone", "090-" + d[:4] + "-" + d[4:]
	case 2:
		return "url", "https://example.com/atk/" + d
	case 3:
		return "file", "report_" + d + ".xlsx"
	default:
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		return "ip", fmt.Sprintf("10.%d.%d.%d", 1+int(b[0])%250, 1+int(b[1])%250, 1+int(b[2])%250)
	}
}

// postOnce posts one event and returns the HTTP status and the event's per-event status.
func postOnce(client *http.Client, base, token string, body []byte) (int, string, error) {
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/events", bytes.NewReader(append(append([]byte(nil), body...), '\n')))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var reply struct {
		Results []struct {
			Status string `json:"status"`
		} `json:"results"`
	}
	status := ""
	if json.Unmarshal(b, &reply) == nil && len(reply.Results) == 1 {
		status = reply.Results[0].Status
	}
	return resp.StatusCode, status, nil
}

// TestTerminatedTenantIsSilent attacks promise 4. A tenant's token works; the tenant is set
// terminated with 'shukei tenants set'; within one registry refresh (2 s here, plus a 3 s
// margin) its token must get 401. Then events for it are written straight to the raw topic,
// each with its own raw user and unique values in its free-string fields (and some of the
// corpus's content values): after the processor has accounted for every raw offset, none of
// those users or values may be found in any table, DLQ record or log line. A contracted
// control tenant gets the same kind of events: its unique values must be found in the event
// store (the scan sees what is stored), its raw users must not (pseudonymised).
func TestTerminatedTenantIsSilent(t *testing.T) {
	began := time.Now()
	const refresh = 2 * time.Second
	const margin = 3 * time.Second
	s := newStack(t, refresh)
	root := servicetest.ModuleRoot(t)
	vecs := loadVectors(t, root)
	leaks, _, _ := loadCorpus(t, root)
	sfx := randHex(4)
	term := "atk-term-" + sfx
	control := "atk-ctl-" + sfx
	token := s.addTenant(term, "contracted")
	s.addTenant(control, "contracted")

	var probeVec *vector
	for _, v := range vecs {
		if v.user && v.schema == "feature_use/v1" && probeVec == nil {
			probeVec = v
		}
	}
	if probeVec == nil {
		t.Fatalf("harness: no valid feature_use/v1 vector with a user")
	}
	sc := newScanner()
	s.redact = sc.redactor()
	var evs []*sent

	// 1. The token works.
	coll := s.start("collector")
	base := "http://" + s.addrs["collector"]
	client := &http.Client{Timeout: 10 * time.Second}
	body, id, user := build(probeVec, term, "", nil)
	code, status, err := postOnce(client, base, token, body)
	if err != nil || code/100 != 2 {
		t.Fatalf("precondition: the token of a freshly registered contracted tenant got HTTP %d (%v), want 2xx", code, err)
	}
	evs = append(evs, &sent{path: "collector", vector: probeVec.name, label: "posted before termination, answered " + status, tenant: term, eventID: id, user: user, body: body})
	t.Logf("before termination: HTTP %d, event %s", code, status)

	// 2. Terminated; 3. the token refused within one refresh.
	cmdStart := time.Now()
	s.cli("tenants", "set", "--tenant", term, "--status", "terminated")
	t0 := time.Now()
	limit := refresh + margin
	first401 := time.Duration(-1)
	codes := map[int]int{}
	for deadline := t0.Add(limit + 15*time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		body, id, user := build(probeVec, term, "", nil)
		code, status, err := postOnce(client, base, token, body)
		if err != nil {
			codes[0]++
			continue
		}
		codes[code]++
		evs = append(evs, &sent{path: "collector", vector: probeVec.name, label: fmt.Sprintf("posted after termination, answered HTTP %d %s", code, status), tenant: term, eventID: id, user: user, body: body})
		if code == http.StatusUnauthorized {
			first401 = time.Since(t0)
			break
		}
	}
	switch {
	case first401 < 0:
		t.Errorf("promise 4: the terminated tenant's token was still not refused (401) %s after 'shukei tenants set --status terminated' returned (answers: %v)", (limit + 15*time.Second).Round(time.Second), codes)
	case first401 > limit:
		t.Errorf("promise 4: the terminated tenant's token was refused (401) only %s after the change, later than one registry refresh (%s) plus %s", first401.Round(10*time.Millisecond), refresh, margin)
	default:
		t.Logf("the terminated tenant's token got 401 %s after 'tenants set' returned (the command took %s; limit %s + %s); answers before: %v",
			first401.Round(10*time.Millisecond), t0.Sub(cmdStart).Round(10*time.Millisecond), refresh, margin, codes)
	}
	if first401 >= 0 {
		// Once refused, it stays refused.
		for range 5 {
			time.Sleep(200 * time.Millisecond)
			body, id, user := build(probeVec, term, "", nil)
			code, status, err := postOnce(client, base, token, body)
			if err != nil {
				continue
			}
			evs = append(evs, &sent{path: "collector", vector: probeVec.name, label: fmt.Sprintf("posted after the first 401, answered HTTP %d %s", code, status), tenant: term, eventID: id, user: user, body: body})
			if code != http.StatusUnauthorized {
				t.Errorf("promise 4: after a 401 the terminated tenant's token got HTTP %d (%s) again", code, status)
			}
		}
	}
	s.stop(coll)

	// 4. Straight to Kafka, each event with its own raw user:
	//   - usage: valid events whose free-string fields hold unique usage-looking values (they
	//     pass for the control tenant, so they reach the tenant check);
	//   - content: events whose free-string fields hold unique values that are content or
	//     identity by any reading (an e-mail address, a phone number, a URL with a path, a file
	//     name, an IP address), and one corpus value of each class in its corpus field.
	// The same usage events for the contracted control tenant.
	usageOf := map[string]*sent{}
	contentOf := map[string]*sent{}
	for _, ten := range []string{term, control} {
		label := "terminated tenant"
		if ten == control {
			label = "control: contracted tenant"
		}
		for _, v := range vecs {
			for range 2 {
				body, id, user := build(v, ten, "", nil)
				ev, _ := decode(body)
				var usage []string
				for _, f := range v.fields {
					if c := uniqueContent(f); c != "" {
						set(ev, f, c)
						usage = append(usage, c)
					}
				}
				b, _ := json.Marshal(ev)
				e := &sent{path: "kafka", vector: v.name, label: label + ", unique usage values", tenant: ten, eventID: id, user: user, body: b, key: []byte(ten), content: usage}
				for _, c := range usage {
					usageOf[c] = e
				}
				evs = append(evs, e)
			}
		}
	}
	kind := 0
	for _, v := range vecs {
		body, id, user := build(v, term, "", nil)
		ev, _ := decode(body)
		var content, kinds []string
		for _, f := range v.fields {
			if uniqueContent(f) == "" {
				continue // not a free-string field of the payload or the source
			}
			k, c := contentLike(kind)
			kind++
			set(ev, f, c)
			content = append(content, c)
			kinds = append(kinds, f+"="+k)
		}
		if len(content) == 0 {
			continue
		}
		b, _ := json.Marshal(ev)
		e := &sent{path: "kafka", vector: v.name, label: "terminated tenant, unique content: " + strings.Join(kinds, " "), tenant: term, eventID: id, user: user, body: b, key: []byte(term), content: content}
		for _, c := range content {
			contentOf[c] = e
		}
		evs = append(evs, e)
	}
	// One corpus value of each class, in the field its corpus entry is about.
	sample := map[string]*leak{}
	for _, l := range leaks {
		if sample[l.expect] == nil {
			sample[l.expect] = l
		}
	}
	var kindsSent []string
	for _, l := range sample {
		for _, v := range vecs {
			has := false
			for _, f := range v.fields {
				has = has || f == l.field
			}
			if !has {
				continue
			}
			body, id, user := build(v, term, l.field, l.value)
			evs = append(evs, &sent{path: "kafka", vector: v.name, field: l.field, leak: l, label: "terminated tenant", tenant: term, eventID: id, user: user, body: body, key: []byte(term)})
			kindsSent = append(kindsSent, l.expect)
			break
		}
	}
	sort.Strings(kindsSent)

	for _, e := range evs {
		if e.user != "" {
			sc.addUser(e.user, "of the "+e.describe(), e)
		}
	}
	for c, e := range contentOf {
		sc.add(&needle{id: "content", desc: "of the " + e.describe(), value: c, owner: e})
	}
	canaryOf := map[*needle]*sent{}
	infoOf := map[*needle]*sent{}
	for c, e := range usageOf {
		n := &needle{id: "usage value", desc: "of the " + e.describe(), value: c, canary: true, owner: e}
		sc.add(n)
		if e.tenant == control {
			canaryOf[n] = e
		} else {
			infoOf[n] = e
		}
	}
	for _, l := range sample {
		sc.add(&needle{id: "corpus value", desc: l.describe() + " sent for the terminated tenant", value: l.value})
	}
	s.redact = sc.redactor()

	var msgs []rawMsg
	for _, e := range evs {
		if e.path == "kafka" {
			msgs = append(msgs, rawMsg{key: e.key, value: e.body})
		}
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
		if e == nil || o == nil {
			continue
		}
		label := e.tenant + " via " + e.path
		if per[label] == nil {
			per[label] = map[string]int{}
		}
		if o.stored > 0 {
			per[label]["stored"] += o.stored
			storedEv[e] = true
		}
		for _, r := range o.reasons {
			per[label]["refused:"+r]++
		}
	}

	tables := scanTables(t, s, sc, attr)
	dlq := s.readDLQ()
	scanDLQ(sc, s.dlq, dlq)
	scanLogs(s, sc)
	const promise = "promise 4: events of a terminated tenant leave no user id and no content"
	classify := func(f *finding) string {
		e := f.n.owner
		switch {
		case e != nil && e.tenant == control && storedEv[e]:
			return "README (users are pseudonymised before storage): the raw user of the control tenant's stored event is kept"
		case e != nil && e.tenant == control:
			return "promise 2: the raw user of a refused event (of the control tenant) is kept"
		case e != nil && strings.HasPrefix(e.label, "posted before termination") && storedEv[e]:
			return "README (users are pseudonymised before storage): the raw user of an event accepted before termination, and stored, is kept"
		case e != nil && storedEv[e]:
			return promise + " — the event was STORED"
		}
		return ""
	}
	inTables := sc.report(t, "table", promise, classify)
	inDLQ := sc.report(t, "DLQ", promise, classify)
	inLogs := sc.report(t, "log", promise, classify)

	// The control: of every stored control event, the scan must have found a unique value in a
	// table (else it does not see what is stored, and its clean results mean nothing).
	seenIn := map[*sent]bool{}
	for n, e := range canaryOf {
		for _, w := range sc.canaries[n] {
			if strings.HasPrefix(w, "table ") {
				seenIn[e] = true
			}
		}
	}
	controlStored, controlSeen := 0, 0
	for e := range storedEv {
		if e.tenant != control || len(e.content) == 0 {
			continue
		}
		controlStored++
		if seenIn[e] {
			controlSeen++
		} else {
			t.Errorf("harness: none of the unique values of a stored control event (%s) was found in any table: the scan is broken, its clean results mean nothing", e.describe())
		}
	}
	if controlStored == 0 {
		t.Logf("note: none of the control tenant's events was stored, so the scan's self-check did not run (control outcomes: %s)", counts(per[control+" via kafka"]))
	}

	// The usage values of the terminated tenant's valid events: the README calls them
	// content-free and a refusal may keep them; the promise's "no content" is read here as no
	// content (the kinds promise 3 lists), so where they are is reported, not failed.
	usageWhere := map[string]int{}
	usageKept := map[*sent]bool{}
	for n, e := range infoOf {
		for _, w := range sc.canaries[n] {
			usageWhere[w]++
			usageKept[e] = true
		}
	}
	t.Logf("note: %d of %d valid events of the terminated tenant left their usage values (feature ids, app ids, source, …; content-free by the README) in: %s",
		len(usageKept), countEvents(infoOf), counts(usageWhere))

	keys := make([]string, 0, len(per))
	for k := range per {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		t.Logf("%s: %s", k, counts(per[k]))
	}
	t.Logf("corpus content kinds sent for the terminated tenant: %s", strings.Join(kindsSent, " "))
	t.Logf("control self-check: %d of %d stored control events had their unique values found in tables", controlSeen, controlStored)
	t.Logf("sent %d events (%d straight to Kafka), %d raw users recorded; DLQ %d records; scanned %d table values, %d DLQ fields, %d log lines",
		len(evs), len(msgs), len(sc.users), len(dlq), sc.scanned["table"], sc.scanned["DLQ"], sc.scanned["log"])
	t.Logf("tables with rows: %s", tableSummary(tables))
	t.Logf("findings: %d in tables, %d in the DLQ, %d in logs; runtime %s", inTables, inDLQ, inLogs, time.Since(began).Round(time.Second))
}
