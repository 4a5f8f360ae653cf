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
