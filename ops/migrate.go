package ops

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/migrations"
)

// Migrate applies the migrations to the configured ClickHouse server, printing each one applied
// to out, then declares every role's users (in clickhouse.users_dir, else printed). 'shukei
// migrate', the demo and the benchmarks run it.
func Migrate(ctx context.Context, out io.Writer, cfg config.Config) error {
	c := cfg.ClickHouse
	conn, err := OpenClickHouse(ctx, c)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := grantClusterUser(out, cfg); err != nil {
		return err
	}
	layout := migrations.Layout{Cluster: c.Cluster}
	if c.Cluster != "" {
		// Each statement runs on the nodes it belongs on: no DDL ON CLUSTER (migrations.Layout).
		if layout.Nodes, err = clusterNodes(ctx, conn, c); err != nil {
			return err
		}
		defer migrations.CloseNodes(layout.Nodes)
		if c.ClusterUser == "" {
			warnClusterUser(ctx, out, conn, c.Cluster)
		}
	}
	res, err := migrations.ApplyLayout(ctx, conn, c.Database, layout)
	for _, m := range res.Applied {
		fmt.Fprintf(out, "applied  %04d_%s\n", m.Version, m.Name)
	}
	if err != nil {
		return err
	}
	where := "the server"
	if c.Cluster != "" {
		where = "every node of cluster " + c.Cluster
		created, err := migrations.Complete(ctx, conn, c.Database, layout.Nodes)
		for _, n := range created {
			fmt.Fprintf(out, "created  %s (a node without it: new, or rebuilt empty)\n", n)
		}
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "database %s is at migration %d on %s (%d applied now, %d already)\n",
		c.Database, len(res.Applied)+len(res.Skipped), where, len(res.Applied), len(res.Skipped))
	return writeUsers(out, cfg)
}

// writeUsers declares every role's users in the server's users.d (or prints the file):
// the matrix of promise 16, passwords derived from the users key.
func writeUsers(out io.Writer, cfg config.Config) error {
	uk, err := UsersKey(cfg)
	if err != nil {
		return fmt.Errorf("the roles' passwords derive from the users key: %w", err)
	}
	if uk == nil {
		return fmt.Errorf("the roles' passwords derive from the users key: set clickhouse.users_key_file (or anonymizer.master_key_file)")
	}
	// Grafana reads the query service's reports as a principal of its own (promise 10),
	// never ClickHouse, whose system tables any user may read.
	users := migrations.AllUsers(cfg.ClickHouse.Database, uk)
	if cfg.ClickHouse.UsersDir == "" {
		b, err := migrations.UsersFile(users, cfg.ClickHouse.ReaderNetworks)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "clickhouse.users_dir is not set: install this as users.d/%s on the server\n%s", migrations.UsersFileName(cfg.ClickHouse.Database), b)
		return nil
	}
	// On a cluster every node has a users.d of its own: a role connects to any node.
	for _, dir := range filepath.SplitList(cfg.ClickHouse.UsersDir) {
		path, err := migrations.WriteUsers(dir, cfg.ClickHouse.Database, users, cfg.ClickHouse.ReaderNetworks)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "role users: %d ClickHouse users of %d roles (purpose readers included), each allowed only its databases, in %s\n", len(users), len(migrations.Roles), path)
	}
	return nil
}

// grantClusterUser grants the cluster's internal user (clickhouse.cluster_user) the sharded
// tables' databases on every node (in clickhouse.users_dir, else printed), before the
// migrations run: a Distributed table's reads of the other shards, and the migrations' check
// that a backfill's table is empty on every shard, go through that user.
func grantClusterUser(out io.Writer, cfg config.Config) error {
	c := cfg.ClickHouse
	if c.Cluster == "" || c.ClusterUser == "" {
		return nil
	}
	if c.UsersDir == "" {
		b, err := migrations.ClusterGrantFile(c.Database, c.ClusterUser)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "clickhouse.users_dir is not set: install this as users.d/%s on every node\n%s", migrations.ClusterGrantFileName(c.Database), b)
		return nil
	}
	for _, dir := range filepath.SplitList(c.UsersDir) {
		path, err := migrations.WriteClusterGrant(dir, c.Database, c.ClusterUser)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "cluster user %s: may read only the sharded tables' databases of %s, in %s\n", c.ClusterUser, c.Database, path)
	}
	return nil
}

// warnClusterUser says so when the cluster's nodes log in on each other as a user other than
// the administrator's and clickhouse.cluster_user is empty: that user must be granted the
// sharded tables' databases, or every read through a Distributed table is refused.
func warnClusterUser(ctx context.Context, out io.Writer, conn driver.Conn, cluster string) {
	var user string
	if err := conn.QueryRow(ctx, "SELECT any(user) FROM system.clusters WHERE cluster = ? AND user NOT IN ('', 'default')", cluster).Scan(&user); err != nil || user == "" {
		return
	}
	fmt.Fprintf(out, "warning: the nodes of cluster %s log in on each other as %s, and clickhouse.cluster_user is empty: set it to %s so that migrate grants it the sharded tables' databases (docs/CLUSTER.md)\n", cluster, user, user)
}

// clusterNodes connects to every node of the cluster system.clusters lists on conn, with the
// settings of c.
func clusterNodes(ctx context.Context, conn driver.Conn, c config.ClickHouse) ([]migrations.Node, error) {
	return migrations.NodesOf(ctx, conn, c.Cluster, func(addr string) (driver.Conn, error) {
		cc := c
		cc.Addr = []string{addr}
		return OpenClickHouse(ctx, cc)
	})
}
