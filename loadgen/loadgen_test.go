package loadgen

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/pipeline/guard"
	"github.com/shukei/shukei/registry"
)

var end = time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC) // a Monday: days 11-16 .. 11-29

func all(t *testing.T, cfg Config) []Message {
	t.Helper()
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out []Message
	for {
		m, ok := g.Next()
		if !ok {
			return out
		}
		out = append(out, m)
	}
}

func TestDeterministicUnderSeed(t *testing.T) {
	cfg := Config{Tenants: 50, Seed: 7, Events: 5000, End: end, BadShare: 0.02}
	a, b := all(t, cfg), all(t, cfg)
	if len(a) != 5000 || len(b) != 5000 {
		t.Fatalf("%d and %d messages, want 5000", len(a), len(b))
	}
	for i := range a {
		if !bytes.Equal(a[i].Body, b[i].Body) || a[i].Bad != b[i].Bad {
			t.Fatalf("message %d differs between two runs with the same seed", i)
		}
	}
	cfg.Seed = 8
	c := all(t, cfg)
	same := 0
	for i := range a {
		if bytes.Equal(a[i].Body, c[i].Body) {
			same++
		}
	}
	if same > 0 {
		t.Errorf("%d messages equal under another seed", same)
	}
}

// Every good message passes the pipeline's decode, validation and input-data guard; every bad
// one is refused with the reason it promises (unknown tenants pass the guard and are refused
// by the registry: their tenant is none of the population's).
func TestEveryMessageGetsItsFate(t *testing.T) {
	const n = 200000
	msgs := all(t, Config{Tenants: 300, Seed: 1, Events: n, End: end, BadShare: 0.05})
	lim := event.Limits{MaxAge: 30 * 24 * time.Hour, MaxSkew: time.Hour}
	known := map[string]bool{}
	g, _ := New(Config{Tenants: 300, Seed: 1, End: end})
	for _, tn := range g.Tenants() {
		known[tn.ID] = true
	}
	bad := map[string]int{}
	for i, m := range msgs {
		_, rej := guard.Inspect(m.Body, end, lim)
		switch {
		case m.Bad == "" && rej != nil:
			t.Fatalf("good message %d refused: %v\n%s", i, rej, m.Body)
		case m.Bad == "" && !known[m.Tenant]:
			t.Fatalf("good message %d of unknown tenant %s", i, m.Tenant)
		case m.Bad == BadUnknown && (rej != nil || known[m.Tenant]):
			t.Fatalf("unknown-tenant message %d: %v, known %v", i, rej, known[m.Tenant])
		case m.Bad == BadMalformed && rej != nil && strings.HasPrefix(string(rej.Reason), "input_data."):
			// An unparseable payload is scanned raw, and anything in it that looks like content
			// (an id's digits can look like a phone number) makes it suspected input data.
		case m.Bad != "" && m.Bad != BadUnknown && (rej == nil || string(rej.Reason) != m.Bad):
			t.Fatalf("bad message %d (%s) got %v\n%s", i, m.Bad, rej, m.Body)
		}
		if m.At.Before(end.AddDate(0, 0, -14)) || !m.At.Before(end) {
			t.Fatalf("message %d at %s, outside the 14 days", i, m.At)
		}
		// In time order hour by hour, as collectors send: a window's events arrive before
		// the next hours'.
		if i > 0 && m.At.Truncate(time.Hour).Before(msgs[i-1].At.Truncate(time.Hour)) {
			t.Fatalf("message %d at %s comes after one at %s", i, m.At, msgs[i-1].At)
		}
		bad[m.Bad]++
	}
	// 5% bad ± 5 standard deviations of a binomial count.
	nb := n - bad[""]
	if nb < 10000-5*97 || nb > 10000+5*97 {
		t.Errorf("%d bad messages of %d, want about 10000", nb, n)
	}
	for _, k := range badKinds {
		if bad[k] < 1500 {
			t.Errorf("only %d of kind %s", bad[k], k)
		}
	}
	if !strings.Contains(string(msgs[0].Body), `"source":"loadgen"`) {
		t.Errorf("body %s", msgs[0].Body)
	}
}

// The shape of the load: contract mix, quiet weekends, business hours, Zipf-like features that
// differ by edition.
func TestRealisticShape(t *testing.T) {
	g, err := New(Config{Tenants: 300, Seed: 3, Events: 60000, End: end})
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]int{}
	edition := map[string]string{}
	for _, tn := range g.Tenants() {
		status[tn.Status]++
		edition[tn.ID] = tn.Edition
	}
	if status[registry.StatusContracted] < 150 || status[registry.StatusTrial] < 60 || status[registry.StatusBeta] < 15 {
		t.Errorf("contract mix %v, want about 60/30/10 %% of 300", status)
	}
	var weekend, weekday, business, night int
	features := map[string]map[string]int{}
	for {
		m, ok := g.Next()
		if !ok {
			break
		}
		if wd := m.At.Weekday(); wd == time.Saturday || wd == time.Sunday {
			weekend++
		} else {
			weekday++
		}
		if h := (m.At.Hour() + 9) % 24; h >= 9 && h < 18 {
			business++
		} else if h < 6 {
			night++
		}
		var ev struct {
			Schema string `json:"schema"`
			Data   struct {
				FeatureID string `json:"feature_id"`
			} `json:"data"`
		}
		if err := jsonUnmarshal(m.Body, &ev); err == nil && ev.Schema == "feature_use/v1" {
			ed := edition[m.Tenant]
			if features[ed] == nil {
				features[ed] = map[string]int{}
			}
			features[ed][ev.Data.FeatureID]++
		}
	}
	// 4 weekend days of 14 at 0.3 weight: about 11% of events.
	if share := float64(weekend) / float64(weekend+weekday); share < 0.08 || share > 0.15 {
		t.Errorf("weekend share %.3f, want about 0.11", share)
	}
	if business < 10*night {
		t.Errorf("business hours %d vs night %d: no daily cycle", business, night)
	}
	for ed, fs := range features {
		counts := make([]int, 0, len(fs))
		for _, c := range fs {
			counts = append(counts, c)
		}
		sortDesc(counts)
		if len(counts) < 10 || counts[0] < 4*counts[9] {
			t.Errorf("%s: feature counts %v are not Zipf-like", ed, counts[:min(10, len(counts))])
		}
	}
	if top(features["standard"], 8) == top(features["enterprise"], 8) {
		t.Error("standard and enterprise rank their features the same")
	}
}
