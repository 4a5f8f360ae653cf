package collector

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/internal/servicetest"
)

// The TypeScript SDK's integration test, run by Node against this collector on the real broker.
// make test builds the SDK (npm ci, npm test) before the Go tests, so its compiled test exists.
func TestTypeScriptSDKAgainstRealCollector(t *testing.T) {
	sdk, _ := filepath.Abs(filepath.Join("..", "..", "sdk", "js"))
	script := filepath.Join(sdk, "dist-test", "test", "collector.integration.test.js")
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(script)
	}
	if err != nil {
		servicetest.Unavailable(t, "the built TypeScript SDK (make test builds it: cd sdk/js && npm ci && npm test)", err)
	}
	h := startWithClock(t, nil, time.Now) // the SDK stamps events with the real clock
	cmd := exec.Command(node, "--test", script)
	cmd.Dir = sdk
	cmd.Env = append(os.Environ(),
		"SHUKEI_TEST_COLLECTOR_URL="+h.url,
		"SHUKEI_TEST_COLLECTOR_TOKEN="+testToken,
		"SHUKEI_TEST_TENANT_ID=acme",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
	pass := regexp.MustCompile(`(?m)^# pass (\d+)$`).FindSubmatch(out)
	if pass == nil || string(pass[1]) == "0" || !strings.Contains(string(out), "# fail 0") || !strings.Contains(string(out), "# skipped 0") {
		t.Fatalf("the SDK's integration tests did not all run and pass:\n%s", out)
	}
	t.Logf("TypeScript SDK integration: %s tests passed", pass[1])
}

func TestCORSPreflight(t *testing.T) {
	h := start(t, nil)
	req, _ := http.NewRequest(http.MethodOptions, h.url+"/v1/events", nil)
	req.Header.Set("Origin", "https://app.example.com")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") ||
		resp.Header.Get("Access-Control-Expose-Headers") != "Retry-After" {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}

	only := start(t, func(c *config.Config) { c.Collector.AllowOrigins = []string{"https://app.example.com"} })
	for origin, want := range map[string]int{"https://app.example.com": http.StatusNoContent, "https://evil.example": http.StatusForbidden} {
		req, _ := http.NewRequest(http.MethodOptions, only.url+"/v1/events", nil)
		req.Header.Set("Origin", origin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("origin %s: %d, want %d", origin, resp.StatusCode, want)
		}
	}
}
