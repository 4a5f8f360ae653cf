//go:build faults

package attack

import (
	"bytes"
	"context"
	binenc "encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"

	"github.com/shukei/shukei/internal/servicetest"
)

// The sentence attacked (docs/promises.md, promise 20): "However an insert into ClickHouse is
// cut short — ClickHouse or a processor SIGKILLed or SIGSTOPped mid-insert, on one server or on
// a cluster — once the processor has stored or refused every message of the raw topic, every
// purpose mart holds exactly what its materialised view makes of the event store: no row key
// missing, none counted twice, without an operator."
//
// Brief: attack/MARTS-CUT.md. Only the single server is attacked here (the cluster's services
// belong to someone else on this machine).

// ---- the marts, learnt from the live server ----

// mcAgg is one AggregateFunction column of a mart and how to read it: fMerge(params)(col).
type mcAgg struct {
	col, merge string
}

// mcMart is one materialised view of the event store and the table it fills.
type mcMart struct {
	view, target string // db.name of the view and of its TO table
	dir          string // the target's data directory
	engine       string
	keys         []string // AggregatingMergeTree: the sorting-key columns the view produces
	aggs         []mcAgg  // AggregatingMergeTree: the AggregateFunction columns
	cols         []string // MergeTree: every column the view produces
	sel          string   // the view's SELECT
}

// queries are the two statements whose (key, value) rows must be equal: over the mart, and the
// view's SELECT over the whole event store.
func (m *mcMart) queries() (mart, view string) {
	tuple := func(xs []string) string { return "toString(tuple(" + strings.Join(xs, ", ") + "))" }
	if len(m.aggs) > 0 {
		var vals []string
		for _, a := range m.aggs {
			vals = append(vals, a.merge)
		}
		keys := m.keys
		if len(keys) == 0 {
			keys = []string{"1"}
		}
		body := fmt.Sprintf("SELECT %s AS mc_k, %s AS mc_v FROM %%s GROUP BY %s", tuple(m.keys), tuple(vals), strings.Join(keys, ", "))
		if len(m.keys) == 0 {
			body = fmt.Sprintf("SELECT 'all' AS mc_k, %s AS mc_v FROM %%s", tuple(vals))
		}
		return fmt.Sprintf(body, m.target), fmt.Sprintf(body, "("+m.sel+")")
	}
	body := fmt.Sprintf("SELECT %s AS mc_k, toString(count()) AS mc_v FROM %%s GROUP BY %s", tuple(m.cols), strings.Join(m.cols, ", "))
	return fmt.Sprintf(body, m.target), fmt.Sprintf(body, "("+m.sel+")")
}

var (
	mcViewTo  = regexp.MustCompile(`(?s)^CREATE MATERIALIZED VIEW\s+\S+\s+TO\s+(\S+)`)
	mcAggType = regexp.MustCompile(`^AggregateFunction\((.*)\)$`)
	// an insert's part: <partition>_<n>_<n>_0 (a merge's parts have a level above 0)
	mcInsertPart = regexp.MustCompile(`^[^_]+_(\d+)_(\d+)_0$`)
)

func mcUnquote(s string) string { return strings.NewReplacer("`", "", `"`, "").Replace(s) }

// mcMergeOf turns "AggregateFunction(uniq, FixedString(16))" into "uniqMerge(col)", and a
// parametric "AggregateFunction(quantiles(0.5), UInt64)" into "quantilesMerge(0.5)(col)";
// arrays of groupArray-like functions are sorted (their order is the merge's, not the data's).
func mcMergeOf(col, typ string) (string, bool) {
	m := mcAggType.FindStringSubmatch(typ)
	if m == nil {
		return "", false
	}
	inner := m[1]
	depth, end := 0, len(inner)
	for i, r := range inner {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 && end == len(inner) {
				end = i
			}
		}
	}
	fn := strings.TrimSpace(inner[:end])
	name, params := fn, ""
	if i := strings.IndexByte(fn, '('); i >= 0 {
		name, params = fn[:i], fn[i:]
	}
	expr := name + "Merge" + params + "(" + quoteIdent(col) + ")"
	if strings.HasPrefix(name, "groupArray") || strings.HasPrefix(name, "groupUniqArray") {
		expr = "arraySort(" + expr + ")"
	}
	return expr, true
}

// ---- a proxy in front of ClickHouse per processor, with a gate ----

// mcQueryHook runs in a proxy's forwarding goroutine when an INSERT's query packet passes,
// before it is forwarded; true drops the connection instead of forwarding.
type mcQueryHook struct {
	fn func(inst int, table string) bool
}

type mcProxy struct {
	h     *mcHarness
	inst  int
	ln    net.Listener
	mu    sync.Mutex
	conns map[net.Conn]bool
}

func (p *mcProxy) addr() string { return p.ln.Addr().String() }

func (p *mcProxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = true
	} else {
		delete(p.conns, c)
	}
}

// cutAll closes every connection the proxy carries.
func (p *mcProxy) cutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

