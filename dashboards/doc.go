// Package dashboards holds no code. Its folder has the Prometheus configuration and alert rules
// (prometheus/), the Grafana provisioning and dashboards (grafana/) that docker-compose.yml
// mounts, and the tests that keep them consistent with each other, with the Compose stack and
// with the metrics the roles export.
package dashboards
