package policy

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustParse(t testing.TB, b []byte) *Policy {
	t.Helper()
	p, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// wants returns the "# want: ..." lines at the top of a fixture.
func wants(b []byte) []string {
	var ws []string
	for _, l := range strings.Split(string(b), "\n") {
		w, ok := strings.CutPrefix(l, "# want: ")
		if !ok {
			break
		}
		ws = append(ws, w)
	}
	return ws
}

func TestParseGoodFiles(t *testing.T) {
	names, err := filepath.Glob("testdata/*.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	names = append(names, "v1.yaml", "testdata/v2.yaml")
	if len(names) < 4 {
		t.Fatalf("only %d good files", len(names))
	}
	for _, name := range names {
		t.Run(filepath.Base(name), func(t *testing.T) {
			p := mustParse(t, readFile(t, name))
			if err := p.Validate(); err != nil {
				t.Errorf("Validate after Parse: %v", err)
			}
		})
	}
}

func TestParseBadFiles(t *testing.T) {
	names, err := filepath.Glob("testdata/*.bad.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(names) < 20 {
		t.Fatalf("only %d bad files", len(names))
	}
	for _, name := range names {
		t.Run(filepath.Base(name), func(t *testing.T) {
			b := readFile(t, name)
			ws := wants(b)
			if len(ws) == 0 {
				t.Fatal("a bad file must start with # want: <expected error text>")
			}
			_, err := Parse(b)
			if err == nil {
				t.Fatal("Parse accepted it")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			for _, w := range ws {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			// A validation error reports exactly the problems the file has, each
			// once: every problem, and nothing the fixture did not plant.
			var ve *ValidationError
			if errors.As(err, &ve) && len(ve.Problems) != len(ws) {
				t.Errorf("%d problems, want %d:\n%v", len(ve.Problems), len(ws), err)
			}
		})
	}
}

// The embedded file and its comment-free copy in testdata must mean the same.
func TestEmbeddedV1MatchesCompactCopy(t *testing.T) {
	vs, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	compact := mustParse(t, readFile(t, "testdata/v1_compact.good.yaml"))
	if !reflect.DeepEqual(vs.Policy(1), compact) {
		t.Error("v1.yaml and testdata/v1_compact.good.yaml (v1.yaml without comments) differ: update the copy and the fixtures made from it")
	}
}

func TestParseV1Values(t *testing.T) {
	p := mustParse(t, readFile(t, "v1.yaml"))
	for _, tc := range []struct {
		name      string
		got, want any
	}{
		{"version", p.Version, 1},
		{"requires_consent", p.RequiresConsent, false},
		{"k", p.K, 5},
		{"enacted (制定日)", p.Enacted, time.Date(2022, 8, 1, 0, 0, 0, 0, time.UTC)},
		{"retention.after_contract_end 2(3)", p.Retention.AfterContractEnd, 90 * 24 * time.Hour},
		{"retention.event_store", p.Retention.EventStore, 395 * 24 * time.Hour},
		{"retention.dlq", p.Retention.DLQ, 30 * 24 * time.Hour},
		{"budget 3(2)-4", *p.Purposes[ExternalAggregate].Budget, Budget{EpsilonPerMonth: 31, DeltaPerMonth: 1e-6}},
		{"support condition 3(1)-1", p.Purposes[Support].Condition, OpenTicket},
		{"external_consented consent 3(2)-1", p.Purposes[ExternalConsented].Consent, true},
		{"marketing consent", p.Purposes[Marketing].Consent, false},
		{"follow_up statuses 3(1)-4", p.Purposes[FollowUp].Statuses, []Status{Trial, Beta, Contracted}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !reflect.DeepEqual(tc.got, tc.want) {
				t.Errorf("got %v, want %v", tc.got, tc.want)
			}
		})
	}
	for pur, clause := range specClause {
		if got := p.Purposes[pur].Clause; got != clause {
			t.Errorf("purposes.%s.clause = %q, want %q", pur, got, clause)
		}
	}
	for _, c := range Categories() {
		if p.Categories[c].Clause != "1" || p.Categories[c].DescriptionJA == "" {
			t.Errorf("categories.%s: %+v", c, p.Categories[c])
		}
	}
}

func TestParseKDefault(t *testing.T) {
	p := mustParse(t, readFile(t, "testdata/k_default.good.yaml"))
	if p.K != DefaultK {
		t.Errorf("k = %d, want the default %d", p.K, DefaultK)
	}
}

// Validate holds a Policy built in Go to the same rules as a parsed one.
func TestValidateBuiltPolicy(t *testing.T) {
	p := mustParse(t, readFile(t, "v1.yaml"))
	p.K = 1
	delete(p.Matrix, Settings)
	p.Matrix[Operation][Support] = Aggregate
	r := p.Purposes[Marketing]
	r.Statuses = []Status{Trial, Terminated}
	p.Purposes[Marketing] = r
	p.Purposes[Purpose(9)] = PurposeRule{}
	err := p.Validate()
	var ve *ValidationError
	if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
	want := []string{
		"purposes: unknown purpose(9)",
		"k: must be at least 2",
		"purposes.marketing.statuses[1]: terminated tenants get no new purposes",
		"matrix.settings: missing",
		"matrix.operation.support: aggregate not allowed for support",
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
	if len(ve.Problems) != len(want) {
		t.Errorf("%d problems, want %d:\n%v", len(ve.Problems), len(want), err)
	}
}

func TestValidClause(t *testing.T) {
	for _, s := range []string{"1", "2(3)", "3(1)-2", "3(2)-4", "12(10)-11"} {
		if !validClause(s) {
			t.Errorf("%q rejected", s)
		}
	}
	for _, s := range []string{"", "0", "3()-1", "3(1)-", "3-1", "(1)", "3(01)-1", "3(1)-2 ", "a", "3(1)x"} {
		if validClause(s) {
			t.Errorf("%q accepted", s)
		}
	}
}
