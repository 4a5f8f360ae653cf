package registry_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/shukei/shukei/registry"
)

func TestWriteTenants(t *testing.T) {
	var b bytes.Buffer
	err := registry.WriteTenants(&b, []registry.Tenant{
		{ID: "acme", Status: registry.StatusTrial, Edition: "pro", SizeBand: "s", ContractEnd: time.Date(2027, 2, 28, 0, 0, 0, 0, time.UTC),
			TokenHashes: []string{"a", "b"},
			Consents: []registry.Consent{
				{Purpose: "external_consented", PolicyVersion: 1, Given: true},
				{Purpose: "policy", PolicyVersion: 2, Given: true},
				{Purpose: "marketing", PolicyVersion: 1},
			}},
		{ID: "dead", Status: registry.StatusTerminated, Edition: "pro", SizeBand: "m"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "TENANT  STATUS      EDITION  SIZE  CONTRACT END  TOKENS  CONSENTS\n" +
		"acme    trial       pro      s     2027-02-28    2       +external_consented@v1 +policy@v2 -marketing@v1\n" +
		"dead    terminated  pro      m     -             0       \n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestWriteTicketsSaysEachState(t *testing.T) {
	opened := time.Date(2026, 5, 1, 9, 0, 0, 0, time.FixedZone("JST", 9*3600))
	now := opened.Add(48 * time.Hour)
	var b bytes.Buffer
	err := registry.WriteTickets(&b, []registry.Ticket{
		{Tenant: "acme", ID: "SUP-1", OpenedAt: opened, ExpiresAt: opened.Add(14 * 24 * time.Hour), OpenedBy: "helpdesk"},
		{Tenant: "acme", ID: "SUP-2", OpenedAt: opened, ExpiresAt: opened.Add(14 * 24 * time.Hour), ClosedAt: opened.Add(time.Hour), OpenedBy: "helpdesk"},
		{Tenant: "beta", ID: "T-3", OpenedAt: opened, ExpiresAt: opened.Add(time.Hour), OpenedBy: "bob"},
		// Closed only after it had expired: it expired.
		{Tenant: "beta", ID: "T-4", OpenedAt: opened, ExpiresAt: opened.Add(time.Hour), ClosedAt: opened.Add(2 * time.Hour), OpenedBy: "bob"},
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	want := "TENANT  TICKET  STATE    OPENED                UNTIL                 BY        \n" +
		"acme    SUP-1   open     2026-05-01T00:00:00Z  2026-05-15T00:00:00Z  helpdesk  \n" +
		"acme    SUP-2   closed   2026-05-01T00:00:00Z  2026-05-01T01:00:00Z  helpdesk  \n" +
		"beta    T-3     expired  2026-05-01T00:00:00Z  2026-05-01T01:00:00Z  bob       \n" +
		"beta    T-4     expired  2026-05-01T00:00:00Z  2026-05-01T01:00:00Z  bob       \n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestTenantSetChangesOnlyWhatIsGiven(t *testing.T) {
	end := time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)
	x := registry.Tenant{ID: "acme", Status: registry.StatusTrial, Edition: "standard", SizeBand: "s", ContractEnd: end, TokenHashes: []string{"h"}}
	x.Set(registry.Tenant{ID: "other", Edition: "pro"})
	if x.ID != "acme" || x.Status != registry.StatusTrial || x.Edition != "pro" || x.SizeBand != "s" || !x.ContractEnd.Equal(end) || len(x.TokenHashes) != 1 {
		t.Errorf("edition only: %+v", x)
	}
	later := end.AddDate(1, 0, 0)
	x.Set(registry.Tenant{Status: registry.StatusContracted, SizeBand: "l", ContractEnd: later})
	if x.Status != registry.StatusContracted || x.Edition != "pro" || x.SizeBand != "l" || !x.ContractEnd.Equal(later) {
		t.Errorf("status, size band and contract end: %+v", x)
	}
}

func TestParseTTL(t *testing.T) {
	for in, want := range map[string]time.Duration{"14d": 14 * 24 * time.Hour, "1d": 24 * time.Hour, "36h": 36 * time.Hour, "90m": 90 * time.Minute} {
		if got, err := registry.ParseTTL(in); err != nil || got != want {
			t.Errorf("ParseTTL(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for in, msg := range map[string]string{
		"0d":  `"0d": want a positive number of days such as 14d`,
		"-2d": `"-2d": want a positive number of days such as 14d`,
		"xd":  `"xd": want a positive number of days such as 14d`,
		"abc": `"abc": want days (14d) or a duration (36h)`,
		"":    `"": want days (14d) or a duration (36h)`,
	} {
		if _, err := registry.ParseTTL(in); err == nil || err.Error() != msg {
			t.Errorf("ParseTTL(%q): %v, want %s", in, err, msg)
		}
	}
}

// Admin.OpenTicket reads --ttl itself: a bad one fails, naming the flag, before the registry is
// asked.
func TestOpenTicketTTL(t *testing.T) {
	var b bytes.Buffer
	_, want := registry.ParseTTL("fortnight")
	err := registry.Admin{Out: &b}.OpenTicket(context.Background(), "acme", "T-1", "fortnight", "")
	if err == nil || err.Error() != "--ttl: "+want.Error() || b.Len() != 0 {
		t.Errorf("%v (want --ttl: %v), wrote %q", err, want, b.String())
	}
}