func (p *mcProxy) serve(client net.Conn) {
	if p.h.gate.Load() {
		_ = client.Close()
		return
	}
	server, err := net.DialTimeout("tcp", p.h.chAddr, 5*time.Second)
	if err != nil {
		_ = client.Close()
		return
	}
	p.track(client, true)
	p.track(server, true)
	defer func() {
		_ = client.Close()
		_ = server.Close()
		p.track(client, false)
		p.track(server, false)
	}()
	go func() {
		_, _ = io.Copy(client, server)
		_ = client.Close()
		_ = server.Close()
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if m := insertRE.FindSubmatch(chunk); m != nil {
				table := mcUnquote(string(m[1]))
				if table == p.h.db+".events" {
					p.h.lastEvents[p.inst].Store(time.Now().UnixNano())
					p.h.eventsInserts.Add(1)
				}
				p.h.insertsSeen.Add(1)
				if p.h.insertSeen != nil {
					p.h.insertSeen(p.inst, table)
				}
				if hook := p.h.onQuery.Load(); hook != nil && hook.fn(p.inst, table) {
					return
				}
			}
			if p.h.gate.Load() {
				return
			}
			if _, werr := server.Write(chunk); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// ---- a watcher of the server's data directory ----

// mcArm is one armed interruption: it fires in the watcher's goroutine at the moment a part
// appears in the server's data directory.
type mcArm struct {
	after     int    // insert parts of the marts to let through after an insert part of the event store
	martTable string // when set: fire at the first insert part of this table instead
	only      int    // ≥ 0: count only event-store parts while this instance inserted last
	// cond, when set, says whether an event-store part counts (after only); who, when set, names
	// the instance killArm hands to its withInst (instead of the one that inserted last)
	cond    func(part string) bool
	who     func() int
	keepOn  bool // a started count goes on through event-store parts cond does not want
	act     func() int
	started bool
	count   int
	parts   []string
	fired   chan mcFire
}

type mcFire struct {
	at    time.Time
	inst  int
	parts []string
}

// watch follows the creation of insert parts (a rename into the table's directory) in the
// event store's and every mart's directory with inotify.
func (h *mcHarness) watch(dirs map[string]string) {
	t := h.t
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		t.Fatalf("harness: inotify: %v", err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	wds := map[int32]string{}
	for table, dir := range dirs {
		wd, err := syscall.InotifyAddWatch(fd, dir, syscall.IN_MOVED_TO|syscall.IN_CREATE)
		if err != nil {
			_ = f.Close()
			t.Fatalf("harness: watch %s (%s): %v", dir, table, err)
		}
		wds[int32(wd)] = table
	}
	t.Cleanup(func() { _ = f.Close() })
	go func() {
		runtime.LockOSThread()
		buf := make([]byte, 256<<10)
		for {
			n, err := f.Read(buf)
			if err != nil {
				return
			}
			for off := 0; off+syscall.SizeofInotifyEvent <= n; {
				wd := int32(binenc.NativeEndian.Uint32(buf[off:]))
				mask := binenc.NativeEndian.Uint32(buf[off+4:])
				l := int(binenc.NativeEndian.Uint32(buf[off+12:]))
				name := string(bytes.TrimRight(buf[off+syscall.SizeofInotifyEvent:off+syscall.SizeofInotifyEvent+l], "\x00"))
				off += syscall.SizeofInotifyEvent + l
				if mask&syscall.IN_MOVED_TO == 0 {
					continue
				}
				if m := mcInsertPart.FindStringSubmatch(name); m != nil && m[1] == m[2] {
					h.onPart(wds[wd], name)
				}
			}
		}
	}()
}

func (h *mcHarness) onPart(table, part string) {
	if table == h.db+".events" {
		h.eventsParts.Add(1)
	}
	if h.partSeen != nil {
		h.partSeen(table, part)
	}
	arm := h.arm.Load()
	if arm == nil {
		return
	}
	fire := false
	switch {
	case arm.martTable != "":
		fire = table == arm.martTable
	case table == h.db+".events":
		if arm.only >= 0 {
			if i, _ := h.recentInserter(); i != arm.only {
				arm.started = false
				return
			}
		}
		if arm.cond != nil && !arm.cond(part) {
			if arm.keepOn && arm.started {
				arm.parts = append(arm.parts, table+"/"+part+" (another insert)")
			} else {
				arm.started = false
			}
			return
		}
		arm.started, arm.count, arm.parts = true, 0, []string{table + "/" + part}
		fire = arm.after == 0
	case arm.started:
		arm.count++
		arm.parts = append(arm.parts, table+"/"+part)
		fire = arm.count >= arm.after
	}
	if fire && h.arm.CompareAndSwap(arm, nil) {
		if arm.martTable != "" {
			arm.parts = []string{table + "/" + part}
		}
		inst := arm.act()
		arm.fired <- mcFire{at: time.Now(), inst: inst, parts: arm.parts}
	}
}

// ---- the harness ----

type mcHarness struct {
	t     *testing.T
	s     *stack
	db    string
	began time.Time
	root  string

	chAddr  string
	chDir   string
	dataDir string

	gate        atomic.Bool
	proxies     []*mcProxy
	lastEvents  []atomic.Int64
	insertsSeen atomic.Int64
	// INSERT queries into the event store through the proxies, and insert parts of it seen
	// appearing: more parts than queries means inserts of more than one block
	eventsInserts, eventsParts atomic.Int64
	onQuery                    atomic.Pointer[mcQueryHook]
	arm                        atomic.Pointer[mcArm]
	// optional observers, set before the proxies and the watcher start (nil in the original
	// attack): an INSERT's query passing instance inst's proxy (before onQuery), and an insert
	// part appearing in a watched table's directory (before any armed interruption sees it)
	insertSeen func(inst int, table string)
	partSeen   func(table, part string)

	marts []*mcMart

	dumps     int
	prevDiff  map[string]bool   // mart + key that differed at the last observation
	firstSeen map[string]string // mart + key → the observation that first saw it differ

	logMu    sync.Mutex
	timeline []string
}

func (h *mcHarness) logf(format string, a ...any) {
	line := fmt.Sprintf("[%5.1fs %s] ", time.Since(h.began).Seconds(), time.Now().UTC().Format("15:04:05.000")) + fmt.Sprintf(format, a...)
	h.logMu.Lock()
	h.timeline = append(h.timeline, line)
	h.logMu.Unlock()
	h.t.Log(line)
}

// chPID is the pid of the single-node server scripts/services.sh started (its pid file).
func (h *mcHarness) chPID() int {
	b, err := os.ReadFile(filepath.Join(h.chDir, "pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// restartCH waits until the killed server is gone and starts it again with scripts/services.sh.
func (h *mcHarness) restartCH(old int) {
	h.t.Helper()
	for deadline := time.Now().Add(60 * time.Second); old > 0 && syscall.Kill(old, 0) == nil && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	began := time.Now()
	var out []byte
	var err error
	for try := 0; try < 3; try++ {
		cmd := exec.Command("bash", filepath.Join(h.root, "scripts", "services.sh"), "up")
		cmd.Env = os.Environ()
		if out, err = cmd.CombinedOutput(); err == nil {
			break
		}
		time.Sleep(2 * time.Second)
	}
	if err != nil {
		h.t.Fatalf("harness: scripts/services.sh up after killing ClickHouse: %v\n%s", err, out[max(0, len(out)-3000):])
	}
	h.logf("ClickHouse started again (pid %d) in %s", h.chPID(), time.Since(began).Round(100*time.Millisecond))
}

// recentInserter is the instance whose INSERT into the event store passed its proxy last.
func (h *mcHarness) recentInserter() (int, time.Duration) {
	best, at := -1, int64(0)
	for i := range h.lastEvents {
		if v := h.lastEvents[i].Load(); v > at {
			best, at = i, v
		}
	}
	if best < 0 {
		return -1, 0
	}
	return best, time.Duration(time.Now().UnixNano() - at)
}

// closeGate makes the proxies refuse the processors and cuts what they carry.
func (h *mcHarness) closeGate() {
	h.gate.Store(true)
	for _, p := range h.proxies {
		p.cutAll()
	}
}

func (h *mcHarness) openGate() { h.gate.Store(false) }

// keyed runs a (key, value) query, retried while the server is coming back.
func (h *mcHarness) keyed(q string) (map[string]string, error) {
	var last error
	for try := 0; try < 8; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		rows, err := h.s.conn.Query(ctx, q)
		out := map[string]string{}
		if err == nil {
			for rows.Next() {
				var k, v string
				if err = rows.Scan(&k, &v); err != nil {
					break
				}
				if _, dup := out[k]; dup {
					err = fmt.Errorf("harness: key %q twice in one grouped result", k)
					break
				}
				out[k] = v
			}
			if err == nil {
				err = rows.Err()
			}
			rows.Close()
		}
		cancel()
		if err == nil {
			return out, nil
		}
		last = err
		time.Sleep(time.Second)
	}
	return nil, last
}

func (h *mcHarness) scalar(q string, args ...any) (uint64, error) {
	var last error
	for try := 0; try < 8; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		var n uint64
		err := h.s.conn.QueryRow(ctx, q, args...).Scan(&n)
		cancel()
		if err == nil {
			return n, nil
		}
		last = err
		time.Sleep(time.Second)
	}
	return 0, last
}

// mcDiff is how one mart differs from its view over the event store.
type mcDiff struct {
	mart                    *mcMart
	martKeys, viewKeys      int
	missing, extra, differ  []string
	nMissing, nExtra, nDiff int
	all                     map[string]string // every differing key → how
	err                     error
}

func (d mcDiff) bad() bool { return d.err != nil || d.nMissing+d.nExtra+d.nDiff > 0 }

func (d mcDiff) summary() string {
	if d.err != nil {
		return fmt.Sprintf("%s: not compared: %v", d.mart.target, d.err)
	}
	return fmt.Sprintf("%s: %d keys (view over the store: %d): %d missing, %d extra, %d different", d.mart.target, d.martKeys, d.viewKeys, d.nMissing, d.nExtra, d.nDiff)
}

func mcShow(s string) string {
	if len(s) > 240 {
		return s[:240] + "…"
	}
	return s
}

// compare compares every mart with its view over the whole event store, key by key.
func (h *mcHarness) compare() []mcDiff {
	var out []mcDiff
	for _, m := range h.marts {
		d := mcDiff{mart: m, all: map[string]string{}}
		mq, vq := m.queries()
		mart, err := h.keyed(mq)
		if err == nil {
			var view map[string]string
			view, err = h.keyed(vq)
			if err == nil {
				d.martKeys, d.viewKeys = len(mart), len(view)
				keys := make([]string, 0, len(view))
				for k := range view {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					mv, ok := mart[k]
					switch {
					case !ok:
						d.nMissing++
						d.all[k] = fmt.Sprintf("key %s missing (the view over the store makes %s)", mcShow(k), mcShow(view[k]))
						if len(d.missing) < 20 {
							d.missing = append(d.missing, d.all[k])
						}
					case mv != view[k]:
						d.nDiff++
						d.all[k] = fmt.Sprintf("key %s: mart holds %s, the view over the store makes %s", mcShow(k), mcShow(mv), mcShow(view[k]))
						if len(d.differ) < 20 {
							d.differ = append(d.differ, d.all[k])
						}
					}
				}
				var extra []string
				for k := range mart {
					if _, ok := view[k]; !ok {
						extra = append(extra, k)
					}
				}
				sort.Strings(extra)
				d.nExtra = len(extra)
				for i, k := range extra {
					d.all[k] = fmt.Sprintf("key %s in the mart (%s), not in the view over the store", mcShow(k), mcShow(mart[k]))
					if i < 20 {
						d.extra = append(d.extra, d.all[k])
					}
				}
			}
		}
		d.err = err
		out = append(out, d)
	}
	return out
}

// observe compares the marts with the store while no processor reaches ClickHouse and says
// whether the cut left a mart different from its view.
func (h *mcHarness) observe(label string) bool {
	// No insert of ours still running on the server (a cut-off connection's insert ends).
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		n, err := h.scalar("SELECT count() FROM system.processes WHERE positionCaseInsensitive(query, 'insert') = 1 AND position(query, ?) > 0", h.db)
		if err == nil && n == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	diffs := h.compare()
	// A key counts as the cut's when it did not differ at the previous observation: a key left
	// different by an earlier cut (and not repaired yet) is not this cut's doing.
	var bad []string
	fresh, old := 0, 0
	now := map[string]bool{}
	for _, d := range diffs {
		if d.err != nil {
			bad = append(bad, d.summary())
			continue
		}
		var ex []string
		n := 0
		keys := make([]string, 0, len(d.all))
		for k := range d.all {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			id := d.mart.target + "\x00" + k
			now[id] = true
			if h.prevDiff[id] {
				old++
				continue
			}
			n++
			if h.firstSeen[id] == "" {
				h.firstSeen[id] = label
			}
			if len(ex) < 2 {
				ex = append(ex, d.all[k])
			}
		}
		fresh += n
		if n > 0 {
			bad = append(bad, fmt.Sprintf("%s — %d of them newly different; e.g. %s", d.summary(), n, strings.Join(ex, " | ")))
		}
	}
	h.prevDiff = now
	h.dump(label, diffs)
	stale := ""
	if old > 0 {
		stale = fmt.Sprintf(" (%d keys differ that already differed at the previous observation: not repaired since)", old)
	}
	if fresh == 0 {
		h.logf("%s: before the processors resumed, no mart has a key that newly differs from its view over the store: the cut did NOT land between the store's part and the marts'%s", label, stale)
		return false
	}
	h.logf("%s: LANDED — before the processors resumed, %d keys of %d of %d marts newly differ from their view over the store%s:\n    %s", label, fresh, len(bad), len(diffs), stale, strings.Join(bad, "\n    "))
	return true
}

// dump writes every differing key of a comparison to SHUKEI_TEST_LOG_DIR (if set), one file a
// comparison, for reading a failure against the timeline.
func (h *mcHarness) dump(label string, diffs []mcDiff) {
	dir := os.Getenv("SHUKEI_TEST_LOG_DIR")
	if dir == "" {
		return
	}
	_ = os.MkdirAll(dir, 0o755)
	var b strings.Builder
	for _, d := range diffs {
		fmt.Fprintf(&b, "== %s\n", d.summary())
		keys := make([]string, 0, len(d.all))
		for k := range d.all {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "%s\n", d.all[k])
		}
	}
	h.dumps++
	name := fmt.Sprintf("marts-%02d-%s", h.dumps, strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' {
			return r - 'A' + 'a'
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, label))
	_ = os.WriteFile(filepath.Join(dir, name[:min(len(name), 76)]+".txt"), []byte(b.String()), 0o644)
}

// describePart says what the event store's part the cut was aimed at holds.
func (h *mcHarness) describePart(label string, f mcFire) {
	if len(f.parts) == 0 || !strings.HasPrefix(f.parts[0], h.db+".events/") {
		return
	}
	part := strings.TrimPrefix(f.parts[0], h.db+".events/")
	var rows uint64
	var tenants []string
	var parts []uint16
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := h.s.conn.QueryRow(ctx, fmt.Sprintf("SELECT count(), arraySort(groupUniqArray(tenant_id)), arraySort(groupUniqArray(kafka_partition)) FROM %s.events WHERE _part = ?", h.db), part).Scan(&rows, &tenants, &parts)
	if err != nil {
		h.logf("%s: the cut part %s: %v", label, part, err)
		return
	}
	if rows == 0 {
		h.logf("%s: the cut part %s was merged into a bigger one at the restart; not described", label, part)
		return
	}
	h.logf("%s: the cut part %s holds %d events of tenants %v, raw partitions %v", label, part, rows, tenants, parts)
}

// ---- the load ----

type mcLoad struct {
	mu      sync.Mutex
	sent    map[string]int
	errs    int
	lastErr string
}

// mcEvent builds one event of a vector for tenant: fresh event_id, occurred_at somewhere in the
// last six days (so the marts' daily and weekly keys spread and the month changes), a user from
// the tenant's pool, and varied ids where the category has them.
func mcEvent(v *vector, tenant string, users []string, r *rand.Rand, now time.Time) []byte {
	ev := deepCopy(v.ev).(map[string]any)
	ev["event_id"] = uuid.NewString()
	ev["tenant_id"] = tenant
	ev["occurred_at"] = now.Add(-time.Minute - time.Duration(r.Int64N(int64(6*24*time.Hour)))).UTC().Format(time.RFC3339)
	if v.user {
		ev["user"] = users[r.IntN(len(users))]
	}
	if data, ok := ev["data"].(map[string]any); ok {
		if _, ok := data["feature_id"]; ok {
			data["feature_id"] = mcFeatures[r.IntN(len(mcFeatures))]
			data["count"] = 1 + r.IntN(5)
		}
		if _, ok := data["app_id"]; ok && v.schema == "app_access/v1" {
			data["app_id"] = []string{"1047", "sales-pipeline", "mc-app-1", "mc-app-2"}[r.IntN(4)]
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(ev); err != nil {
		panic(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// mcFeatures are the feature ids the load uses: enough that a tenant's week holds a dozen
// (the weekly marts keep them as a set).
var mcFeatures = []string{"app.record.create", "app.view.list", "space.post.reaction", "mc.feature.a", "mc.feature.b",
	"mc.feature.c", "mc.feature.d", "mc.feature.e", "mc.feature.f", "mc.feature.g", "mc.feature.h", "mc.feature.i"}

// ---- the run: its services, tenants, processors, load, cuts and verdict ----

// mcOpts are what a run of this harness may vary; the zero value is the original attack's
// (TestAttackMartsExactAfterCutInserts).
type mcOpts struct {
	env     []string // more settings for every processor, after the harness's own (the last wins)
	perTick int      // messages written every 50 ms; 0: 25 (~500 a second)
	// prepare, when set, runs on the harness before its watcher and proxies start (to set its
	// observers)
	prepare func(h *mcHarness)
}

// mcRun is one run of the harness: the stack, the three processors behind their proxies, the
// load, and the count of cuts.
type mcRun struct {
	t      *testing.T
	h      *mcHarness
	s      *stack
	seed   uint64
	rng    *rand.Rand
	began  time.Time
	parts  int
	n      int
	group  string
	procs  []*proc
	listen []string
	procMu sync.Mutex
	kc     *kafka.Client

	load               *mcLoad
	stopLoad, loadDone chan struct{}
	stoppedLoad        bool

	landed, cuts int
	// afterRestart, when set, runs after each killArm's restart of ClickHouse, before the
	// marts are observed (the processors cannot reach the server yet)
	afterRestart func(label string, f mcFire)
}

// mcSetup starts a run: its own database and six-partition raw topic, the marts learnt from the
// server and watched, tenants covering every partition, three processors each behind its own
// proxy, and the load; it returns once the group is Stable and inserts go through.
func mcSetup(t *testing.T, opts mcOpts) *mcRun {
	began := time.Now()
	seed := servicetest.FaultSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	root := servicetest.ModuleRoot(t)
	perTick := opts.perTick
	if perTick <= 0 {
		perTick = 25
	}

	// The single-node server scripts/services.sh runs, and its data directory.
	state := os.Getenv("SHUKEI_SERVICES_DIR")
	if state == "" {
		state = filepath.Join(root, ".services")
	}
	b, err := os.ReadFile(filepath.Join(state, "clickhouse.dir"))
	if err != nil {
		t.Fatalf("harness: %v (start the services with 'make services-up' or set SHUKEI_SERVICES_DIR)", err)
	}
	chDir := strings.TrimSpace(string(b))

	s := newStack(t, 2*time.Second)
	const parts = 6
	s.raw = servicetest.Topic(t, s.brokers, parts)
	s.rawParts = parts
	s.env = append(s.env, "SHUKEI_KAFKA_RAW_TOPIC="+s.raw, "SHUKEI_KAFKA_RAW_PARTITIONS="+strconv.Itoa(parts),
		"SHUKEI_LOG_LEVEL=info", "SHUKEI_PROCESSOR_MAX_BACKOFF=2s", "SHUKEI_PROCESSOR_BATCH_TIMEOUT=1s")
	s.env = append(s.env, opts.env...)
	group, chAddr := "", "127.0.0.1:19000"
	for _, kv := range s.env {
		if v, ok := strings.CutPrefix(kv, "SHUKEI_PROCESSOR_GROUP_ID="); ok {
			group = v
		}
		if v, ok := strings.CutPrefix(kv, "SHUKEI_CLICKHOUSE_ADDR="); ok {
			chAddr = strings.Split(v, ",")[0]
		}
	}
	const n = 3
	h := &mcHarness{t: t, s: s, db: s.db, began: began, root: root, chAddr: chAddr, chDir: chDir, lastEvents: make([]atomic.Int64, n),
		prevDiff: map[string]bool{}, firstSeen: map[string]string{}}
	r := &mcRun{t: t, h: h, s: s, seed: seed, rng: rng, began: began, parts: parts, n: n, group: group}
	if opts.prepare != nil {
		opts.prepare(h)
	}
	if h.chPID() == 0 {
		t.Fatalf("harness: no live ClickHouse server under %s (its pid file); start it with 'make services-up' or set SHUKEI_SERVICES_DIR", chDir)
	}
	for _, d := range []string{filepath.Join(chDir, "data", "data"), filepath.Join(chDir, "data")} {
		if st, err := os.Stat(filepath.Join(d, s.db, "events")); err == nil && st.IsDir() {
			h.dataDir = d
			break
		}
	}
	if h.dataDir == "" {
		t.Fatalf("harness: the events table's directory of %s is not under %s/data[/data]; is %s the server at %s?", s.db, chDir, chDir, chAddr)
	}
	// Whatever happens, ClickHouse is not left stopped or dead, nor a processor stopped.
	t.Cleanup(func() {
		if pid := h.chPID(); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGCONT)
			return
		}
		cmd := exec.Command("bash", filepath.Join(root, "scripts", "services.sh"), "up")
		cmd.Env = os.Environ()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("cleanup: scripts/services.sh up: %v\n%s", err, out)
		}
	})

	// The marts: every materialised view reading the event store, and the table it fills.
	h.discoverMarts()
	dirs := map[string]string{s.db + ".events": filepath.Join(h.dataDir, s.db, "events")}
	for _, m := range h.marts {
		dirs[m.target] = m.dir
	}
	h.watch(dirs)

	// Tenants covering every partition, in every status that is stored, editions and bands.
	var tenants []string
	covered := map[int]bool{}
	for len(covered) < parts || len(tenants) < 10 {
		ten := "mc-" + randHex(3)
		if p := abPartition([]byte(ten), parts); !covered[p] || len(tenants) < 10 {
			covered[p] = true
			tenants = append(tenants, ten)
		}
	}
	statuses := []string{"contracted", "trial", "beta"}
	editions := []string{"standard", "premium"}
	bands := []string{"s", "m", "l"}
	consentAt := time.Now().AddDate(0, 0, -30).UTC().Format(time.RFC3339)
	// The CLI runs, four at a time (each is a process and a connection: seconds on a busy
	// machine); consents and tickets after the tenants exist.
	var adds, more [][]string
	for i, ten := range tenants {
		adds = append(adds, []string{"tenants", "add", "--tenant", ten, "--status", statuses[i%3], "--edition", editions[i%2], "--size-band", bands[i%3]})
		if i%3 == 0 {
			more = append(more, []string{"tenants", "consent", "--tenant", ten, "--purpose", "external_consented", "--version", "1", "--at", consentAt})
		}
		if i%4 == 1 {
			more = append(more, []string{"tenants", "ticket", "open", "--tenant", ten, "--ticket", "mc-" + strconv.Itoa(i), "--ttl", "1d", "--by", "mc-attack"})
		}
	}
	for _, runs := range [][][]string{adds, more} {
		errs := make([]string, len(runs))
		var wg sync.WaitGroup
		sem := make(chan struct{}, 4)
		for i, args := range runs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				if out, err := s.tryCLI(args...); err != nil {
					errs[i] = fmt.Sprintf("shukei %s: %v\n%s", strings.Join(args, " "), err, s.redact(out))
				}
			}()
		}
		wg.Wait()
		for _, e := range errs {
			if e != "" {
				t.Fatal(e)
			}
		}
	}
	h.logf("%d tenants registered in %s; marts: %d", len(tenants), s.db, len(h.marts))
	time.Sleep(2500 * time.Millisecond) // one registry refresh

	// Three processor instances, each behind its own proxy.
	r.procs = make([]*proc, n)
	r.listen = make([]string, n)
	h.proxies = make([]*mcProxy, n)
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := &mcProxy{h: h, inst: i, ln: ln, conns: map[net.Conn]bool{}}
		h.proxies[i] = p
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go p.serve(c)
			}
		}()
		t.Cleanup(func() { _ = ln.Close() })
		r.listen[i] = freeAddr(t)
	}
	for i := range n {
		r.startInst(i)
	}
	t.Cleanup(func() {
		for i := range r.procs {
			r.sig(i, syscall.SIGCONT)
		}
	})

	// Steady load straight to Kafka: ~500 messages a second of every category, 2% collector
	// retries (the same bytes, a new offset), 1% junk.
	vecs := loadVectors(t, root)
	users := map[string][]string{}
	for _, ten := range tenants {
		for range 15 {
			users[ten] = append(users[ten], uuid.NewString())
		}
	}
	load := &mcLoad{sent: map[string]int{}}
	stopLoad, loadDone := make(chan struct{}), make(chan struct{})
	r.load, r.stopLoad, r.loadDone = load, stopLoad, loadDone
	lr := rand.New(rand.NewPCG(seed+1, seed+2))
	go func() {
		defer close(loadDone)
		w := &kafka.Writer{
			Addr: kafka.TCP(s.brokers...), Topic: s.raw,
			Balancer:     &kafka.Murmur2Balancer{Consistent: true},
			RequiredAcks: kafka.RequireAll, BatchSize: 200, BatchTimeout: 5 * time.Millisecond,
		}
		defer w.Close()
		var recent []kafka.Message
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for seq := 0; ; seq++ {
			select {
			case <-stopLoad:
				return
			case <-tick.C:
			}
			var batch []kafka.Message
			kinds := map[string]int{}
			now := time.Now()
			for j := range perTick {
				k := seq*perTick + j
				ten := tenants[lr.IntN(len(tenants))]
				var m kafka.Message
				kind := "valid"
				switch r := k % 100; {
				case (r == 7 || r == 57) && len(recent) > 0:
					m, kind = recent[lr.IntN(len(recent))], "retry"
				case r == 13:
					m, kind = kafka.Message{Key: []byte(ten), Value: []byte("not json {{{ " + randHex(6))}, "junk"
				default:
					m = kafka.Message{Key: []byte(ten), Value: mcEvent(vecs[lr.IntN(len(vecs))], ten, users[ten], lr, now)}
					if k%9 == 0 {
						recent = append(recent, m)
						if len(recent) > 60 {
							recent = recent[1:]
						}
					}
				}
				kinds[kind]++
				batch = append(batch, m)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := w.WriteMessages(ctx, batch...)
			cancel()
			load.mu.Lock()
			if err != nil {
				load.errs++
				load.lastErr = err.Error()
			} else {
				for k, c := range kinds {
					load.sent[k] += c
				}
			}
			load.mu.Unlock()
		}
	}()
	t.Cleanup(r.endLoad)

	r.kc = &kafka.Client{Addr: kafka.TCP(s.brokers...), Timeout: 5 * time.Second}
	time.Sleep(6 * time.Second)
	if !r.waitGroup(n, 60*time.Second) {
		m, st := r.members()
		t.Fatalf("harness: the processor group %s is not Stable with %d members (%d, %s)", group, n, m, st)
	}
	if h.insertsSeen.Load() == 0 {
		t.Fatalf("harness: no INSERT went through the proxies in the first seconds of load")
	}
	var warm []string
	for _, x := range h.compare() {
		if x.err != nil {
			t.Fatalf("harness: %s", x.summary())
		}
		warm = append(warm, fmt.Sprintf("%s=%d", x.mart.target[len(s.db)+1:], x.martKeys))
	}
	h.logf("warm: keys per mart so far: %s", strings.Join(warm, " "))
	return r
}

