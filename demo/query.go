package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shukei/shukei/audit"
	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/query"
	"github.com/shukei/shukei/query/principal"
)

// demoPrincipals are the users of the query service the demo signs in as: the product team
// (an employee acting for the internal purposes), a research agency under contract (interview
// selection only, until its contract ends) and a statistics partner outside the company.
var demoPrincipals = []principal.Principal{
	{ID: "product-team", Kind: principal.Employee, Purposes: []string{"service_improvement", "marketing", "follow_up", "interview_selection"}},
	{ID: "research-agency", Kind: principal.Contractor, Purposes: []string{"interview_selection"}, ContractRef: "C-DEMO-2026-01"},
	{ID: "stats-partner", Kind: principal.Partner, Purposes: []string{"external_aggregate"}},
}

// demoQuery starts the query service, signs the demo principals in with fresh tokens, prints
// what each of them reads, a refusal, and the verified audit chain. It returns the page's
// address, the tokens, and a function that stops the service.
func demoQuery(ctx context.Context, out io.Writer, cfg config.Config, log *slog.Logger) (addr string, tokens map[string]string, stop func(), err error) {
	conn, err := ops.OpenClickHouse(ctx, cfg.ClickHouse)
	if err != nil {
		return "", nil, nil, err
	}
	defer conn.Close()
	store := principal.New(conn, cfg.ClickHouse.Database)
	tokens = map[string]string{}
	for _, p := range demoPrincipals {
		token, hash := principal.NewToken()
		if p.Kind == principal.Contractor {
			p.Expires = time.Now().UTC().AddDate(0, 1, 0).Truncate(time.Second)
		}
		p.TokenHashes = []string{hash}
		if _, err := store.Get(ctx, p.ID); errors.Is(err, principal.ErrNotFound) {
			token, err = store.Add(ctx, p)
			if err != nil {
				return "", nil, nil, err
			}
		} else if err != nil {
			return "", nil, nil, err
		} else if _, err := store.Update(ctx, p.ID, func(old *principal.Principal) error { *old = p; return nil }); err != nil {
			return "", nil, nil, err
		}
		tokens[p.ID] = token
	}

	// The page is served on query.listen when it is free, else on any free loopback port.
	qcfg := cfg
	ln, lerr := net.Listen("tcp", cfg.Query.Listen)
	if lerr != nil {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", nil, nil, err
		}
	}
	qcfg.Query.Listen, qcfg.Query.OpsListen = ln.Addr().String(), "127.0.0.1:0"
	ln.Close()
	srvCtx, cancel := context.WithCancel(ctx)
	started := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- query.Serve(srvCtx, qcfg, log, started) }()
	select {
	case addr = <-started:
	case err := <-done:
		cancel()
		return "", nil, nil, fmt.Errorf("query service: %w", err)
	}
	stop = func() { cancel(); <-done }
	base := "http://" + addr
	fmt.Fprintf(out, "\n-- Query service at %s: each principal reads only the reports of its purposes\n", base)
	fmt.Fprintln(out, "   principals: product-team (employee: service_improvement, marketing, follow_up, interview_selection),")
	fmt.Fprintln(out, "   research-agency (contractor C-DEMO-2026-01: interview_selection), stats-partner (partner: external_aggregate)")

	show := func(who, title, report string, q url.Values, cols ...string) error {
		res, status, err := Get(ctx, base, tokens[who], report, q)
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return fmt.Errorf("%s %s: %d %s", who, report, status, res.Error)
		}
		k := ""
		if res.K > 0 {
			k = fmt.Sprintf(", every value from segments of ≥%d tenants", res.K)
		}
		fmt.Fprintf(out, "\n   %s — %s reads %s for %s (%d rows%s; audit record #%d)\n", title, who, report, q.Get("purpose"), len(res.Rows), k, res.AuditSeq)
		tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "   "+strings.ToUpper(strings.Join(cols, "\t"))+"\t")
		for _, row := range res.Rows {
			vals := make([]string, len(cols))
			for i, c := range cols {
				vals[i] = cell(row[c])
			}
			fmt.Fprintln(tw, "   "+strings.Join(vals, "\t")+"\t")
		}
		return tw.Flush()
	}
	steps := []struct {
		who, title, report string
		q                  url.Values
		cols               []string
	}{
		{"product-team", "Feature ranking", "feature_ranking",
			url.Values{"purpose": {"service_improvement"}, "week": {"last_week"}, "by_edition": {"false"}, "limit": {"8"}},
			[]string{"rank", "feature", "tenants", "users", "uses", "tenants_prev_week", "trend_pct"}},
		{"product-team", "Contracted vs trial", "contract_comparison",
			url.Values{"purpose": {"marketing"}, "week": {"last_week"}, "weeks": {"2"}, "limit": {"4"}},
			[]string{"status", "feature", "tenants", "active_tenants", "adoption_pct", "uses_per_tenant"}},
		{"product-team", "Follow-up candidates", "tenant_signals",
			url.Values{"purpose": {"follow_up"}, "limit": {"6"}},
			[]string{"tenant_id", "status", "edition", "last_active", "features_adopted", "events_this_week", "events_last_week", "signal", "suggestion"}},
		{"research-agency", "Interview candidates", "interview_candidates",
			url.Values{"purpose": {"interview_selection"}, "limit": {"6"}},
			[]string{"rank", "tenant_id", "status", "edition", "size_band", "features_used", "active_users", "active_days", "score"}},
		{"stats-partner", "Differentially private release", "dp_releases",
			url.Values{"purpose": {"external_aggregate"}, "metric": {"feature_adoption"}, "limit": {"6"}},
			[]string{"window_start", "cell", "value", "ci95_low", "ci95_high", "stddev", "epsilon", "l0", "linf", "mechanism"}},
		{"stats-partner", "Privacy budget", "dp_budget",
			url.Values{"purpose": {"external_aggregate"}},
			[]string{"month", "epsilon_budget", "epsilon_spent", "epsilon_left", "delta_budget", "delta_spent"}},
	}
	for _, s := range steps {
		if err := show(s.who, s.title, s.report, s.q, s.cols...); err != nil {
			stop()
			return "", nil, nil, err
		}
	}

	// A refusal: the agency's grant does not name marketing.
	res, status, err := Get(ctx, base, tokens["research-agency"], "contract_comparison", url.Values{"purpose": {"marketing"}})
	if err != nil {
		stop()
		return "", nil, nil, err
	}
	fmt.Fprintf(out, "\n   Refused — research-agency asks contract_comparison for marketing: %d %s (audit record #%d)\n", status, res.Error, res.AuditSeq)

	n, verr := audit.New(conn, cfg.ClickHouse.Database).Verify(ctx)
	chain := "verified"
	if verr != nil {
		chain = verr.Error()
	}
	fmt.Fprintf(out, "\n   audit log: %d records, hash chain %s ('shukei audit report --principal research-agency --month %s' lists what the contractor read)\n",
		n, chain, time.Now().UTC().Format("2006-01"))
	return addr, tokens, stop, nil
}

