package layers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// layer is one heading of the layout block.
type layer struct {
	n    int // 0: a group outside the layers
	name string
	line int // README line of the heading
}

// entry is one path of the layout block.
type entry struct {
	path  string // as written: "pipeline/guard/", "docs/promises.md"
	line  int    // README line
	text  string // the README line itself
	layer *layer
	notGo bool // marked "(not Go)"
}

func (e entry) dir() bool { return strings.HasSuffix(e.path, "/") }

// rel is the entry's package path relative to the module: "pipeline/guard".
func (e entry) rel() string { return strings.TrimSuffix(e.path, "/") }

// layout is the parsed layout block.
type layout struct {
	entries []entry
	byRel   map[string]entry
}

var layerHeading = regexp.MustCompile(`^layer ([0-9]+) — (.+)$`)

// parseLayout reads the first code block after the "## Layout" heading of a README.
func parseLayout(readme string) (*layout, []string) {
	var errs []string
	lines := strings.Split(readme, "\n")
	start := slices.Index(lines, "## Layout")
	if start < 0 {
		return nil, []string{`README.md has no "## Layout" section`}
	}
	open := -1
	for i := start + 1; i < len(lines); i++ {
		if strings.HasPrefix(lines[i], "## ") {
			break
		}
		if strings.HasPrefix(lines[i], "```") {
			open = i
			break
		}
	}
	if open < 0 {
		return nil, []string{fmt.Sprintf("README.md:%d: the Layout section has no code block", start+1)}
	}
	l := &layout{byRel: map[string]entry{}}
	var cur *layer
	last := 0
	closed := false
	for i := open + 1; i < len(lines); i++ {
		s, n := lines[i], i+1
		if strings.HasPrefix(s, "```") {
			closed = true
			break
		}
		if strings.TrimSpace(s) == "" {
			continue
		}
		if strings.Contains(s, "\t") {
			errs = append(errs, fmt.Sprintf("README.md:%d: %q: use spaces, not tabs, in the layout block", n, s))
			continue
		}
		indent := len(s) - len(strings.TrimLeft(s, " "))
		switch {
		case indent == 0: // a heading
			cur = &layer{line: n, name: s}
			if m := layerHeading.FindStringSubmatch(s); m != nil {
				cur.n, _ = strconv.Atoi(m[1])
				cur.name = strings.TrimSpace(strings.SplitN(m[2], ":", 2)[0])
				if cur.n <= last {
					errs = append(errs, fmt.Sprintf("README.md:%d: %q: layers are listed lowest first, so this one needs a number above %d", n, s, last))
				}
				last = cur.n
			}
		case indent == 2: // an entry
			fields := strings.Fields(s)
			if len(fields) < 2 {
				errs = append(errs, fmt.Sprintf("README.md:%d: %q: an entry is a path and one line of description", n, s))
				continue
			}
			if cur == nil {
				errs = append(errs, fmt.Sprintf("README.md:%d: %q: an entry before any heading; put it under its layer", n, s))
				continue
			}
			desc := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(s), fields[0]))
			e := entry{path: fields[0], line: n, text: s, layer: cur, notGo: strings.HasPrefix(desc, "(not Go)")}
			if prev, ok := l.byRel[e.rel()]; ok {
				errs = append(errs, fmt.Sprintf("README.md:%d: %s is listed twice (also README.md:%d); keep one line", n, e.path, prev.line))
				continue
			}
			l.entries = append(l.entries, e)
			l.byRel[e.rel()] = e
		default: // a continuation of the entry above
			if len(l.entries) == 0 || l.entries[len(l.entries)-1].layer != cur {
				errs = append(errs, fmt.Sprintf("README.md:%d: %q: an indented line that continues no entry", n, s))
			}
		}
	}
	if !closed {
		errs = append(errs, fmt.Sprintf("README.md:%d: the layout block is never closed", open+1))
	}
	return l, errs
}

// pkg is one package of `go list ./...`.
type pkg struct {
	ImportPath     string
	Dir            string
	GoFiles        []string
	CgoFiles       []string
	IgnoredGoFiles []string // files of other build tags (faults, race) are checked too
	rel            string
}