// startInst starts processor i behind its proxy (again, after it was killed).
func (r *mcRun) startInst(i int) {
	r.procMu.Lock()
	defer r.procMu.Unlock()
	r.s.addrs["processor"] = r.listen[i]
	r.procs[i] = r.s.start("processor", "SHUKEI_PROCESSOR_LISTEN="+r.listen[i], "SHUKEI_CLICKHOUSE_ADDR="+r.h.proxies[i].addr())
}

// sig signals processor i if it runs.
func (r *mcRun) sig(i int, sg syscall.Signal) {
	if i >= 0 && r.procs[i] != nil && r.procs[i].running() {
		_ = r.procs[i].cmd.Process.Signal(sg)
	}
}

// ensureAllUp starts again every processor that has exited.
func (r *mcRun) ensureAllUp() {
	for i := range r.n {
		if !r.procs[i].running() {
			r.h.logf("processor %d had exited (%v); started again", i, r.procs[i].err)
			r.startInst(i)
		}
	}
}

func (r *mcRun) endLoad() {
	if !r.stoppedLoad {
		r.stoppedLoad = true
		close(r.stopLoad)
		<-r.loadDone
	}
}

// members is the processor group's member count and state.
func (r *mcRun) members() (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := r.kc.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{r.group}})
	if err != nil || len(resp.Groups) == 0 {
		return -1, fmt.Sprint(err)
	}
	return len(resp.Groups[0].Members), resp.Groups[0].GroupState
}

