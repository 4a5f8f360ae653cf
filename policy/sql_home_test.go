package policy_test

import (
	"go/ast"
	"go/token"
	"regexp"
	"strings"
	"testing"

	"github.com/shukei/shukei/internal/modsrc"
	"github.com/shukei/shukei/policy"
)

// purposeBitSQL is a purpose's bit written into SQL by hand: bitAnd(purposes, 4),
// bitTest(purposes, 2), purposes & 8.
var purposeBitSQL = regexp.MustCompile(`(?i)(bit(and|test)\s*\(\s*purposes\s*,\s*\d|\bpurposes\s*&\s*\d)`)

// One home for the purposes' bits in SQL (issue #18): a query that selects events by purpose
// writes the condition with Purpose.SQL, generated from the policy's bits. A Go source of the
// module — tests included — outside policy fails if a string in it writes a purpose's bit.
// (The migrations' .sql files are never edited once applied; TestPurposeBitsArePolicys in
// migrations holds their bits to the policy's.)
func TestPurposeBitsInSQLHaveOneHome(t *testing.T) {
	for _, f := range modsrc.Files(t) {
		// migrations/purposes_test.go writes wrong bits on purpose: the fixtures of the check
		// that holds the migrations' bits to the policy's.
		if f.In("policy") || f.Path == "migrations/purposes_test.go" {
			continue
		}
		seen := map[string]bool{}
		modsrc.StringLits(f, func(pos token.Pos, s string) {
			if m := purposeBitSQL.FindString(s); m != "" && !seen[f.Pos(pos)] {
				seen[f.Pos(pos)] = true
				t.Errorf("%s: writes a purpose's bit into SQL (%s); use policy.Purpose.SQL", f.Pos(pos), m)
			}
		})
	}
}

// Nor does a non-test source outside policy tag events with purpose bits written out
// (purposes[i] = 1 | 2 | 4): a tag is built with policy.SetOf.
func TestPurposeTagsHaveOneHome(t *testing.T) {
	for _, f := range modsrc.Files(t) {
		if f.Test() || f.In("policy") {
			continue
		}
		ast.Inspect(f.AST, func(n ast.Node) bool {
			a, ok := n.(*ast.AssignStmt)
			if !ok || len(a.Lhs) != len(a.Rhs) {
				return true
			}
			for i, l := range a.Lhs {
				if namesPurposes(l) && bitLiteral(a.Rhs[i]) {
					t.Errorf("%s: tags events with purpose bits written out; use policy.SetOf", f.Pos(a.Pos()))
				}
			}
			return true
		})
	}
}

// namesPurposes: purposes, purposes[i] or x.Purposes.
func namesPurposes(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.Ident:
		return strings.EqualFold(e.Name, "purposes")
	case *ast.IndexExpr:
		return namesPurposes(e.X)
	case *ast.SelectorExpr:
		return strings.EqualFold(e.Sel.Name, "purposes")
	}
	return false
}

// bitLiteral: a non-zero integer literal, or literals or'ed together.
func bitLiteral(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.BasicLit:
		return e.Kind == token.INT && e.Value != "0"
	case *ast.BinaryExpr:
		return e.Op == token.OR && bitLiteral(e.X) && bitLiteral(e.Y)
	case *ast.ParenExpr:
		return bitLiteral(e.X)
	}
	return false
}

func TestPurposeSQL(t *testing.T) {
	for p, want := range map[policy.Purpose]string{
		policy.Support:            "bitAnd(purposes, 1) != 0",
		policy.ServiceImprovement: "bitAnd(purposes, 2) != 0",
		policy.Marketing:          "bitAnd(purposes, 4) != 0",
		policy.FollowUp:           "bitAnd(purposes, 8) != 0",
		policy.InterviewSelection: "bitAnd(purposes, 16) != 0",
		policy.ExternalAggregate:  "bitAnd(purposes, 32) != 0",
		policy.ExternalConsented:  "bitAnd(purposes, 64) != 0",
	} {
		if got := p.SQL("purposes"); got != want {
			t.Errorf("%s.SQL = %q, want %q", p, got, want)
		}
		if p.Bit() != uint16(policy.SetOf(p)) {
			t.Errorf("%s.Bit = %d", p, p.Bit())
		}
	}
}