// Result is a report as the query service answers it (JSON).
type Result struct {
	K        int              `json:"k"`
	Rows     []map[string]any `json:"rows"`
	AuditSeq uint64           `json:"audit_seq"`
	Error    string           `json:"error"`
}

// Get requests report from the query service at base with token and the query q, and returns
// the decoded answer with its HTTP status.
func Get(ctx context.Context, base, token, report string, q url.Values) (Result, int, error) {
	var res Result
	req, err := http.NewRequestWithContext(ctx, "GET", base+"/v1/reports/"+report+"?"+q.Encode(), nil)
	if err != nil {
		return res, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return res, 0, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return res, resp.StatusCode, fmt.Errorf("%s: %w", report, err)
	}
	return res, resp.StatusCode, nil
}

func cell(v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case float64:
		switch {
		case x == float64(int64(x)):
			return fmt.Sprintf("%d", int64(x))
		case x >= 100 || x <= -100:
			return fmt.Sprintf("%.0f", x)
		case x > 1e-3 || x < -1e-3:
			return fmt.Sprintf("%.3g", x)
		}
		return fmt.Sprintf("%.2g", x)
	case string:
		if t, err := time.Parse(time.RFC3339, x); err == nil {
			return t.Format("2006-01-02 15:04")
		}
		return x
	}
	return fmt.Sprint(v)
}
