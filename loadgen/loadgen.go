// Package loadgen generates realistic synthetic SaaS usage for Shukei's demo, benchmarks and
// fault tests: tenants with a contract mix (≈ 60% contracted, 30% trial, 10% beta), editions,
// heavy-tailed user counts (size bands), feature popularity that is Zipf-like and ranked
// differently by edition, OS and device mixes, a daily cycle (Japanese business hours) and a
// weekly one (quiet weekends), settings with customisation counts, and a configurable share of
// bad events: customer content where usage belongs (e-mail addresses, personal names, file
// names), malformed JSON and unknown tenants. Everything is decided by one seeded generator,
// so the same Config always yields the same events.
package loadgen

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/loadgen/population"
	"github.com/shukei/shukei/registry"
)

// Config says what to generate.
type Config struct {
	Tenants  int       // tenants (default 300)
	Seed     uint64    // same seed, same events
	Events   int       // events in all, bad ones included
	Days     int       // the events fall in the Days before End (default 14)
	End      time.Time // the events fall before End (default: now)
	BadShare float64   // share of bad events, 0..0.5
	Prefix   string    // tenant id prefix (default "lg-")
}

// Bad kinds, with the reason the pipeline gives them.
const (
	BadEmail        = string(event.ReasonEmail)
	BadPersonalName = string(event.ReasonPersonalName)
	BadFileName     = string(event.ReasonFileName)
	BadMalformed    = string(event.ReasonMalformedJSON)
	BadUnknown      = string(event.ReasonUnknownTenant)
)

var badKinds = []string{BadEmail, BadPersonalName, BadFileName, BadMalformed, BadUnknown}

// Message is one event to send, keyed by tenant.
type Message struct {
	Tenant string
	Body   []byte // one event as JSON (or, for malformed_json, not)
	Bad    string // "" for a good event, else what the pipeline will say of it
	At     time.Time
}

// Generator yields the messages of a Config, in no particular time order.
type Generator struct {
	cfg      Config
	pop      *population.Population
	r        *rand.Rand
	tenantW  []float64 // cumulative weights: busy tenants send more
	slots    []slot    // the hours of the period, each with its number of events
	slot     int       // the hour being generated
	left     int       // events left in it
	features map[string][]string
	zipf     *rand.Zipf
	start    time.Time
	emitted  int
}

// New returns the generator of cfg with defaults filled in.
func New(cfg Config) (*Generator, error) {
	if cfg.Tenants <= 0 {
		cfg.Tenants = 300
	}
	if cfg.Days <= 0 {
		cfg.Days = 14
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "lg-"
	}
	if cfg.End.IsZero() {
		cfg.End = time.Now().UTC().Truncate(time.Second)
	}
	if cfg.Events < 0 || cfg.BadShare < 0 || cfg.BadShare > 0.5 {
		return nil, fmt.Errorf("loadgen: events must not be negative and the bad share must be in [0, 0.5]")
	}
	g := &Generator{cfg: cfg, pop: population.New(cfg.Tenants, cfg.Seed, cfg.Prefix), r: rand.New(rand.NewPCG(cfg.Seed, 0x4c4f4144)),
		start: cfg.End.Add(-time.Duration(cfg.Days) * 24 * time.Hour), features: map[string][]string{}}
	total := 0.0
	for _, t := range g.pop.Tenants {
		total += math.Sqrt(float64(t.Users)) * float64(t.Users) / math.Sqrt(float64(t.Users)+25) // busy users in big tenants
		g.tenantW = append(g.tenantW, total)
	}
	// The events go out in time order, hour by hour (as collectors would send them; within an
	// hour they are unordered), each hour's share following a weekly cycle (quiet weekends) and
	// a daily one (Japanese business hours, 9:00-18:00 JST = 0:00-9:00 UTC, lunch dip).
	var weights []float64
	total = 0
	for h := g.start.Truncate(time.Hour); h.Before(cfg.End); h = h.Add(time.Hour) {
		from, to := later(h, g.start), earlier(h.Add(time.Hour), cfg.End)
		w := hourWeight(h) * to.Sub(from).Hours()
		if wd := h.Weekday(); wd == time.Saturday || wd == time.Sunday {
			w *= 0.3
		}
		g.slots = append(g.slots, slot{from: from, span: to.Sub(from)})
		weights = append(weights, w)
		total += w
	}
	cum, given := 0.0, 0
	for i, w := range weights {
		cum += w
		n := int(math.Round(cum / total * float64(cfg.Events)))
		g.slots[i].n = n - given
		given = n
	}
	if len(g.slots) > 0 {
		g.left = g.slots[0].n
	}
	// Each edition ranks the features differently: a seeded shuffle of the catalogue, with the
	// first few kept near the top (core features are popular everywhere).
	for i, ed := range []string{"standard", "professional", "enterprise"} {
		f := slices.Clone(population.Features)
		er := rand.New(rand.NewPCG(cfg.Seed, uint64(i+1)))
		er.Shuffle(len(f)-3, func(a, b int) { f[a+3], f[b+3] = f[b+3], f[a+3] })
		g.features[ed] = f
	}
	g.zipf = rand.NewZipf(g.r, 1.15, 1, uint64(len(population.Features)-1))
	return g, nil
}