// module lists the module's packages with the go command.
func module(t *testing.T) (root, path string, pkgs map[string]*pkg) {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
		t.Fatalf("go env GOMOD: %v (%q)", err, out)
	}
	root = filepath.Dir(strings.TrimSpace(string(out)))
	cmd := exec.Command("go", "list", "-m")
	cmd.Dir = root
	if out, err = cmd.Output(); err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	path = strings.TrimSpace(string(out))
	cmd = exec.Command("go", "list", "-e", "-json=ImportPath,Dir,GoFiles,CgoFiles,IgnoredGoFiles", "./...")
	cmd.Dir = root
	if out, err = cmd.Output(); err != nil {
		t.Fatalf("go list ./...: %v", err)
	}
	pkgs = map[string]*pkg{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		p := &pkg{}
		if err := dec.Decode(p); err != nil {
			t.Fatalf("go list ./...: %v", err)
		}
		p.rel = strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, path), "/")
		pkgs[p.rel] = p
	}
	return root, path, pkgs
}

func readLayout(t *testing.T, root string) *layout {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	l, errs := parseLayout(string(b))
	for _, e := range errs {
		t.Error(e)
	}
	if l == nil {
		t.FailNow()
	}
	return l
}

// checkPackages is part (a): the layout lists exactly the packages of `go list ./...`.
func checkPackages(l *layout, root string, pkgs map[string]*pkg) []string {
	var errs []string
	rels := make([]string, 0, len(pkgs))
	for r := range pkgs {
		rels = append(rels, r)
	}
	slices.Sort(rels)
	for _, r := range rels {
		e, ok := l.byRel[r]
		switch {
		case !ok:
			errs = append(errs, fmt.Sprintf("README.md: the layout has no line for %s/, a package of go list ./...: add %q under the layer it belongs to (a line of the form \"  %s/  what it holds\")", r, r+"/", r))
		case !e.dir():
			errs = append(errs, fmt.Sprintf("README.md:%d: %q: %s is a package; write it as a directory, %s/", e.line, e.text, r, r))
		case e.notGo:
			errs = append(errs, fmt.Sprintf("README.md:%d: %q: %s/ is a Go package; drop \"(not Go)\" and put it under its layer", e.line, e.text, r))
		case e.layer.n == 0:
			errs = append(errs, fmt.Sprintf("README.md:%d: %q: %s/ is a Go package under %q (README.md:%d), which is not a layer; move the line under a \"layer N — …\" heading", e.line, e.text, r, e.layer.name, e.layer.line))
		}
	}
	for _, e := range l.entries {
		if _, ok := pkgs[e.rel()]; ok {
			continue
		}
		fi, err := os.Stat(filepath.Join(root, filepath.FromSlash(e.rel())))
		switch {
		case err != nil:
			errs = append(errs, fmt.Sprintf("README.md:%d: %q: %s does not exist; fix the path or remove the line", e.line, e.text, e.path))
		case e.dir() && !fi.IsDir():
			errs = append(errs, fmt.Sprintf("README.md:%d: %q: %s is a file; write it without the final /", e.line, e.text, e.path))
		case !e.dir() && fi.IsDir():
			errs = append(errs, fmt.Sprintf("README.md:%d: %q: %s is a directory; write it with a final /", e.line, e.text, e.path))
		case e.dir() && !e.notGo:
			errs = append(errs, fmt.Sprintf("README.md:%d: %q: %s is not a package of go list ./...; fix the path, remove the line, or begin its description with \"(not Go)\"", e.line, e.text, e.path))
		}
	}
	return errs
}

// checkImports is part (b): no non-test file imports a package of a higher layer.
func checkImports(l *layout, root, mod string, pkgs map[string]*pkg) ([]string, error) {
	var errs []string
	rels := make([]string, 0, len(pkgs))
	for r := range pkgs {
		rels = append(rels, r)
	}
	slices.Sort(rels)
	fset := token.NewFileSet()
	for _, r := range rels {
		p := pkgs[r]
		from, ok := l.byRel[r]
		if !ok || from.layer.n == 0 {
			continue // part (a) reports it
		}
		files := slices.Concat(p.GoFiles, p.CgoFiles, p.IgnoredGoFiles)
		for _, name := range files {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, parser.ImportsOnly)
			if err != nil {
				return nil, err
			}
			for _, spec := range f.Imports {
				imp, _ := strconv.Unquote(spec.Path.Value)
				if imp != mod && !strings.HasPrefix(imp, mod+"/") {
					continue
				}
				to, ok := l.byRel[strings.TrimPrefix(strings.TrimPrefix(imp, mod), "/")]
				if !ok || to.layer.n <= from.layer.n {
					continue // unlisted: part (a) reports it
				}
				pos := fset.Position(spec.Pos())
				file, _ := filepath.Rel(root, pos.Filename)
				errs = append(errs, fmt.Sprintf("%s:%d imports %s, a higher layer: %s is in layer %d (%s, README.md:%d) and %s in layer %d (%s, README.md:%d). "+
					"A package may import only its own layer and lower ones: remove the import, or move README.md:%d %q to layer %d or higher (or README.md:%d %q to layer %d or lower) if that is where it belongs",
					filepath.ToSlash(file), pos.Line, imp,
					from.path, from.layer.n, from.layer.name, from.line,
					to.path, to.layer.n, to.layer.name, to.line,
					from.line, strings.TrimSpace(from.text), to.layer.n,
					to.line, strings.TrimSpace(to.text), from.layer.n))
			}
		}
	}
	return errs, nil
}

