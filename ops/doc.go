// Package ops is the process plumbing every long-running role of Shukei shares (the collector,
// the processor, the aggregator, the query service and retention's scheduled mode): the metric
// registry with the Go and process collectors; the ops listener serving /metrics, /healthz and
// /readyz; one way to serve an http.Server until the context ends and then shut it down
// within a timeout; the oklog/run group that runs a role with its registry cache and its ops
// listener and stops them together; opening and awaiting ClickHouse; the master key; each
// role's own ClickHouse users and their keys (promise 16); the trails' keys and scheduled
// anchors (promise 17); and the settings several roles derive from the policy (k, the
// external_aggregate budget).
//
// ops imports no role package: the roles import it.
package ops
