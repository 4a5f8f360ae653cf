package event_test

import (
	"go/ast"
	"go/token"
	"regexp"
	"strings"
	"testing"

	"github.com/shukei/shukei/event"
	"github.com/shukei/shukei/internal/modsrc"
)

// idBodies are the identifier patterns' bodies as another file would copy them.
var idBodies = []string{
	"[a-z0-9][a-z0-9_.-]{0,63}", // PatternID
	"[0-9a-f]{8}-[0-9a-f]{4}",   // PatternEventID, and the UUID half of PatternRequestID
}

// idFunc is the name of a hand-written matcher of an id or a UUID.
var idFunc = regexp.MustCompile(`(?i)^(is|valid|check)_?(uuid\w*|id|ident|identifier|tenant|tenantid|eventid|event_id|tenant_id)$`)

// One home for the identifier patterns (issue #18): the id and UUID patterns are event's
// (event/pattern.go: PatternID, PatternEventID and IsID, IsUUID, IsUUIDAnyCase, IsEventID),
// and every other package — the guard, the decision, config, the registry, the query service —
// matches ids through them. A non-test source outside event fails if it compiles one of
// event's patterns (or writes its body in a string), or declares a matcher of its own
// (isUUID…, validTenant, isID).
func TestIdentifierPatternsHaveOneHome(t *testing.T) {
	patterns := []string{event.PatternID, event.PatternEventID, event.PatternRequestID, event.PatternUser, event.PatternToken}
	const re = "regexp"
	for _, f := range modsrc.Files(t) {
		if f.Test() || f.In("event") {
			continue
		}
		seen := map[string]bool{}
		modsrc.StringLits(f, func(pos token.Pos, s string) {
			for _, b := range idBodies {
				if strings.Contains(s, b) && !seen[f.Pos(pos)] {
					seen[f.Pos(pos)] = true
					t.Errorf("%s: writes the identifier pattern %s itself; use event's (event.PatternID, event.IsID, event.IsUUID)", f.Pos(pos), b)
				}
			}
		})
		ast.Inspect(f.AST, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				if (modsrc.SelectorOf(f, n.Fun, re, "MustCompile") || modsrc.SelectorOf(f, n.Fun, re, "Compile")) && len(n.Args) == 1 {
					if l, ok := n.Args[0].(*ast.BasicLit); ok {
						for _, p := range patterns {
							if strings.Trim(l.Value, "`\"") == p {
								t.Errorf("%s: compiles event's pattern %s; use event's matcher", f.Pos(n.Pos()), p)
							}
						}
					}
				}
			case *ast.FuncDecl:
				if n.Recv == nil && idFunc.MatchString(n.Name.Name) {
					t.Errorf("%s: %s is an id matcher of its own; use event's (IsID, IsUUID, IsUUIDAnyCase, IsEventID)", f.Pos(n.Pos()), n.Name.Name)
				}
			}
			return true
		})
	}
}

// The matchers agree with the patterns they stand for.
func TestIsUUIDAnyCase(t *testing.T) {
	uuid := regexp.MustCompile(`^(?i:` + strings.TrimSuffix(strings.TrimPrefix(event.PatternEventID, "^"), "$") + `)$`)
	for _, s := range []string{
		"0f8fad5b-d9cb-469f-a165-70867728950e", "0F8FAD5B-D9CB-469F-A165-70867728950E", "0f8fad5b-d9cb-469f-a165-70867728950", "0f8fad5bd9cb-469f-a165-70867728950e0",
		"0f8fad5b-d9cb-469f-a165-70867728950g", "", "00000000-0000-0000-0000-000000000000", "0f8fad5b-d9cb-469f-a165_70867728950e",
	} {
		if got, want := event.IsUUIDAnyCase(s), uuid.MatchString(s); got != want {
			t.Errorf("IsUUIDAnyCase(%q) = %v, want %v", s, got, want)
		}
		if event.IsUUID(s) && !event.IsUUIDAnyCase(s) {
			t.Errorf("IsUUID(%q) but not IsUUIDAnyCase", s)
		}
	}
}

// wireReasons are the rejection reasons as they stand on the wire — collector responses,
// metric labels, DLQ headers, rejections rows — today: a contract, never renamed.
var wireReasons = []string{
	"malformed_json", "wrong_type", "unknown_field", "duplicate_key", "missing_field", "forbidden_field",
	"unknown_schema", "invalid_event_id", "invalid_tenant_id", "invalid_timestamp", "invalid_field",
	"out_of_range", "inconsistent_fields", "too_old", "in_future",
	"input_data.email", "input_data.phone", "input_data.url", "input_data.free_text", "input_data.personal_name",
	"input_data.file_name", "input_data.blob", "input_data.control_char", "input_data.oversize",
	"input_data.payment_card", "input_data.bank_account", "input_data.national_id", "input_data.postal_code",
	"input_data.network_address",
	"unknown_tenant", "tenant_terminated", "tenant_deleted", "no_pseudonym_key", "no_purpose",
	"duplicate_event_id", "key_mismatch",
}

