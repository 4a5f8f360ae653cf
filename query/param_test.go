package query

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite query/openapi.json from the report definitions")

// WriteOpenAPI writes the document the service serves ('shukei query --openapi').
func TestWriteOpenAPI(t *testing.T) {
	var b bytes.Buffer
	if err := WriteOpenAPI(&b); err != nil {
		t.Fatal(err)
	}
	if want, _ := OpenAPI(); !bytes.Equal(b.Bytes(), want) {
		t.Fatal("WriteOpenAPI wrote something else than OpenAPI")
	}
}

// The OpenAPI document in the repository is the one the code describes.
func TestOpenAPIFileIsCurrent(t *testing.T) {
	b, err := OpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("openapi.json", b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(b, openAPIFile) {
		t.Fatal("query/openapi.json is stale: run go test ./query -run OpenAPI -update (or shukei query --openapi > query/openapi.json)")
	}
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi %q", doc.OpenAPI)
	}
	for _, r := range Reports() {
		op, ok := doc.Paths["/v1/reports/"+r.Name]["get"].(map[string]any)
		if !ok {
			t.Errorf("report %s is not in the document", r.Name)
			continue
		}
		params := op["parameters"].([]any)
		if len(params) != len(r.Params)+2 {
			t.Errorf("%s: %d parameters documented, %d defined (+ purpose, format)", r.Name, len(params), len(r.Params))
		}
		for _, code := range []string{"200", "400", "401", "403", "503"} {
			if _, ok := op["responses"].(map[string]any)[code]; !ok {
				t.Errorf("%s: response %s undocumented", r.Name, code)
			}
		}
	}
}

// Every report is well formed: a known purpose, unique names, a column per row value.
func TestReportDefinitions(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range Reports() {
		if seen[r.Name] || r.run == nil || r.Title == "" || len(r.Columns) == 0 {
			t.Errorf("report %q is malformed or repeated", r.Name)
		}
		seen[r.Name] = true
		for _, p := range r.Params {
			if p.Default != "" {
				if _, err := parse([]Param{p}, url.Values{}, time.Now()); err != nil {
					t.Errorf("%s.%s: default %q does not parse: %v", r.Name, p.Name, p.Default, err)
				}
			}
		}
		names := map[string]bool{}
		for _, c := range r.Columns {
			names[c.Name] = true
		}
		for _, f := range []string{r.Chart.Label, r.Chart.Value, r.Chart.Series, r.Chart.Low, r.Chart.High} {
			if f != "" && !names[f] {
				t.Errorf("%s: chart names column %q, which it does not have", r.Name, f)
			}
		}
	}
}

func TestParse(t *testing.T) {
	now := time.Date(2026, 11, 29, 15, 4, 5, 0, time.UTC)
	params := []Param{
		{Name: "edition", Kind: Ident, Multi: true},
		{Name: "limit", Kind: Int, Min: 1, Max: 10, Default: "5"},
		{Name: "as_of", Kind: Date, Default: "today"},
		{Name: "at", Kind: Time},
		{Name: "flag", Kind: Bool, Default: "false"},
		{Name: "kind", Kind: Enum, Values: []string{"a", "b"}},
	}
	a, err := parse(params, url.Values{"edition": {"pro,standard", "pro"}, "at": {"2026-11-29T10:00:00+09:00"}, "purpose": {"x"}}, now)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(a.List("edition"), "|") != "pro|standard" || a.Int("limit") != 5 || !a.Time("as_of").Equal(time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)) ||
		!a.Time("at").Equal(time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)) || a.Bool("flag") || a.Str("kind") != "" {
		t.Errorf("parsed %v", a)
	}
	for _, bad := range []url.Values{
		{"limit": {"0"}}, {"limit": {"11"}}, {"limit": {"5", "6"}}, {"limit": {"1e1"}},
		{"edition": {"Pro"}}, {"edition": {strings.Repeat("a,", 60) + "a"}}, {"as_of": {"2026-13-01"}},
		{"at": {"yesterday"}}, {"flag": {"yes"}}, {"kind": {"c"}}, {"unknown": {"1"}},
	} {
		if _, err := parse(params, bad, now); err == nil {
			t.Errorf("%v accepted", bad)
		} else if _, ok := err.(*BadParam); !ok {
			t.Errorf("%v: %T is not a BadParam", bad, err)
		}
	}
}

// FuzzParse: whatever a query string holds, parse returns typed values of the declared form
// or a BadParam, and never panics.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"edition=pro,standard&limit=5", "as_of=today&at=now", "limit=%00", "edition=' OR 1=1 --", "kind=a&kind=b", "flag=true&x=1"} {
		f.Add(s)
	}
	params := []Param{
		{Name: "edition", Kind: Ident, Multi: true},
		{Name: "limit", Kind: Int, Min: 1, Max: 10},
		{Name: "as_of", Kind: Date},
		{Name: "at", Kind: Time},
		{Name: "flag", Kind: Bool},
		{Name: "kind", Kind: Enum, Values: []string{"a", "b"}},
		{Name: "ticket", Kind: Ticket},
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		a, err := parse(params, q, now)
		if err != nil {
			if _, ok := err.(*BadParam); !ok {
				t.Fatalf("%q: %T %v", raw, err, err)
			}
			return
		}
		for _, v := range a.List("edition") {
			if !patterns[Ident].MatchString(v) {
				t.Fatalf("edition %q passed", v)
			}
		}
		if n, ok := a["limit"]; ok && (n.(int) < 1 || n.(int) > 10) {
			t.Fatalf("limit %v passed", n)
		}
		if k := a.Str("kind"); k != "" && k != "a" && k != "b" {
			t.Fatalf("kind %q passed", k)
		}
		if s := a.Str("ticket"); s != "" && !patterns[Ticket].MatchString(s) {
			t.Fatalf("ticket %q passed", s)
		}
	})
}