// waitGroup waits up to d for the group to be Stable with want members.
func (r *mcRun) waitGroup(want int, d time.Duration) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		if m, st := r.members(); m == want && st == "Stable" {
			return true
		}
		time.Sleep(250 * time.Millisecond)
	}
	return false
}

// fire arms an interruption and waits for it (up to 25 s).
func (r *mcRun) fire(arm *mcArm) (mcFire, bool) {
	h := r.h
	arm.fired = make(chan mcFire, 1)
	h.arm.Store(arm)
	select {
	case f := <-arm.fired:
		return f, true
	case <-time.After(25 * time.Second):
		if h.arm.CompareAndSwap(arm, nil) {
			return mcFire{}, false
		}
		return <-arm.fired, true // it fired just now
	}
}

// killCH SIGKILLs ClickHouse when an insert part of the event store appears and after more
// insert parts of the marts; with the instance that inserted last, also does withInst.
func (r *mcRun) killCH(label string, after, only int, withInst func(int)) (mcFire, bool) {
	return r.killArm(label, &mcArm{after: after, only: only}, withInst)
}

// killArm is killCH with an arm of the caller's (its after, only, cond and who; act and fired
// are set here). It restarts ClickHouse, describes the cut part and observes the marts before
// the processors may reach the server again; the gate stays closed.
func (r *mcRun) killArm(label string, arm *mcArm, withInst func(int)) (mcFire, bool) {
	h := r.h
	pid := h.chPID()
	if pid == 0 {
		h.logf("harness: ClickHouse is not running before %s; starting it", label)
		h.restartCH(0)
		pid = h.chPID()
	}
	var lastAgo time.Duration
	arm.act = func() int {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		inst, ago := h.recentInserter()
		if arm.who != nil {
			inst = arm.who()
		}
		lastAgo = ago
		if withInst != nil {
			withInst(inst)
		}
		return inst
	}
	f, ok := r.fire(arm)
	if !ok {
		h.logf("%s: no insert part of the event store (and %d of the marts after it) within 25 s; not cut", label, arm.after)
		return f, false
	}
	r.afterKill(label, pid, f, fmt.Sprintf("after %d new part(s): %s; the last events INSERT was processor %d's, %s before",
		len(f.parts), strings.Join(f.parts, ", "), f.inst, lastAgo.Round(time.Millisecond)))
	return f, true
}

