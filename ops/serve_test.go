package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/shukei/shukei/config"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		res, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			return res.StatusCode, string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
	}
}

// Serve drains the requests in flight when its context ends, and says so when they outlast
// its timeout.
func TestServeShutsDownWithinItsTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	entered := make(chan struct{}, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	})
	for _, slow := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- Serve(ctx, &http.Server{Handler: h}, ln, 200*time.Millisecond) }()
		if code, body := get(t, "http://"+ln.Addr().String()+"/"); code != 200 || body != "ok" {
			t.Fatalf("GET /: %d %q", code, body)
		}
		if slow {
			go func() { _, _ = http.Get("http://" + ln.Addr().String() + "/slow") }()
			<-entered
		}
		cancel()
		err = <-done
		var se *ShutdownError
		if slow != errors.As(err, &se) || (!slow && err != nil) {
			t.Errorf("slow request in flight %v: Serve returned %v", slow, err)
		}
	}
}

// RunRole serves /metrics, /healthz and /readyz while the role runs, and stops with it.
func TestRunRoleServesOpsWhileTheRoleRuns(t *testing.T) {
	addr := freeAddr(t)
	ready := errors.New("not yet")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunRole(ctx, Role{Listen: addr, Metrics: NewRegistry(), Ready: func() error { return ready }},
			func(ctx context.Context) error { <-ctx.Done(); return nil })
	}()
	if code, body := get(t, "http://"+addr+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, "http://"+addr+"/readyz"); code != 503 || !strings.Contains(body, "not yet") {
		t.Errorf("/readyz while not ready: %d %q", code, body)
	}
	if code, body := get(t, "http://"+addr+"/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") || !strings.Contains(body, "process_") {
		t.Errorf("/metrics: %d\n%s", code, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("RunRole after its context ended: %v", err)
	}

	// A role that fails stops the ops listener, and its error is RunRole's.
	boom := errors.New("boom")
	if err := RunRole(context.Background(), Role{Listen: freeAddr(t), Metrics: NewRegistry(), Ready: func() error { return nil }},
		func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("RunRole of a failing role: %v", err)
	}
	// An ops listener that cannot listen stops the role, named as the role's when Name is set.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = RunRole(context.Background(), Role{Listen: ln.Addr().String(), Metrics: NewRegistry(), Ready: func() error { return nil }, Name: "query"},
		func(ctx context.Context) error { <-ctx.Done(); return nil })
	if err == nil || !strings.HasPrefix(err.Error(), "query ops listener: listen on "+ln.Addr().String()) {
		t.Errorf("RunRole with its ops address taken: %v", err)
	}
}

// fakeRole records what OpenAndRun did with it.
type fakeRole struct {
	ran, closed bool
	err         error
}

func (r *fakeRole) Run(context.Context) error { r.ran = true; return r.err }
func (r *fakeRole) Close()                    { r.closed = true }

func TestOpenAndRunRunsThenCloses(t *testing.T) {
	failed := errors.New("run failed")
	r := &fakeRole{err: failed}
	open := func(context.Context, config.Config, *slog.Logger) (*fakeRole, error) { return r, nil }
	if err := OpenAndRun(context.Background(), config.Default(), nil, open); err != failed || !r.ran || !r.closed {
		t.Fatalf("err %v, ran %v, closed %v: want Run's error after Run and Close", err, r.ran, r.closed)
	}
	refused := errors.New("open failed")
	open = func(context.Context, config.Config, *slog.Logger) (*fakeRole, error) { return nil, refused }
	if err := OpenAndRun(context.Background(), config.Default(), nil, open); err != refused {
		t.Fatalf("err %v, want Open's", err)
	}
}

func TestOpenAndRunRetriesAnOpenCutByTheServer(t *testing.T) {
	// What clickhouse-go returns when the server is killed between the ping and the first
	// answer of a role's start-up read.
	dropped := fmt.Errorf("read tenant registry: %w", fmt.Errorf("query processing: failed to read first block packet from 127.0.0.1:19100 (conn_id=1): %w", fmt.Errorf("read: %w", io.EOF)))
	r := &fakeRole{}
	tries := 0
	open := func(context.Context, config.Config, *slog.Logger) (*fakeRole, error) {
		tries++
		if tries < 3 {
			return nil, dropped
		}
		return r, nil
	}
	if err := OpenAndRun(context.Background(), config.Default(), nil, open); err != nil || tries != 3 || !r.ran || !r.closed {
		t.Fatalf("err %v after %d opens (ran %v, closed %v): want the third open run", err, tries, r.ran, r.closed)
	}

	// A server that answered with an error, or a refused configuration, is not asked again.
	for _, refused := range []error{
		fmt.Errorf("read tenant registry: %w", &clickhouse.Exception{Code: 60, Message: "Table t_registry.tenants doesn't exist"}),
		errors.New("set clickhouse.role_key_file"),
	} {
		tries = 0
		open = func(context.Context, config.Config, *slog.Logger) (*fakeRole, error) { tries++; return nil, refused }
		if err := OpenAndRun(context.Background(), config.Default(), nil, open); err != refused || tries != 1 {
			t.Errorf("%v: err %v after %d opens, want it returned after one", refused, err, tries)
		}
	}

	// Nor is anything once the role is asked to stop.
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	tries = 0
	open = func(context.Context, config.Config, *slog.Logger) (*fakeRole, error) { tries++; return nil, dropped }
	if err := OpenAndRun(ctx, config.Default(), nil, open); !errors.Is(err, io.EOF) || tries < 2 || tries > 4 {
		t.Errorf("err %v after %d opens: want the last open's error once ctx ends, after 2 to 4 opens (250 ms, then 500 ms apart)", err, tries)
	}
}

func TestUnreachable(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{io.EOF, true},
		{fmt.Errorf("x: %w", syscall.ECONNREFUSED), true},
		{&net.OpError{Op: "dial", Err: syscall.ECONNRESET}, true},
		{fmt.Errorf("write: %w", syscall.EPIPE), true},
		{fmt.Errorf("x: %w", context.Canceled), false},
		{&clickhouse.Exception{Code: 516, Message: "Authentication failed"}, false},
		{errors.New("no such tenant"), false},
	} {
		if got := Unreachable(c.err); got != c.want {
			t.Errorf("Unreachable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
