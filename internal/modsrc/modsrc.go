// Package modsrc parses the module's own Go sources, for the tests that hold each rule to its
// one home (issue #18): the k-threshold in gate, the identifier patterns in event, the event
// limits in config, the rejection reasons in event, the purposes' bits in SQL in policy. Such a
// test walks every file of the module — tests and build-tagged files included — and fails when
// one outside the rule's home writes the rule again.
package modsrc

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// File is one parsed Go file of the module.
type File struct {
	Path string // slash-separated, relative to the module root: "query/reports.go"
	Dir  string // its directory, relative to the module root: "query" ("." at the root)
	AST  *ast.File
	Fset *token.FileSet
}

// Test reports whether the file is a test file.
func (f File) Test() bool { return strings.HasSuffix(f.Path, "_test.go") }

// In reports whether the file is in one of the directories dirs (relative to the module root;
// not their subdirectories).
func (f File) In(dirs ...string) bool {
	for _, d := range dirs {
		if f.Dir == d {
			return true
		}
	}
	return false
}

// Pos renders a position in the file as path:line.
func (f File) Pos(p token.Pos) string {
	return f.Path + ":" + strconv.Itoa(f.Fset.Position(p).Line)
}

// Imports reports whether the file imports the package path.
func (f File) Imports(path string) bool {
	for _, s := range f.AST.Imports {
		if v, _ := strconv.Unquote(s.Path.Value); v == path {
			return true
		}
	}
	return false
}

// Root is the module's root directory: the nearest directory above the working directory
// that holds go.mod.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("modsrc: no go.mod above the working directory")
		}
		dir = up
	}
}

var (
	once   sync.Once
	cached []File
	err    error
)

// Files parses every .go file of the module (skipping testdata, node_modules and hidden
// directories), once per test binary.
func Files(t testing.TB) []File {
	t.Helper()
	root := Root(t)
	once.Do(func() { cached, err = parse(root) })
	if err != nil {
		t.Fatal(err)
	}
	if len(cached) == 0 {
		t.Fatal("modsrc: no Go file found under " + root)
	}
	return cached
}

func parse(root string) ([]File, error) {
	var out []File
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (name == "testdata" || name == "node_modules" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		dir := filepath.ToSlash(filepath.Dir(rel))
		out = append(out, File{Path: rel, Dir: dir, AST: f, Fset: fset})
		return nil
	})
	return out, err
}

// StringLits calls fn with every string literal of the file (its unquoted value). A literal
// that is an operand of a string concatenation is also seen joined to its neighbours that are
// literals too, so "bitAnd(purposes, " + "4)" is caught as one.
func StringLits(f File, fn func(pos token.Pos, s string)) {
	ast.Inspect(f.AST, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.BasicLit:
			if n.Kind == token.STRING {
				if s, err := strconv.Unquote(n.Value); err == nil {
					fn(n.Pos(), s)
				}
			}
		case *ast.BinaryExpr:
			if n.Op == token.ADD {
				if s, ok := joined(n); ok {
					fn(n.Pos(), s)
				}
			}
		}
		return true
	})
}

// joined renders a concatenation whose operands are all literals or other expressions, the
// latter as "?", so that the literal text around an expression is seen whole.
func joined(e ast.Expr) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind == token.STRING {
			s, err := strconv.Unquote(e.Value)
			return s, err == nil
		}
	case *ast.BinaryExpr:
		if e.Op == token.ADD {
			l, ok1 := joined(e.X)
			r, ok2 := joined(e.Y)
			if ok1 || ok2 {
				return l + r, true
			}
			return "", false
		}
	case *ast.ParenExpr:
		return joined(e.X)
	}
	return "?", false
}

// SelectorOf reports whether e is pkg.name for the package imported by f from path (under any
// local name).
func SelectorOf(f File, e ast.Expr, path, name string) bool {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != name {
		return false
	}
	id, ok := sel.X.(*ast.Ident)
	if !ok {
		return false
	}
	return LocalName(f, path) == id.Name
}

// LocalName is the name under which f imports path ("" when it does not).
func LocalName(f File, path string) string {
	for _, s := range f.AST.Imports {
		if v, _ := strconv.Unquote(s.Path.Value); v == path {
			if s.Name != nil {
				return s.Name.Name
			}
			return path[strings.LastIndex(path, "/")+1:]
		}
	}
	return ""
}
