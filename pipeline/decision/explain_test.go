package decision

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shukei/shukei/event"
)

// An event of any age can be explained; one the pipeline would reject never reaches the policy.
func TestInspectToExplain(t *testing.T) {
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	old := `{"event_id":"3c4d5e6f-7a8b-4c9d-8e0f-2a3b4c5d6e7f","tenant_id":"acme","occurred_at":"2016-06-01T10:00:00Z",
"schema":"settings/v1","source":"web","user":"u-1","client":{"os":"windows","os_version":"11","device_kind":"desktop"},
"data":{"setting_key":"notification.digest","value":"weekly","customization_present":true,"customization_count":2}}`
	ev, err := InspectToExplain([]byte(old), now)
	if err != nil || ev.TenantID != "acme" || !ev.OccurredAt.Equal(time.Date(2016, 6, 1, 10, 0, 0, 0, time.UTC)) {
		t.Fatalf("a ten-year-old event: %+v %v", ev, err)
	}
	_, err = InspectToExplain([]byte(`{"event_id":"x"}`), now)
	var rej *event.Rejection
	if !errors.As(err, &rej) || !strings.HasPrefix(err.Error(), "the event is rejected before the policy sees it: ") {
		t.Errorf("an invalid event: %v", err)
	}
	future := strings.Replace(old, "2016-06-01T10:00:00Z", "2026-06-03T00:00:00Z", 1)
	if _, err := InspectToExplain([]byte(future), now); err == nil {
		t.Error("an event from two days ahead was explained")
	}
}