// wireClasses are the rejection classes' names on the wire (DLQ headers, rejections rows).
var wireClasses = []string{"input_data", "malformed", "policy", "duplicate"}

// One home for the rejection reasons (issue #18): every reason is an event.Reason constant of
// event/reason.go, and every rejection (event.Rejection, decision.Rejection) carries that one
// typed Reason and its Class. A non-test source outside event fails if it declares a constant
// or variable holding a reason's or a class's code, declares a Reason or Class type of its
// own, or has a Rejection whose Reason is not an event.Reason.
func TestReasonsHaveOneHome(t *testing.T) {
	reasons, classes := map[string]bool{}, map[string]bool{}
	for _, s := range wireReasons {
		reasons[s] = true
	}
	for _, s := range wireClasses {
		classes[s] = true
	}
	const path = "github.com/shukei/shukei/event"
	for _, f := range modsrc.Files(t) {
		if f.Test() || f.In("event") {
			continue
		}
		ast.Inspect(f.AST, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.ValueSpec:
				for i, v := range n.Values {
					l, ok := v.(*ast.BasicLit)
					if !ok || l.Kind != token.STRING {
						continue
					}
					code := strings.Trim(l.Value, "`\"")
					// A class's name is a common word ("policy"): only a Class… name declares one.
					if reasons[code] || classes[code] && i < len(n.Names) && strings.HasPrefix(n.Names[i].Name, "Class") {
						t.Errorf("%s: declares the rejection code %s itself; use event's Reason (or Class) constant", f.Pos(l.Pos()), l.Value)
					}
				}
			case *ast.TypeSpec:
				if n.Name.Name == "Reason" || n.Name.Name == "Class" {
					t.Errorf("%s: declares a %s type of its own; use event.%[2]s", f.Pos(n.Pos()), n.Name.Name)
				}
				st, ok := n.Type.(*ast.StructType)
				if !ok || n.Name.Name != "Rejection" {
					return true
				}
				for _, fld := range st.Fields.List {
					for _, name := range fld.Names {
						if name.Name == "Reason" && !modsrc.SelectorOf(f, fld.Type, path, "Reason") {
							t.Errorf("%s: Rejection.Reason is not an event.Reason", f.Pos(fld.Pos()))
						}
					}
				}
			}
			return true
		})
	}
}

// The typed reasons render to exactly today's codes, each with its class, and the classes to
// their names in the rejections table's enum order.
func TestReasonStrings(t *testing.T) {
	decision := map[event.Reason]event.Class{
		event.ReasonUnknownTenant: event.ClassPolicy, event.ReasonTerminated: event.ClassPolicy, event.ReasonDeleted: event.ClassPolicy,
		event.ReasonNoKey: event.ClassPolicy, event.ReasonNoPurpose: event.ClassPolicy,
		event.ReasonDuplicate: event.ClassDuplicate, event.ReasonKeyMismatch: event.ClassMalformed,
	}
	got := map[string]bool{}
	for _, r := range event.Reasons() {
		got[string(r)] = true
		if _, ok := decision[r]; ok {
			t.Errorf("Reasons() holds the decision's %s: it initialises the guard's metrics", r)
		}
		want := event.ClassMalformed
		if strings.HasPrefix(string(r), event.InputDataPrefix) {
			want = event.ClassInputData
		}
		if r.Class() != want || r.Error() != string(r) {
			t.Errorf("%s: class %s, want %s", r, r.Class(), want)
		}
	}
	for r, c := range decision {
		got[string(r)] = true
		if r.Class() != c {
			t.Errorf("%s: class %s, want %s", r, r.Class(), c)
		}
	}
	if len(got) != len(wireReasons) {
		t.Errorf("%d reasons, want the %d on the wire", len(got), len(wireReasons))
	}
	for _, s := range wireReasons {
		if !got[s] {
			t.Errorf("reason %q is gone: it is a contract (metrics, DLQ, rejections rows)", s)
		}
	}
	if c := event.Reason("no_such_reason").Class(); c != event.ClassInputData {
		t.Errorf("an unknown reason is of class %s, want input_data (when in doubt, the payload goes)", c)
	}
	for i, name := range wireClasses {
		if c := event.Class(i + 1); c.String() != name {
			t.Errorf("class %d is %q, want %q", i+1, c, name)
		}
	}
	if event.ClassInputData != 1 || event.ClassMalformed != 2 || event.ClassPolicy != 3 || event.ClassDuplicate != 4 {
		t.Error("the classes' values moved")
	}
}
