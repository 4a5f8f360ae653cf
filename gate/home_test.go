package gate_test

import (
	"go/ast"
	"go/token"
	"regexp"
	"strings"
	"testing"

	"github.com/shukei/shukei/internal/modsrc"
)

// kSQL is a SQL condition on a count of tenants: HAVING tenants >= ?, count() >= 5,
// uniqExact(tenant_id) < k.
var kSQL = regexp.MustCompile(`(?i)\b(tenants|count\(\)|uniq\w*\(\s*tenant_id\s*\)|count\(\s*distinct\s+tenant_id\s*\))\s*(>=|>|<|<=)\s*(\?|\d+|k\b)`)

// One home for the k-threshold (issue #18): an answer never holds anything from fewer than k
// tenants, and only package gate says so — in SQL (the atoms it computes and reads) and in Go
// (the atoms it writes). No other non-test source of the module filters rows on a count of
// tenants, compares a count of tenants with k, or sets the floor of k (policy.MinK) itself.
func TestKThresholdHasOneHome(t *testing.T) {
	var bad, inGate []string
	for _, f := range modsrc.Files(t) {
		if f.Test() {
			continue
		}
		home := f.In("gate")
		seen := map[string]bool{}
		modsrc.StringLits(f, func(pos token.Pos, s string) {
			if m := kSQL.FindString(s); m != "" && home && !seen[f.Pos(pos)] {
				seen[f.Pos(pos)] = true
				inGate = append(inGate, f.Pos(pos)+": "+m)
			} else if m != "" && !home && !seen[f.Pos(pos)] {
				seen[f.Pos(pos)] = true
				bad = append(bad, f.Pos(pos)+": SQL threshold on tenants "+m+" (read atoms through gate.Read)")
			}
		})
		ast.Inspect(f.AST, func(n ast.Node) bool {
			if c, ok := n.(*ast.CallExpr); ok && !f.In("policy") {
				if id, ok := c.Fun.(*ast.Ident); ok && (id.Name == "max" || id.Name == "min") && len(c.Args) == 2 &&
					(mentions(c.Args[0], isK) && isFloor(c.Args[1]) || mentions(c.Args[1], isK) && isFloor(c.Args[0])) {
					bad = append(bad, f.Pos(c.Pos())+": sets the floor of k itself (use policy.MinK)")
				}
			}
			b, ok := n.(*ast.BinaryExpr)
			if !ok || !comparison(b.Op) {
				return true
			}
			switch {
			case !home && (mentions(b.X, isK) && mentions(b.Y, isTenants) || mentions(b.Y, isK) && mentions(b.X, isTenants)):
				bad = append(bad, f.Pos(b.Pos())+": compares a count of tenants with k (gate.Enough is the one rule)")
			case !f.In("policy") && (mentions(b.X, isK) && isFloor(b.Y) || mentions(b.Y, isK) && isFloor(b.X)):
				bad = append(bad, f.Pos(b.Pos())+": sets the floor of k itself (use policy.MinK)")
			}
			return true
		})
	}
	for _, b := range bad {
		t.Error(b)
	}
	// In gate itself the SQL threshold is written once (atLeastK), used by Compute and Read.
	if len(inGate) != 1 {
		t.Errorf("gate writes the SQL threshold %d times, want once (atLeastK): %v", len(inGate), inGate)
	}
}

func comparison(op token.Token) bool {
	return op == token.LSS || op == token.LEQ || op == token.GTR || op == token.GEQ
}

// isK: an identifier k or K, or a field .K.
func isK(name string) bool { return name == "k" || name == "K" }

func isTenants(name string) bool { return strings.EqualFold(name, "tenants") }

// mentions reports whether e is (or converts, or takes the len of) a name that match accepts.
func mentions(e ast.Expr, match func(string) bool) bool {
	switch e := e.(type) {
	case *ast.Ident:
		return match(e.Name)
	case *ast.SelectorExpr:
		return match(e.Sel.Name)
	case *ast.ParenExpr:
		return mentions(e.X, match)
	case *ast.CallExpr:
		if len(e.Args) == 1 {
			return mentions(e.Args[0], match)
		}
	}
	return false
}

// isFloor: the literal 1 or 2, the floor of k written out (k < 2, k <= 1, max(k, 2)).
func isFloor(e ast.Expr) bool {
	l, ok := e.(*ast.BasicLit)
	return ok && l.Kind == token.INT && (l.Value == "1" || l.Value == "2")
}
