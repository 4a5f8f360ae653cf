package policy

import (
	"fmt"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// manifest is what the test reads back: only the keys it checks.
type manifest struct {
	DataCategory []taxon `yaml:"data_category"`
	DataUse      []taxon `yaml:"data_use"`
	DataSubject  []taxon `yaml:"data_subject"`
	System       []struct {
		FidesKey            string `yaml:"fides_key"`
		SystemType          string `yaml:"system_type"`
		PrivacyDeclarations []struct {
			Name                       string   `yaml:"name"`
			DataCategories             []string `yaml:"data_categories"`
			DataUse                    string   `yaml:"data_use"`
			DataSubjects               []string `yaml:"data_subjects"`
			DataSharedWithThirdParties bool     `yaml:"data_shared_with_third_parties"`
		} `yaml:"privacy_declarations"`
	} `yaml:"system"`
}

type taxon struct {
	FidesKey  string `yaml:"fides_key"`
	Name      string `yaml:"name"`
	ParentKey string `yaml:"parent_key"`
}

func TestExportFides(t *testing.T) {
	for _, file := range []string{"v1.yaml", "testdata/v2.yaml"} {
		t.Run(file, func(t *testing.T) {
			p := mustParse(t, readFile(t, file))
			out, err := ExportFides(p)
			if err != nil {
				t.Fatal(err)
			}

			var top map[string]any
			if err := yaml.Unmarshal(out, &top); err != nil {
				t.Fatalf("not valid YAML: %v", err)
			}
			for _, k := range []string{"data_category", "data_use", "data_subject", "system"} {
				if _, ok := top[k]; !ok {
					t.Errorf("no top-level %q", k)
				}
			}

			var m manifest
			if err := yaml.Unmarshal(out, &m); err != nil {
				t.Fatal(err)
			}
			keys := map[string]bool{}
			for _, c := range m.DataCategory {
				if !strings.HasPrefix(c.FidesKey, "user.") && !strings.HasPrefix(c.FidesKey, "system.") {
					t.Errorf("data_category %q is not under user.* or system.*", c.FidesKey)
				}
				// fideslang: a key is its parent's key plus one segment.
				if c.FidesKey[:strings.LastIndexByte(c.FidesKey, '.')] != c.ParentKey {
					t.Errorf("data_category %q has parent_key %q", c.FidesKey, c.ParentKey)
				}
				keys[c.FidesKey] = true
			}
			if len(m.DataCategory) != 6 || len(keys) != 6 {
				t.Errorf("%d data categories (%d distinct), want 6", len(m.DataCategory), len(keys))
			}
			uses := map[string]bool{}
			for _, u := range m.DataUse {
				if u.FidesKey[:strings.LastIndexByte(u.FidesKey, '.')] != u.ParentKey || u.Name == "" {
					t.Errorf("data_use %+v", u)
				}
				uses[u.FidesKey] = true
			}
			if len(uses) != 7 {
				t.Errorf("%d data uses, want 7", len(uses))
			}
			if len(m.DataSubject) != 1 || m.DataSubject[0].FidesKey != "customer" {
				t.Errorf("data_subject = %+v, want customer", m.DataSubject)
			}
			if len(m.System) != 1 || m.System[0].FidesKey != "shukei" || m.System[0].SystemType == "" {
				t.Fatalf("system = %+v", m.System)
			}

			// Every cell that is not none is a declaration, and nothing else is.
			type pair struct{ cat, use string }
			declared := map[pair]int{}
			for _, d := range m.System[0].PrivacyDeclarations {
				if len(d.DataCategories) != 1 || len(d.DataSubjects) != 1 || d.DataSubjects[0] != "customer" || d.Name == "" {
					t.Errorf("declaration %+v", d)
					continue
				}
				if !keys[d.DataCategories[0]] || !uses[d.DataUse] {
					t.Errorf("declaration %q names an undeclared category or use", d.Name)
				}
				if d.DataSharedWithThirdParties != strings.HasPrefix(d.DataUse, "third_party_sharing.") {
					t.Errorf("declaration %q: data_shared_with_third_parties = %v", d.Name, d.DataSharedWithThirdParties)
				}
				declared[pair{d.DataCategories[0], d.DataUse}]++
			}
			cells := 0
			for _, c := range Categories() {
				for _, pur := range Purposes() {
					n := declared[pair{FidesCategoryKey(c), FidesUseKey(pur)}]
					switch {
					case p.Cell(c, pur) == None && n != 0:
						t.Errorf("%s/%s is none but declared", c, pur)
					case p.Cell(c, pur) != None && n != 1:
						t.Errorf("%s/%s (%s) declared %d times, want once", c, pur, p.Cell(c, pur), n)
					}
					if p.Cell(c, pur) != None {
						cells++
					}
				}
			}
			if len(m.System[0].PrivacyDeclarations) != cells {
				t.Errorf("%d declarations for %d cells", len(m.System[0].PrivacyDeclarations), cells)
			}
			if file == "v1.yaml" {
				golden(t, "testdata/fides.v1.golden.yaml", out)
			}
		})
	}
}

func TestExportFidesRejectsInvalidPolicy(t *testing.T) {
	p := mustParse(t, readFile(t, "v1.yaml"))
	p.Matrix[Operation][ExternalAggregate] = EventLevel
	if _, err := ExportFides(p); err == nil {
		t.Error("exported an invalid policy")
	}
}

// ExportTo, 'shukei policy export': the embedded version as ExportFides writes it, or an error
// naming the flag.
func TestExportTo(t *testing.T) {
	var b strings.Builder
	if err := ExportTo(&b, "fides", 1); err != nil {
		t.Fatal(err)
	}
	v, _ := Embedded()
	if want, _ := ExportFides(v.Policy(1)); b.String() != string(want) {
		t.Error("ExportTo(fides, 1) is not ExportFides of the embedded version 1")
	}
	if err := ExportTo(&b, "odrl", 1); err == nil || err.Error() != `--format "odrl": only fides is supported` {
		t.Errorf("format: %v", err)
	}
	for _, n := range []int{0, v.Len() + 1} {
		if err := ExportTo(&b, "fides", n); err == nil || !strings.HasPrefix(err.Error(), fmt.Sprintf("--version %d: the embedded policy has versions 1..", n)) {
			t.Errorf("version %d: %v", n, err)
		}
	}
}