// afterKill counts a cut of ClickHouse (pid, SIGKILLed; how says at what), closes the gate,
// restarts the server, describes the cut part and observes the marts; the gate stays closed.
func (r *mcRun) afterKill(label string, pid int, f mcFire, how string) {
	h := r.h
	r.cuts++
	h.closeGate()
	h.logf("%s: SIGKILL ClickHouse (pid %d) %s", label, pid, how)
	h.restartCH(pid)
	if r.afterRestart != nil {
		r.afterRestart(label, f)
	}
	h.describePart(label, f)
	if h.observe(label) {
		r.landed++
	}
}

// TestAttackMartsExactAfterCutInserts runs three processor instances over a six-partition raw
// topic fed steadily (straight to Kafka, keyed by tenant, ~500 messages a second) with valid
// events of every category from ten tenants spread over six days, and cuts inserts at the moment
// the event store's part has been written and the marts' parts have not (or only some have),
// watching the server's data directory with inotify: ClickHouse SIGKILLed when a new insert part
// appears in the events table's directory, or after a chosen number of the marts' parts; the
// cut instance SIGKILLed with it, or SIGSTOPped past a rebalance; ClickHouse killed again in the
// middle of the processors' repair; the repairing instance SIGKILLed at its repair insert, or
// SIGSTOPped as it goes out past a rebalance; the same instance cut three times in a row before
// it writes a checkpoint; ClickHouse SIGSTOPped at the part. After each cut, before the
// processors may reach the restarted server (their proxies refuse them), it compares every mart
// with its view over the store to see whether the cut landed. At the end, once every raw offset
// is stored or refused, every mart must equal its view over the whole event store, key by key.
// Brief and results: attack/MARTS-CUT.md.
func TestAttackMartsExactAfterCutInserts(t *testing.T) {
	r := mcSetup(t, mcOpts{})
	h, s, rng, procs, n := r.h, r.s, r.rng, r.procs, r.n
	sig, startInst, ensureAllUp, fire, killCH := r.sig, r.startInst, r.ensureAllUp, r.fire, r.killCH
	members, waitGroup := r.members, r.waitGroup

	// ---- the cuts ----

	// An insert of one instance's tenants writes up to two parts a mart (two months of days),
	// fewer where a mart's purpose excludes its tenants: aim within the first half.
	maxAfter := len(h.marts)

	// 1. ClickHouse killed the instant the event store's part is in place.
	label := "cut 1 (ClickHouse SIGKILL at the event store's part)"
	if _, ok := killCH(label, 0, -1, nil); ok {
		h.openGate()
		time.Sleep(5 * time.Second)
	}
	ensureAllUp()

	// 2. ClickHouse killed between the marts' parts.
	a := 1 + rng.IntN(maxAfter)
	label = fmt.Sprintf("cut 2 (ClickHouse SIGKILL after %d mart part(s))", a)
	if _, ok := killCH(label, a, -1, nil); ok {
		h.openGate()
		time.Sleep(5 * time.Second)
	}
	ensureAllUp()

	// 3. ClickHouse and the cut instance killed together: what the instance knew of the cut
	// dies with it.
	label = "cut 3 (ClickHouse SIGKILL at the event store's part + the inserting processor SIGKILLed)"
	if f, ok := killCH(label, rng.IntN(2), -1, func(i int) { sig(i, syscall.SIGKILL) }); ok {
		h.openGate()
		if f.inst >= 0 {
			<-procs[f.inst].done
			startInst(f.inst)
			h.logf("%s: processor %d started again", label, f.inst)
		}
		time.Sleep(5 * time.Second)
	}
	ensureAllUp()

	// 4. Cut, then ClickHouse killed again when the first repair insert into a mart has put
	// its part in place.
	a = 1 + rng.IntN(maxAfter)
	label = fmt.Sprintf("cut 4 (ClickHouse SIGKILL after %d mart part(s), then again during the repair)", a)
	if _, ok := killCH(label, a, -1, nil); ok {
		h.cutTheRepair(label, func(f mcFire, what string, pid int) {
			r.cuts++
			h.closeGate()
			h.logf("%s: repair seen (%s); SIGKILL ClickHouse at its part %s", label, what, strings.Join(f.parts, ", "))
			h.restartCH(pid)
			if h.observe(label + ", after the repair cut") {
				r.landed++
			}
			h.openGate()
		})
		time.Sleep(5 * time.Second)
	}
	ensureAllUp()

	// 5. ClickHouse killed at the event store's part, the inserting instance SIGSTOPped with it
	// and kept stopped until the group has handed its partitions on; then resumed.
	label = "cut 5 (ClickHouse SIGKILL at the event store's part + the inserting processor SIGSTOPped past a rebalance)"
	if f, ok := killCH(label, rng.IntN(3), -1, func(i int) { sig(i, syscall.SIGSTOP) }); ok {
		at := time.Now()
		h.openGate()
		if f.inst >= 0 {
			if waitGroup(n-1, 60*time.Second) {
				h.logf("%s: group rebalanced to %d members %s after the SIGSTOP", label, n-1, time.Since(at).Round(100*time.Millisecond))
				time.Sleep(5 * time.Second)
			} else {
				m, st := members()
				h.logf("%s: the group did not rebalance without the stopped instance within 60 s (%d members, %s)", label, m, st)
			}
			sig(f.inst, syscall.SIGCONT)
			h.logf("%s: SIGCONT processor %d (stopped %s)", label, f.inst, time.Since(at).Round(100*time.Millisecond))
		}
		time.Sleep(5 * time.Second)
	}
	ensureAllUp()

	// 6. Cut, then the instance that repairs killed at its repair insert's query (not sent).
	a = rng.IntN(maxAfter)
	label = fmt.Sprintf("cut 6 (ClickHouse SIGKILL after %d mart part(s), then the repairing processor SIGKILLed at its repair INSERT)", a)
	if _, ok := killCH(label, a, -1, nil); ok {
		seen := make(chan int, 1)
		h.onQuery.Store(&mcQueryHook{fn: func(inst int, table string) bool {
			if !strings.HasPrefix(table, s.db+"_") || h.onQuery.Swap(nil) == nil {
				return false
			}
			sig(inst, syscall.SIGKILL)
			h.logf("%s: SIGKILL processor %d at its INSERT INTO %s (not forwarded)", label, inst, table)
			seen <- inst
			return true
		}})
		h.openGate()
		select {
		case i := <-seen:
			<-procs[i].done
			startInst(i)
			h.logf("%s: processor %d started again", label, i)
		case <-time.After(12 * time.Second):
			h.onQuery.Store(nil)
			h.logf("%s: no INSERT into a purpose database passed the proxies within 12 s of the restart", label)
		}
		time.Sleep(5 * time.Second)
	}
	ensureAllUp()

	// 7. A processor SIGKILLed the instant its event-store part is in place (ClickHouse runs on).
	// It never left a key newly different in eight runs (the server finishes the block's views
	// when the client dies) and the rebalance after it stalls the group for ~20 s, so it runs
	// only with SHUKEI_TEST_MARTS_CUT_ALL=1 (cut 3 kills the inserting processor together with
	// ClickHouse).
	label = "cut 7 (the inserting processor SIGKILLed at its event-store part)"
	if os.Getenv("SHUKEI_TEST_MARTS_CUT_ALL") == "" {
		h.logf("%s: skipped (SHUKEI_TEST_MARTS_CUT_ALL=1 runs it)", label)
	} else if f, ok := fire(&mcArm{after: 0, only: -1, act: func() int {
		i, _ := h.recentInserter()
		sig(i, syscall.SIGKILL)
		return i
	}}); ok {
		r.cuts++
		h.closeGate()
		h.logf("%s: SIGKILL processor %d at %s", label, f.inst, strings.Join(f.parts, ", "))
		if h.observe(label) {
			r.landed++
		}
		h.openGate()
		if f.inst >= 0 {
			<-procs[f.inst].done
			startInst(f.inst)
			h.logf("%s: processor %d started again", label, f.inst)
		}
		time.Sleep(5 * time.Second)
	} else {
		h.logf("%s: no insert part within 25 s; not cut", label)
	}
	ensureAllUp()

	// 8. ClickHouse SIGSTOPped for 8 s the instant the event store's part is in place.
	label = "cut 8 (ClickHouse SIGSTOP 8 s at the event store's part)"
	pid := h.chPID()
	if f, ok := fire(&mcArm{after: 0, only: -1, act: func() int {
		_ = syscall.Kill(pid, syscall.SIGSTOP)
		i, _ := h.recentInserter()
		return i
	}}); ok {
		r.cuts++
		h.logf("%s: SIGSTOP ClickHouse at %s (processor %d inserting)", label, strings.Join(f.parts, ", "), f.inst)
		time.Sleep(8 * time.Second)
		_ = syscall.Kill(pid, syscall.SIGCONT)
		h.logf("%s: SIGCONT ClickHouse", label)
		time.Sleep(1500 * time.Millisecond)
		h.closeGate()
		if h.observe(label) {
			r.landed++
		}
		h.openGate()
		time.Sleep(4 * time.Second)
	} else {
		h.logf("%s: no insert part within 25 s; not cut", label)
	}
	ensureAllUp()

	// 9. The same instance cut again and again before it writes a checkpoint: ClickHouse killed
	// at an event-store part, restarted, killed again at the same instance's next event-store
	// part, and once more (after some of the marts' parts): each time once the cut before has
	// been repaired (or while it is) and before the checkpoint of the next batch is written.
	label = "cut 9a (ClickHouse SIGKILL at the event store's part)"
	if f, ok := killCH(label, 0, -1, nil); ok {
		h.openGate()
		if f.inst >= 0 {
			label = fmt.Sprintf("cut 9b (ClickHouse SIGKILL at processor %d's next event-store part: a second cut before its checkpoint)", f.inst)
			if _, ok := killCH(label, 0, f.inst, nil); ok {
				h.openGate()
				a = rng.IntN(maxAfter)
				label = fmt.Sprintf("cut 9c (ClickHouse SIGKILL at processor %d's next event-store part again, after %d mart part(s): a third cut before its checkpoint)", f.inst, a)
				if _, ok := killCH(label, a, f.inst, nil); ok {
					h.openGate()
				}
			}
		}
		time.Sleep(5 * time.Second)
	}
	ensureAllUp()

	// 10. The repairing instance SIGSTOPped the moment its first repair insert goes out, kept
	// stopped until the group has handed its partitions on (the new owner repairs what is
	// left), then resumed: it must not repair again what the new owner repaired.
	a = rng.IntN(maxAfter)
	label = fmt.Sprintf("cut 10 (ClickHouse SIGKILL after %d mart part(s), then the repairing processor SIGSTOPped at its first repair INSERT, past a rebalance)", a)
	if _, ok := killCH(label, a, -1, nil); ok {
		seen := make(chan int, 1)
		h.onQuery.Store(&mcQueryHook{fn: func(inst int, table string) bool {
			if !strings.HasPrefix(table, s.db+"_") || h.onQuery.Swap(nil) == nil {
				return false
			}
			sig(inst, syscall.SIGSTOP)
			h.logf("%s: SIGSTOP processor %d as its INSERT INTO %s goes out", label, inst, table)
			seen <- inst
			return false
		}})
		h.openGate()
		select {
		case i := <-seen:
			at := time.Now()
			if waitGroup(n-1, 60*time.Second) {
				h.logf("%s: group rebalanced to %d members %s after the SIGSTOP", label, n-1, time.Since(at).Round(100*time.Millisecond))
				time.Sleep(5 * time.Second)
			} else {
				m, st := members()
				h.logf("%s: the group did not rebalance without the stopped instance within 60 s (%d members, %s)", label, m, st)
			}
			sig(i, syscall.SIGCONT)
			h.logf("%s: SIGCONT processor %d (stopped %s)", label, i, time.Since(at).Round(100*time.Millisecond))
		case <-time.After(12 * time.Second):
			h.onQuery.Store(nil)
			h.logf("%s: no INSERT into a purpose database passed the proxies within 12 s of the restart", label)
		}
		time.Sleep(5 * time.Second)
	}
	ensureAllUp()

	r.finish()
}