// Population returns the tenants and their attributes.
func (g *Generator) Population() *population.Population { return g.pop }

// Tenants returns the registry entries of the tenants.
func (g *Generator) Tenants() []registry.Tenant { return g.pop.Registry() }

// Remaining is how many messages Next will still yield.
func (g *Generator) Remaining() int { return g.cfg.Events - g.emitted }

type slot struct {
	from time.Time
	span time.Duration
	n    int
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// hourWeight is the share of activity in an hour (UTC) of a Japanese working day.
func hourWeight(h time.Time) float64 {
	switch jst := (h.Hour() + 9) % 24; {
	case jst >= 9 && jst < 12, jst >= 13 && jst < 18:
		return 1
	case jst == 12:
		return 0.5
	case jst >= 18 && jst < 22, jst >= 7 && jst < 9:
		return 0.25
	}
	return 0.05
}

func pick(r *rand.Rand, cum []float64) int {
	i, _ := slices.BinarySearch(cum, r.Float64()*cum[len(cum)-1])
	return min(i, len(cum)-1)
}

var (
	apps       = []string{"records", "spaces", "mail", "calendar", "workflow", "reports", "forms", "chat"}
	actions    = []event.Action{event.ActionOpen, event.ActionOpen, event.ActionView, event.ActionView, event.ActionView, event.ActionCreate, event.ActionUpdate, event.ActionSearch, event.ActionExport, event.ActionShare}
	operations = []string{"record.save", "record.bulk_update", "file.attach", "view.export", "workflow.approve", "form.submit"}
	results    = []string{"ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "timeout", "permission_denied"}
	leakNames  = []string{"山田太郎", "佐藤花子", "鈴木 一郎", "Hanako Sato"}
	leakFiles  = []string{"見積書_2026.xlsx", "議事録-0412.docx", "contract_final.pdf", "給与明細.csv"}
)

// Next returns the next message, or false when Config.Events have been yielded.
func (g *Generator) Next() (Message, bool) {
	if g.emitted >= g.cfg.Events {
		return Message{}, false
	}
	g.emitted++
	r := g.r
	t := &g.pop.Tenants[pick(r, g.tenantW)]
	for g.left == 0 {
		g.slot++
		g.left = g.slots[g.slot].n
	}
	g.left--
	sl := g.slots[g.slot]
	at := sl.from.Add(time.Duration(r.Int64N(int64(sl.span)))).Truncate(time.Second)
	// Heavy users act more: a user index skewed towards 0.
	u := int(float64(t.Users) * r.Float64() * r.Float64())
	user := fmt.Sprintf("u%05d", u)
	os, dev := event.OSWindows, event.DeviceDesktop
	switch x := (u*31 + len(t.ID)) % 20; {
	case x < 4:
		os = event.OSMacOS
	case x < 7:
		os, dev = event.OSIOS, event.DeviceMobile
	case x < 9:
		os, dev = event.OSAndroid, event.DeviceMobile
	case x < 10:
		os, dev = event.OSIOS, event.DeviceTablet
	}
	env := event.Envelope{EventID: uuidFrom(r), TenantID: t.ID, OccurredAt: at, Source: "loadgen", User: user,
		Client: event.Client{OS: os, OSVersion: fmt.Sprint(11 + u%6), DeviceKind: dev}}
	ev := event.Event{Envelope: env}
	switch x := r.IntN(100); {
	case x < 55:
		f := g.features[t.Edition]
		if f == nil {
			f = population.Features
		}
		ev.Schema, ev.Data = event.SchemaFeatureUseV1, &event.FeatureUse{FeatureID: f[g.zipf.Uint64()], Count: int64(1 + r.IntN(5)), RecordsRegistered: int64(r.IntN(3))}
	case x < 80:
		ev.Schema, ev.Data = event.SchemaAppAccessV1, &event.AppAccess{AppID: apps[r.IntN(len(apps))], Action: actions[r.IntN(len(actions))]}
	case x < 88:
		kind, browser := event.ClientBrowser, event.BrowserChrome
		if dev != event.DeviceDesktop {
			kind, browser = event.ClientMobileApp, event.BrowserNone
		} else if os == event.OSMacOS {
			browser = event.BrowserSafari
		}
		ev.Schema, ev.Data = event.SchemaClientEnvV1, &event.ClientEnv{ClientKind: kind, Browser: browser}
	case x < 95:
		ev.Schema, ev.Data = event.SchemaOperationV1, &event.Operation{OperationID: operations[r.IntN(len(operations))], AppID: apps[r.IntN(len(apps))],
			// A request id always has a hex letter: a run of decimal digits would read as a phone number.
			ResultCode: results[r.IntN(len(results))], RequestID: fmt.Sprintf("%c%015x%04x", "abcdef"[r.IntN(6)], r.Uint64()>>4, r.IntN(1<<16))}
	case x < 98:
		cust := r.Float64() < 0.4
		n := int64(0)
		if cust {
			n = int64(1 + r.IntN(8))
		}
		ev.User = "admin"
		ev.Schema, ev.Data = event.SchemaSettingsV1, &event.Settings{SettingKey: population.Settings[r.IntN(len(population.Settings))],
			Value: event.BoolValue(cust), CustomizationPresent: cust, CustomizationCount: n}
	default:
		ev.User, ev.Client = "", event.Client{}
		ev.Schema, ev.Data = event.SchemaTenantProfileV1, &event.TenantProfile{UserCount: int64(t.Users), OrganizationCount: int64(1 + t.Users/40)}
	}
	m := Message{Tenant: t.ID, At: at}
	if r.Float64() < g.cfg.BadShare {
		m.Bad = badKinds[r.IntN(len(badKinds))]
		switch m.Bad {
		case BadEmail:
			ev.User = fmt.Sprintf("user%d@example.co.jp", u)
		case BadPersonalName:
			ev.User = leakNames[r.IntN(len(leakNames))]
		case BadFileName:
			ev.Schema, ev.Data = event.SchemaFeatureUseV1, &event.FeatureUse{FeatureID: leakFiles[r.IntN(len(leakFiles))], Count: 1}
		case BadUnknown:
			ev.TenantID = fmt.Sprintf("ghost-%04d", r.IntN(10000))
			m.Tenant = ev.TenantID
		}
	}
	b, err := json.Marshal(ev)
	if err != nil {
		panic(err) // event.Event always marshals; a failure is a bug in this generator
	}
	if m.Bad == BadMalformed {
		b = b[:len(b)/2]
	}
	m.Body = b
	return m, true
}

func uuidFrom(r *rand.Rand) string {
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
