package policy

import (
	"bytes"
	"errors"
	"io/fs"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestCheckEmbedded(t *testing.T) {
	var b bytes.Buffer
	if err := CheckEmbedded(&b); err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`^ok  v1 "[^"]+": 7 purposes, 6 categories, k=5\nok  v2 "[^"]+": 7 purposes, 6 categories, k=5\n$`)
	if !want.MatchString(b.String()) {
		t.Errorf("got\n%s", b.String())
	}
}

func TestCheckFilesPrintsEachAndFailsOnAnyBad(t *testing.T) {
	var b bytes.Buffer
	if err := CheckFiles(&b, []string{"v1.yaml", "testdata/k_default.good.yaml"}); err != nil {
		t.Fatalf("good files: %v\n%s", err, b.String())
	}
	if !strings.HasPrefix(b.String(), `ok  v1.yaml: v1 "`) || strings.Count(b.String(), "ok  ") != 2 {
		t.Errorf("good files:\n%s", b.String())
	}

	b.Reset()
	err := CheckFiles(&b, []string{"testdata/retention_zero.bad.yaml", "v1.yaml", "testdata/nosuch.yaml"})
	if !errors.Is(err, ErrInvalid) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("bad files: %v", err)
	}
	out := b.String()
	for _, want := range []string{
		"bad testdata/retention_zero.bad.yaml:\ninvalid policy v1 (",
		"retention.dlq_days: must be between 1 and 3650 days, got 0\n",
		"\nok  v1.yaml: v1 \"",
		"\nbad testdata/nosuch.yaml:\nopen testdata/nosuch.yaml: no such file or directory\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteStatus(t *testing.T) {
	v, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := v.WriteStatus(&b); err != nil {
		t.Fatal(err)
	}
	want := "VERSION  ENACTED     CONSENT     IN FORCE FROM  \n" +
		"v1       2022-08-01  not needed  the beginning  \n" +
		"v2       " + v.Policy(2).Enacted.Format(time.DateOnly) + "  required    not activated  \n"
	if b.String() != want {
		t.Errorf("before v2's activation: got\n%s\nwant\n%s", b.String(), want)
	}
	if err := v.Activate(2, time.Date(2027, 1, 1, 9, 0, 0, 0, time.FixedZone("JST", 9*3600))); err != nil {
		t.Fatal(err)
	}
	b.Reset()
	if err := v.WriteStatus(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "  required    2027-01-01T00:00:00Z  \n") {
		t.Errorf("after v2's activation:\n%s", b.String())
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]int{"2": 2, "v2": 2, "v10": 10} {
		if got, err := ParseVersion(in); err != nil || got != want {
			t.Errorf("ParseVersion(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"x", "", "vv2", "2.0"} {
		if _, err := ParseVersion(in); err == nil || err.Error() != `version "`+in+`": want a number such as 2 (or v2)` {
			t.Errorf("ParseVersion(%q): %v", in, err)
		}
	}
}
