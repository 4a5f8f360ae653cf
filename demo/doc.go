// Package demo is Shukei's main job end to end ('shukei demo', run by 'make demo'): it prepares
// the services, runs every role on synthetic usage of many tenants and prints what each kind of
// user of Shukei gets, then serves the web page. Get and ProbeLatency are shared with the
// benchmarks.
package demo
