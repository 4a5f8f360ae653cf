//go:build faults || cluster

package faults

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shukei/shukei/internal/freeport"
	"github.com/shukei/shukei/internal/servicetest"
)

// role is one Shukei role run as a subprocess of the real binary, on a fixed address, killed
// and started again by the test. Only one instance of a role runs at a time (several instances
// of one Shukei role are several roles, each with its name and the command in sub).
type role struct {
	name   string
	sub    string // the shukei command; name when empty
	bin    string
	dir    string
	env    []string
	listen string // the address its /healthz answers on

	mu    sync.Mutex
	cur   *proc
	all   []*proc
	kills int
}

// proc is one instance of a role.
type proc struct {
	n    int
	cmd  *exec.Cmd
	out  *servicetest.Output
	done chan struct{}
	err  error // set before done closes
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) exit() string {
	switch {
	case p.running():
		return "still running"
	case p.err == nil:
		return "exit status 0"
	default:
		return p.err.Error()
	}
}

// freeAddr returns a loopback address nothing listens on (the roles keep theirs across
// restarts, as behind a load balancer or a service name).
func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// start starts a new instance and waits until /healthz answers.
func (r *role) start(t *testing.T) *proc {
	t.Helper()
	r.mu.Lock()
	p := &proc{n: len(r.all), out: &servicetest.Output{}, done: make(chan struct{})}
	sub := r.sub
	if sub == "" {
		sub = r.name
	}
	p.cmd = exec.Command(r.bin, sub)
	p.cmd.Dir, p.cmd.Env = r.dir, r.env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	err := p.cmd.Start()
	if err == nil {
		r.all = append(r.all, p)
		r.cur = p
	}
	r.mu.Unlock()
	if err != nil {
		errorf(t, "start %s: %v", r.name, err)
		return nil
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + r.listen + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if !p.running() {
			errorf(t, "%s instance %d exited during start-up: %s\n%s", r.name, p.n, p.exit(), p.out.Tail(40))
			return p
		}
		if time.Now().After(deadline) {
			errorf(t, "%s instance %d: /healthz on %s does not answer after 60s", r.name, p.n, r.listen)
			return p
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// kill SIGKILLs the running instance and waits for it to be gone.
func (r *role) kill(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	p := r.cur
	r.mu.Unlock()
	if p == nil {
		return
	}
	if !p.running() {
		errorf(t, "%s instance %d had exited before its SIGKILL: %s\n%s", r.name, p.n, p.exit(), p.out.Tail(40))
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	r.mu.Lock()
	r.kills++
	r.mu.Unlock()
}

// stop SIGTERMs the running instance and reports whether it exited 0 within 30 s.
func (r *role) stop(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	p := r.cur
	r.mu.Unlock()
	if p == nil || !p.running() {
		if p != nil {
			errorf(t, "%s instance %d had exited before the end: %s", r.name, p.n, p.exit())
		}
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			errorf(t, "%s instance %d did not exit cleanly on SIGTERM: %s\n%s", r.name, p.n, p.exit(), p.out.Tail(40))
		}
	case <-time.After(30 * time.Second):
		errorf(t, "%s instance %d did not exit within 30s of SIGTERM", r.name, p.n)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// killer SIGKILLs the role n times at random moments spread over the span from now (at
// least 1.5 s apart), starting it again at once each time, as a supervisor would.
func (r *role) killer(t *testing.T, rnd *rand.Rand, n int, span time.Duration, log func(string, ...any)) {
	began := time.Now()
	at := make([]time.Duration, n)
	for i := range at {
		at[i] = 2*time.Second + time.Duration(rnd.Int64N(int64(span-2*time.Second)))
	}
	slices.Sort(at)
	for i := 1; i < n; i++ {
		at[i] = max(at[i], at[i-1]+1500*time.Millisecond)
	}
	for i, d := range at {
		time.Sleep(time.Until(began.Add(d)))
		r.kill(t)
		log("SIGKILL %s (%d of %d)", r.name, i+1, n)
		r.start(t)
	}
}

// count counts lines containing sub over every instance's output.
func (r *role) count(sub string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, p := range r.all {
		n += p.out.Count(sub)
	}
	return n
}

// lines are the lines containing sub over every instance's output.
func (r *role) lines(sub string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, p := range r.all {
		out = append(out, p.out.Lines(sub)...)
	}
	return out
}

func (r *role) dump(t *testing.T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.all {
		t.Logf("--- %s instance %d (%s) ---\n%s", r.name, p.n, p.exit(), p.out.Tail(60))
	}
}

func (r *role) cleanup() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.all {
		if p.running() {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// chProxy sits between the roles and ClickHouse. While failing is set it breaks every
// connection that starts an INSERT: half of them at once (the insert never reaches the
// server), half after letting up to 30 ms of it through (the insert may or may not have been
// stored when the client sees the error: the ambiguous case retries must survive). Reads pass.
type chProxy struct {
	ln       net.Listener
	upstream string
	failing  atomic.Bool
	broken   atomic.Int64 // inserts broken
	rnd      *rand.Rand
	rmu      sync.Mutex
	wg       sync.WaitGroup
}

var insertMark = []byte("INSERT INTO")

func newCHProxy(t *testing.T, upstream string, seed uint64) *chProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &chProxy{ln: ln, upstream: upstream, rnd: rand.New(rand.NewPCG(seed, 3))}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() { _ = ln.Close(); p.wg.Wait() })
	return p
}

func (p *chProxy) addr() string { return p.ln.Addr().String() }

func (p *chProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.pipe(c)
	}
}

func (p *chProxy) delay() time.Duration {
	p.rmu.Lock()
	defer p.rmu.Unlock()
	if p.rnd.IntN(2) == 0 {
		return 0
	}
	return time.Duration(p.rnd.Int64N(int64(30 * time.Millisecond)))
}

func (p *chProxy) pipe(c net.Conn) {
	u, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
	if err != nil {
		_ = c.Close() // ClickHouse is down: the client sees the connection refused, as without a proxy
		return
	}
	var once sync.Once
	closeBoth := func() { once.Do(func() { _ = c.Close(); _ = u.Close() }) }
	go func() { _, _ = io.Copy(c, u); closeBoth() }()
	buf := make([]byte, 64<<10)
	var carry []byte // the end of the previous read, for a mark split across reads
	for {
		n, err := c.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if p.failing.Load() && bytes.Contains(append(carry, chunk...), insertMark) {
				p.broken.Add(1)
				if d := p.delay(); d > 0 {
					_, _ = u.Write(chunk)
					go func() { time.Sleep(d); closeBoth() }()
					_, _ = io.Copy(u, io.LimitReader(c, 1<<30))
				}
				closeBoth()
				return
			}
			if _, werr := u.Write(chunk); werr != nil {
				closeBoth()
				return
			}
			keep := min(len(chunk), len(insertMark)-1)
			carry = append(carry[:0], chunk[len(chunk)-keep:]...)
		}
		if err != nil {
			closeBoth()
			return
		}
	}
}

// services runs scripts/services.sh with an argument (restart-clickhouse, restart-kafka).
func services(t *testing.T, root, arg string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	began := time.Now()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "services.sh"), arg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		fatalf(t, "scripts/services.sh %s: %v\n%s", arg, err, out)
	}
	return time.Since(began)
}

// The whole-stack tests print every role's log when they fail, which buries the failures
// themselves far above the end of the output (and CI shows its end). errorf and fatalf report
// as t.Errorf and t.Fatalf do and remember the message; summarise, registered first, repeats
// every remembered failure last.
var (
	failuresMu sync.Mutex
	failures   = map[string][]string{}
)

func remember(t *testing.T, format string, args ...any) {
	root, _, _ := strings.Cut(t.Name(), "/")
	failuresMu.Lock()
	failures[root] = append(failures[root], fmt.Sprintf(format, args...))
	failuresMu.Unlock()
}

func errorf(t *testing.T, format string, args ...any) {
	t.Helper()
	remember(t, format, args...)
	t.Errorf(format, args...)
}

func fatalf(t *testing.T, format string, args ...any) {
	t.Helper()
	remember(t, format, args...)
	t.Fatalf(format, args...)
}

// summarise repeats, at the very end of a failed test's output, every failure errorf and
// fatalf reported (call it first in the test: cleanups run last-registered first).
func summarise(t *testing.T) {
	t.Cleanup(func() {
		failuresMu.Lock()
		msgs := failures[t.Name()]
		delete(failures, t.Name())
		failuresMu.Unlock()
		if !t.Failed() {
			return
		}
		if len(msgs) == 0 {
			t.Logf("FAILED (by a check that does not use errorf/fatalf: see above)")
			return
		}
		for i, m := range msgs {
			// One line each: make's filter keeps only lines that name a test file.
			m = strings.Join(strings.Fields(m), " ")
			if len(m) > 600 {
				m = m[:600] + "…"
			}
			t.Logf("FAILED %d of %d: %s", i+1, len(msgs), m)
		}
	})
}
