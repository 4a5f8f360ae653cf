// Package bench is Shukei's benchmarks beside their results (bench/results/, bench/README.md):
// Pipeline ('shukei bench pipeline') measures every role's throughput, memory and CPU against
// its baselines, and Reports ('shukei bench reports') the query service's report latency over
// millions of stored events. Both run from the module root, where their results land.
package bench