// TestLayoutListsEveryPackage holds README.md's layout block to `go list ./...`: every package
// has its line under a layer, and every line names a package, a file, or a directory marked
// "(not Go)" that exists.
func TestLayoutListsEveryPackage(t *testing.T) {
	root, _, pkgs := module(t)
	l := readLayout(t, root)
	for _, e := range checkPackages(l, root, pkgs) {
		t.Error(e)
	}
}

// TestNoUpwardImports holds the layering README.md declares: no non-test file of a package
// imports a package of a higher layer.
func TestNoUpwardImports(t *testing.T) {
	root, mod, pkgs := module(t)
	l := readLayout(t, root)
	errs, err := checkImports(l, root, mod, pkgs)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range errs {
		t.Error(e)
	}
}

// TestLayoutGrammar checks the parser and the checks themselves on a made-up module, so that a
// broken README is reported, and reported with the line to change.
func TestLayoutGrammar(t *testing.T) {
	const readme = "# X\n\n## Layout\n\n```\n" +
		"layer 1 — base: bottom\n" +
		"  low/        the low package\n" +
		"              continued\n" +
		"  notes.txt   (not Go) a file\n" +
		"  data/       (not Go) data\n" +
		"layer 2 — top: above\n" +
		"  high/       the high package\n" +
		"  ghost/      a package that does not exist\n" +
		"outside the layers — documents\n" +
		"  stray/      a Go package in the wrong group\n" +
		"```\n"
	l, errs := parseLayout(readme)
	if len(errs) > 0 {
		t.Fatalf("parse: %v", errs)
	}
	if got := len(l.entries); got != 6 {
		t.Fatalf("entries: %d, want 6", got)
	}
	if e := l.byRel["high"]; e.layer.n != 2 || e.layer.name != "top" || e.line != 12 {
		t.Fatalf("high: layer %d %q line %d", e.layer.n, e.layer.name, e.line)
	}

	root := t.TempDir()
	for _, d := range []string{"low", "high", "data", "stray", "missing"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(name, src string) {
		if err := os.WriteFile(filepath.Join(root, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("notes.txt", "")
	write("low/low.go", "package low\n\nimport _ \"example.com/m/high\"\n")
	write("low/low_test.go", "package low\n\nimport _ \"example.com/m/high\"\n")
	write("high/high.go", "package high\n\nimport _ \"example.com/m/low\"\n")
	pkgs := map[string]*pkg{
		"low":     {Dir: filepath.Join(root, "low"), GoFiles: []string{"low.go"}, IgnoredGoFiles: []string{"low_test.go"}, rel: "low"},
		"high":    {Dir: filepath.Join(root, "high"), GoFiles: []string{"high.go"}, rel: "high"},
		"stray":   {Dir: filepath.Join(root, "stray"), rel: "stray"},
		"missing": {Dir: filepath.Join(root, "missing"), rel: "missing"},
	}
	got := strings.Join(checkPackages(l, root, pkgs), "\n")
	for _, want := range []string{
		"no line for missing/",
		"README.md:13: \"  ghost/",
		"README.md:15: \"  stray/",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("package check does not say %q:\n%s", want, got)
		}
	}
	imps, err := checkImports(l, root, "example.com/m", pkgs)
	if err != nil {
		t.Fatal(err)
	}
	if len(imps) != 1 || !strings.HasPrefix(imps[0], "low/low.go:3 imports example.com/m/high") ||
		!strings.Contains(imps[0], "README.md:7") || !strings.Contains(imps[0], "README.md:12") {
		t.Errorf("import check: %q, want one upward import low → high naming README.md:7 and :12", imps)
	}

	for _, bad := range []string{
		"## Layout\n```\nlayer 2 — a: x\n  p/ d\nlayer 1 — b: y\n  q/ d\n```\n",
		"## Layout\n```\n  p/ before any heading\n```\n",
		"## Layout\n```\nlayer 1 — a: x\n  p/ d\n  p/ again\n```\n",
		"## Layout\n```\nlayer 1 — a: x\n  p/\n```\n",
	} {
		if _, errs := parseLayout(bad); len(errs) == 0 {
			t.Errorf("no error for the layout block\n%s", bad)
		}
	}
}
