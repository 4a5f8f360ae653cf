// Package population is Shukei's synthetic customer base: tenants with contract statuses,
// editions and sizes, and a day of their usage (client environments, app access, feature use,
// settings), drawn from a seed so that every run of the demo, the load generator and the
// aggregator's utility report sees the same data. Feature and setting popularity follow a
// Zipf-like curve, so releases have both crowded cells and a long tail of rare ones.
package population

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/registry"
)

// Features is the product's feature catalogue, most popular first.
var Features = []string{
	"app.record.create", "app.record.view", "app.record.edit", "app.record.search", "app.list.filter",
	"app.comment.post", "space.post.create", "space.post.reaction", "app.export.csv", "app.import.csv",
	"app.process.approve", "app.chart.view", "app.notify.rule", "app.form.edit", "app.lookup.use",
	"app.calc.field", "app.attach.upload", "people.mention", "space.thread.create", "app.print",
	"app.api.token", "app.webhook.add", "app.plugin.use", "app.js.customize", "app.acl.edit",
	"app.relation.table", "app.group.field", "mobile.push.open", "app.schedule.view", "app.template.use",
	"app.record.bulk", "app.report.pivot", "app.graph.share", "app.audit.view", "app.sso.login",
	"app.ip.restrict", "app.guest.invite", "app.backup.run", "app.language.switch", "app.theme.change",
}

// Settings is the product's settings catalogue, most reported first.
var Settings = []string{
	"locale", "timezone", "notification.email", "notification.desktop", "two_factor",
	"session.timeout", "theme", "start_page", "date_format", "ip_restriction",
	"guest_space", "api.rate_limit", "audit_log.retention", "password.policy", "mobile.passcode",
}

// Tenant is a synthetic customer.
type Tenant struct {
	registry.Tenant
	Users    int
	features []int // indices into Features
	settings []int
	os       []event.OS
	device   []event.DeviceKind
}

// Population is a seeded customer base.
type Population struct {
	Tenants []Tenant
	seed    uint64
}

// New draws n tenants from seed. Tenant ids are prefix + a number.
func New(n int, seed uint64, prefix string) *Population {
	r := rand.New(rand.NewPCG(seed, 0x5348554b4549))
	p := &Population{seed: seed}
	for i := range n {
		t := Tenant{Tenant: registry.Tenant{ID: fmt.Sprintf("%s%04d", prefix, i)}}
		switch x := r.Float64(); {
		case x < 0.6:
			t.Status = registry.StatusContracted
		case x < 0.9:
			t.Status = registry.StatusTrial
		default:
			t.Status = registry.StatusBeta
		}
		switch x := r.Float64(); {
		case x < 0.5:
			t.Edition = "standard"
		case x < 0.8:
			t.Edition = "professional"
		default:
			t.Edition = "enterprise"
		}
		// Users: log-normal, median ~25, from 2 to 2,000.
		t.Users = int(math.Min(2000, math.Max(2, math.Exp(math.Log(25)+1.1*r.NormFloat64()))))
		switch {
		case t.Users < 20:
			t.SizeBand = "s"
		case t.Users < 200:
			t.SizeBand = "m"
		default:
			t.SizeBand = "l"
		}
		for f := range Features {
			// Adoption falls with rank: 0.95 for the first feature, ~0.1 for the last.
			if r.Float64() < 0.95/(1+float64(f)/4.5) {
				t.features = append(t.features, f)
			}
		}
		for s := range Settings {
			if r.Float64() < 0.9/(1+float64(s)/3) {
				t.settings = append(t.settings, s)
			}
		}
		// Platform mix of the tenant's users.
		t.os = []event.OS{event.OSWindows, event.OSWindows, event.OSMacOS, event.OSIOS, event.OSAndroid}
		if r.Float64() < 0.3 {
			t.os = []event.OS{event.OSMacOS, event.OSMacOS, event.OSIOS, event.OSWindows}
		}
		t.device = []event.DeviceKind{event.DeviceDesktop, event.DeviceDesktop, event.DeviceMobile, event.DeviceTablet}
		p.Tenants = append(p.Tenants, t)
	}
	return p
}

