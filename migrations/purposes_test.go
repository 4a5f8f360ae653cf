package migrations_test

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/shukei/shukei/migrations"
	"github.com/shukei/shukei/policy"
)

var (
	sqlPurposeBit = regexp.MustCompile(`(?i)bitAnd\(\s*purposes\s*,\s*(\d+)\s*\)`)
	sqlPurposeDB  = regexp.MustCompile(`\$\{db\}_([a-z_]+?)(_gated)?\.`)
)

// The migrations' views select each purpose's events with the purpose's bit written out
// (bitAnd(purposes, 4)), and an applied migration is never edited (its checksum is recorded in
// every deployed database), so they cannot call policy.Purpose.SQL. Instead: every statement
// that writes a purpose's bit writes into one purpose's database, and the bit is that
// purpose's in the policy.
func TestPurposeBitsArePolicys(t *testing.T) {
	ms, err := migrations.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range ms {
		k, errs := purposeBits(m.SQL)
		n += k
		for _, err := range errs {
			t.Errorf("%04d_%s: %v", m.Version, m.Name, err)
		}
	}
	if n == 0 {
		t.Fatal("no purpose bit found in the migrations: the test reads nothing")
	}
	t.Logf("%d purpose bits in the migrations, each the policy's", n)
}

// The check itself finds a wrong bit, a view of an unknown purpose and a statement over two.
func TestPurposeBitsCheck(t *testing.T) {
	for sql, want := range map[string]string{
		"CREATE MATERIALIZED VIEW ${db}_marketing.a_mv TO ${db}_marketing.a AS SELECT 1 FROM ${db}.events WHERE bitAnd(purposes, 4) != 0": "",
		"CREATE MATERIALIZED VIEW ${db}_marketing.a_mv TO ${db}_marketing.a AS SELECT 1 FROM ${db}.events WHERE bitAnd(purposes, 2) != 0": "the policy's bit of marketing is 4",
		"INSERT INTO ${db}_nosuch.a SELECT 1 FROM ${db}.events WHERE bitAnd(purposes, 2) != 0":                                            "which the policy does not know",
		"INSERT INTO ${db}_marketing.a SELECT 1 FROM ${db}_support.b WHERE bitAnd(purposes, 4) != 0":                                      "2 purpose databases",
	} {
		_, errs := purposeBits(sql)
		got := fmt.Sprint(errs)
		if want == "" && len(errs) > 0 || want != "" && !strings.Contains(got, want) {
			t.Errorf("%s: %v, want %q", sql, errs, want)
		}
	}
}

// purposeBits checks the purpose bits of one migration, returning how many it found.
func purposeBits(sql string) (n int, errs []error) {
	for _, stmt := range strings.Split(sql, ";") {
		bits := sqlPurposeBit.FindAllStringSubmatch(stmt, -1)
		if len(bits) == 0 {
			continue
		}
		purposes := map[string]bool{}
		for _, db := range sqlPurposeDB.FindAllStringSubmatch(stmt, -1) {
			purposes[db[1]] = true
		}
		if len(purposes) != 1 {
			errs = append(errs, fmt.Errorf("a statement selects by purpose bit but writes into %d purpose databases, want one: %.80q", len(purposes), strings.TrimSpace(stmt)))
			continue
		}
		for name := range purposes {
			p, err := policy.ParsePurpose(name)
			if err != nil {
				errs = append(errs, fmt.Errorf("database of %q, which the policy does not know: %w", name, err))
				continue
			}
			for _, b := range bits {
				n++
				if v, _ := strconv.Atoi(b[1]); v != int(p.Bit()) {
					errs = append(errs, fmt.Errorf("%s in %s's view, but the policy's bit of %s is %d (%s)", b[0], name, name, p.Bit(), p.SQL("purposes")))
				}
			}
		}
	}
	return n, errs
}