// finish stops the load, waits until every raw offset is stored or refused (or nothing moves for
// 45 s) and gives the verdict: every mart equal to its view over the whole event store, key by
// key; no raw offset stored twice. extra lines are logged after the result line.
func (r *mcRun) finish(extra ...string) {
	t, h, s, procs, listen, n, parts, began := r.t, r.h, r.s, r.procs, r.listen, r.n, r.parts, r.began
	landed, cuts, load, endLoad := r.landed, r.cuts, r.load, r.endLoad
	var err error
	time.Sleep(2 * time.Second)
	endLoad()
	load.mu.Lock()
	h.logf("load stopped: written %v, %d failed writes (%s)", load.sent, load.errs, load.lastErr)
	load.mu.Unlock()

	// Drain: until every raw offset is stored or refused (or nothing moves for 45 s).
	var total uint64
	for _, o := range s.endOffsets(s.raw, parts) {
		total += uint64(o)
	}
	var got, last uint64
	moved := time.Now()
	for {
		got, err = h.scalar(fmt.Sprintf(accountedQuery, s.db))
		if err == nil && got >= total {
			break
		}
		if got != last {
			last, moved = got, time.Now()
		}
		if time.Since(moved) > 45*time.Second {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	h.logf("drain: %d of %d raw offsets stored or refused", got, total)
	time.Sleep(5 * time.Second) // a late repair or a late zombie write shows now

	// ---- the verdict ----
	final := h.compare()
	h.dump("final", final)
	var later []mcDiff
	for _, d := range final {
		if d.bad() {
			time.Sleep(10 * time.Second)
			later = h.compare()
			h.dump("final-10s-later", later)
			break
		}
	}
	var rows []string
	for _, d := range final {
		rows = append(rows, d.summary())
	}
	dupOffsets, _ := h.scalar(fmt.Sprintf("SELECT count() FROM (SELECT kafka_partition, kafka_offset, count() AS c FROM %s.events GROUP BY kafka_partition, kafka_offset HAVING c > 1)", s.db))
	stored, _ := h.scalar(fmt.Sprintf("SELECT count() FROM %s.events", s.db))

	// What the processors say about the marts on /metrics (every line naming a mart).
	client := &http.Client{Timeout: 3 * time.Second}
	for i := range n {
		if !procs[i].running() {
			continue
		}
		resp, err := client.Get("http://" + listen[i] + "/metrics")
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var ls []string
		for _, l := range strings.Split(string(body), "\n") {
			if strings.Contains(l, "mart") && !strings.HasPrefix(l, "#") {
				ls = append(ls, l)
			}
		}
		if len(ls) > 0 {
			h.logf("processor %d /metrics, lines naming marts: %s", i, strings.Join(ls, "; "))
		}
	}
	for _, p := range procs {
		s.stop(p)
	}
	// What the processors logged about the marts (every instance, restarted ones too).
	repairedLines, martLines := 0, []string{}
	s.mu.Lock()
	for _, o := range s.outputs {
		if !strings.HasPrefix(o.name, "processor") {
			continue
		}
		for _, l := range strings.Split(o.out.String(), "\n") {
			if !strings.Contains(l, "mart") || strings.Contains(l, "level=DEBUG") {
				continue
			}
			if strings.Contains(l, "repaired a purpose mart after a batch cut short") {
				repairedLines++
				continue
			}
			if len(martLines) < 30 {
				martLines = append(martLines, mcShow(l))
			}
		}
	}
	s.mu.Unlock()
	h.logf("the processors logged %d mart repairs; their other lines naming marts (at most 30):\n    %s", repairedLines, strings.Join(martLines, "\n    "))

	t.Logf("run of %s; raw topic: %d messages; %d rows in the event store; INSERTs through the proxies: %d (%d into the event store, which gained %d insert parts)",
		time.Since(began).Round(time.Second), total, stored, h.insertsSeen.Load(), h.eventsInserts.Load(), h.eventsParts.Load())
	h.logMu.Lock()
	t.Logf("timeline:\n  %s", strings.Join(h.timeline, "\n  "))
	h.logMu.Unlock()
	t.Logf("marts at the end:\n  %s", strings.Join(rows, "\n  "))
	if later != nil {
		var again []string
		for _, d := range later {
			again = append(again, d.summary())
		}
		t.Logf("the same comparison 10 s later (diagnostic; the verdict is the one above):\n  %s", strings.Join(again, "\n  "))
	}
	t.Logf("RESULT cuts=%d landed-in-window=%d (a mart differed from its view over the store before the processors resumed) accounted=%d/%d duplicated-offsets=%d",
		cuts, landed, got, total, dupOffsets)
	if landed == 0 {
		t.Logf("WEAK RUN: no cut left a mart short before the processors resumed; this run proves little about promise 20")
	}
	for _, l := range extra {
		t.Log(l)
	}

	title := "promise 20: once every message is stored or refused, every purpose mart holds exactly what its materialised view makes of the event store"
	if got < total {
		t.Errorf("%s: the processor stored or refused only %d of %d raw offsets (nothing moved for 45 s), so the promise's condition was never reached", title, got, total)
	}
	if dupOffsets > 0 {
		t.Errorf("promise 3 (sanity): %d raw offsets are stored more than once in %s.events", dupOffsets, s.db)
	}
	for _, d := range final {
		if !d.bad() {
			continue
		}
		if d.err != nil {
			t.Errorf("%s: %s", title, d.summary())
			continue
		}
		var lines []string
		keys := make([]string, 0, len(d.all))
		for k := range d.all {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			seen := h.firstSeen[d.mart.target+"\x00"+k]
			if seen == "" {
				seen = "no observation saw it"
			} else {
				seen = "first seen differing at " + seen
			}
			lines = append(lines, d.all[k]+" ["+seen+"]")
		}
		reportList(t, fmt.Sprintf("%s: %s (view %s)", title, d.summary(), d.mart.view), lines)
	}
	if t.Failed() {
		for i, p := range procs {
			t.Logf("processor %d, last lines:\n%s", i, s.redact(tail(p.out, 25)))
		}
	}
}

// discoverMarts reads every materialised view over the event store from system.tables, the
// table each fills, its engine and columns.
func (h *mcHarness) discoverMarts() {
	t, db := h.t, h.db
	ctx := context.Background()
	rows, err := h.s.conn.Query(ctx, "SELECT database, name, create_table_query FROM system.tables WHERE engine = 'MaterializedView' AND (database = ? OR startsWith(database, ?)) ORDER BY database, name", db, db+"_")
	if err != nil {
		t.Fatalf("harness: list the materialised views: %v", err)
	}
	type mv struct{ db, name, q string }
	var mvs []mv
	for rows.Next() {
		var v mv
		if err := rows.Scan(&v.db, &v.name, &v.q); err != nil {
			t.Fatal(err)
		}
		mvs = append(mvs, v)
	}
	rows.Close()
	fromEvents := regexp.MustCompile(`(?i)\bFROM\s+` + "`?" + regexp.QuoteMeta(db) + "`?" + `\.` + "`?events`?" + `\b`)
	for _, v := range mvs {
		m := &mcMart{view: v.db + "." + v.name}
		to := mcViewTo.FindStringSubmatch(v.q)
		i := strings.Index(v.q, " AS SELECT ")
		if to == nil || i < 0 {
			t.Errorf("harness: cannot read the view %s (no TO table or no AS SELECT): %s", m.view, mcShow(v.q))
			continue
		}
		m.sel = strings.TrimSpace(v.q[i+4:])
		if !fromEvents.MatchString(m.sel) {
			h.logf("view %s does not read %s.events; not a mart of the event store: %s", m.view, db, mcShow(m.sel))
			continue
		}
		m.target = mcUnquote(to[1])
		tdb, tname, ok := strings.Cut(m.target, ".")
		if !ok {
			tdb, tname, m.target = v.db, m.target, v.db+"."+m.target
		}
		if err := h.s.conn.QueryRow(ctx, "SELECT engine FROM system.tables WHERE database = ? AND name = ?", tdb, tname).Scan(&m.engine); err != nil {
			t.Fatalf("harness: the engine of %s: %v", m.target, err)
		}
		m.dir = filepath.Join(h.dataDir, tdb, tname)
		if st, err := os.Stat(m.dir); err != nil || !st.IsDir() {
			t.Fatalf("harness: the data directory of %s (%s): %v", m.target, m.dir, err)
		}
		produced := map[string]bool{}
		r, err := h.s.conn.Query(ctx, "SELECT name FROM system.columns WHERE database = ? AND table = ?", v.db, v.name)
		if err != nil {
			t.Fatal(err)
		}
		for r.Next() {
			var c string
			_ = r.Scan(&c)
			produced[c] = true
		}
		r.Close()
		r, err = h.s.conn.Query(ctx, "SELECT name, type, is_in_sorting_key FROM system.columns WHERE database = ? AND table = ?", tdb, tname)
		if err != nil {
			t.Fatal(err)
		}
		for r.Next() {
			var c, ty string
			var key uint8
			if err := r.Scan(&c, &ty, &key); err != nil {
				t.Fatal(err)
			}
			if !produced[c] {
				continue // a default the view does not fill: the same on both sides
			}
			if merge, ok := mcMergeOf(c, ty); ok {
				m.aggs = append(m.aggs, mcAgg{col: c, merge: merge})
				continue
			}
			m.cols = append(m.cols, quoteIdent(c))
			if key == 1 {
				m.keys = append(m.keys, quoteIdent(c))
			}
		}
		r.Close()
		switch {
		case strings.Contains(m.engine, "AggregatingMergeTree"):
			if len(m.aggs) == 0 {
				t.Errorf("harness: %s is %s without AggregateFunction columns", m.target, m.engine)
				continue
			}
		case strings.HasSuffix(m.engine, "MergeTree") && !strings.Contains(m.engine, "Replacing") && !strings.Contains(m.engine, "Summing") && !strings.Contains(m.engine, "Collapsing"):
			if len(m.aggs) > 0 {
				t.Errorf("harness: %s is a plain %s with AggregateFunction columns; not compared", m.target, m.engine)
				continue
			}
		default:
			t.Errorf("harness: %s has engine %s, which this test cannot compare with its view; not compared", m.target, m.engine)
			continue
		}
		h.marts = append(h.marts, m)
		h.logf("mart %s (%s) from %s: %s", m.target, m.engine, m.view, func() string {
			if len(m.aggs) > 0 {
				var ms []string
				for _, a := range m.aggs {
					ms = append(ms, a.merge)
				}
				return "key (" + strings.Join(m.keys, ", ") + "), compared " + strings.Join(ms, ", ")
			}
			return "whole rows of " + strconv.Itoa(len(m.cols)) + " columns"
		}())
	}
	if len(h.marts) == 0 {
		t.Fatalf("harness: no materialised view over %s.events found", db)
	}
}

// cutTheRepair arms, for the first INSERT into a purpose database (a repair) that passes a
// proxy, a SIGKILL of ClickHouse the instant that insert's part is in place, and opens the gate;
// when it fires, cut gets the fire, the INSERT seen and the pid killed. It logs, and cuts
// nothing, when no such INSERT passes within 12 s or none of its parts appears within 10 s.
func (h *mcHarness) cutTheRepair(label string, cut func(f mcFire, what string, pid int)) {
	repairArm := &mcArm{only: -1, fired: make(chan mcFire, 1)}
	seen := make(chan string, 1)
	var pid int
	h.onQuery.Store(&mcQueryHook{fn: func(inst int, table string) bool {
		if !strings.HasPrefix(table, h.db+"_") {
			return false
		}
		if h.onQuery.Swap(nil) != nil {
			pid = h.chPID()
			repairArm.martTable = table
			repairArm.act = func() int { _ = syscall.Kill(pid, syscall.SIGKILL); return inst }
			h.arm.Store(repairArm)
			seen <- fmt.Sprintf("processor %d's repair INSERT INTO %s", inst, table)
		}
		return false
	}})
	h.openGate()
	select {
	case what := <-seen:
		select {
		case f := <-repairArm.fired:
			cut(f, what, pid)
		case <-time.After(10 * time.Second):
			h.arm.CompareAndSwap(repairArm, nil)
			h.logf("%s: repair insert seen (%s) but no part of it appeared within 10 s", label, what)
		}
	case <-time.After(12 * time.Second):
		h.onQuery.Store(nil)
		h.logf("%s: no INSERT into a purpose database passed the proxies within 12 s of the restart", label)
	}
}