// Registry returns the tenants as registry entries.
func (p *Population) Registry() []registry.Tenant {
	out := make([]registry.Tenant, len(p.Tenants))
	for i, t := range p.Tenants {
		out[i] = t.Tenant
	}
	return out
}

// Day returns the events of one day (starting at day, UTC midnight), in time order, each with
// its user (an opaque collector id). Roughly a third of a tenant's users are active on a day.
func (p *Population) Day(day time.Time) []event.Event {
	r := rand.New(rand.NewPCG(p.seed^uint64(day.Unix()), 0x444159))
	var out []event.Event
	for _, t := range p.Tenants {
		active := max(1, int(float64(t.Users)*(0.2+0.3*r.Float64())))
		for u := range active {
			user := fmt.Sprintf("u%05d", (u*7919)%t.Users)
			os := t.os[r.IntN(len(t.os))]
			dev := event.DeviceDesktop
			if os == event.OSIOS || os == event.OSAndroid {
				dev = t.device[2+r.IntN(2)]
			}
			client := event.Client{OS: os, DeviceKind: dev}
			at := func() time.Time { return day.Add(time.Duration(r.Int64N(int64(24 * time.Hour)))) }
			env := func(s event.Schema) event.Envelope {
				return event.Envelope{EventID: uuidFrom(r), TenantID: t.ID, OccurredAt: at(), Schema: s, Source: "population", User: user, Client: client}
			}
			kind := event.ClientBrowser
			if dev != event.DeviceDesktop {
				kind = event.ClientMobileApp
			}
			out = append(out, event.Event{Envelope: env(event.SchemaClientEnvV1), Data: &event.ClientEnv{ClientKind: kind, Browser: browser(kind, os)}})
			for range 1 + r.IntN(4) {
				out = append(out, event.Event{Envelope: env(event.SchemaAppAccessV1), Data: &event.AppAccess{
					AppID: fmt.Sprintf("app-%d", 1+r.IntN(12)), Action: actions[r.IntN(len(actions))],
				}})
			}
			for _, f := range t.features {
				if r.Float64() < 0.5 {
					out = append(out, event.Event{Envelope: env(event.SchemaFeatureUseV1), Data: &event.FeatureUse{
						FeatureID: Features[f], Count: int64(1 + r.IntN(5)), RecordsRegistered: int64(r.IntN(3)),
					}})
				}
			}
		}
		for _, s := range t.settings {
			if r.Float64() < 0.5 {
				ev := event.Event{Envelope: event.Envelope{
					EventID: uuidFrom(r), TenantID: t.ID, OccurredAt: day.Add(time.Duration(r.Int64N(int64(24 * time.Hour)))),
					Schema: event.SchemaSettingsV1, Source: "population", User: "admin", Client: event.Client{OS: event.OSWindows, DeviceKind: event.DeviceDesktop},
				}}
				cust := r.Float64() < 0.4
				n := int64(0)
				if cust {
					n = int64(1 + r.IntN(5))
				}
				ev.Data = &event.Settings{SettingKey: Settings[s], Value: event.SettingValue{Kind: event.ValueBool, Bool: cust}, CustomizationPresent: cust, CustomizationCount: n}
				out = append(out, ev)
			}
		}
	}
	sortByTime(out)
	return out
}

var actions = []event.Action{event.ActionOpen, event.ActionOpen, event.ActionView, event.ActionView, event.ActionView, event.ActionCreate, event.ActionUpdate, event.ActionSearch, event.ActionExport, event.ActionShare}

func browser(k event.ClientKind, os event.OS) event.Browser {
	if k != event.ClientBrowser {
		return event.BrowserNone
	}
	if os == event.OSMacOS {
		return event.BrowserSafari
	}
	return event.BrowserChrome
}

func uuidFrom(r *rand.Rand) string {
	var b [16]byte
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func sortByTime(evs []event.Event) {
	slices.SortStableFunc(evs, func(a, b event.Event) int { return a.OccurredAt.Compare(b.OccurredAt) })
}

// FeatureIDs returns the features the tenant uses, most popular first.
func (t *Tenant) FeatureIDs() []string {
	out := make([]string, len(t.features))
	for i, f := range t.features {
		out[i] = Features[f]
	}
	return out
}
