// Package dashboards holds no code. Its folder has the Prometheus configuration and alert rules
// (prometheus/), the Grafana provisioning and dashboards (grafana/) that docker-compose.yml
// mounts, and the tests that keep them consistent with each other, with the Compose stack, with
// the metrics the roles export and with the query service: Grafana reads Shukei's data only
// through the query service's reports, as the principal grafana whose grant names only the
// aggregate purposes (promise 10), and reports_test.go runs every report panel's request
// against the real service as that principal.
package dashboards
