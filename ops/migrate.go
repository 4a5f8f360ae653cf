package ops

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"

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
	res, err := migrations.ApplyLayout(ctx, conn, c.Database, migrations.Layout{Cluster: c.Cluster})
	for _, m := range res.Applied {
		fmt.Fprintf(out, "applied  %04d_%s\n", m.Version, m.Name)
	}
	if err != nil {
		return err
	}
	where := "the server"
	if c.Cluster != "" {
		where = "every node of cluster " + c.Cluster
		created, err := completeNodes(ctx, conn, c)
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

// completeNodes gives every node of the cluster the tables of the database it lacks
// (migrations.Complete), connected with the settings of c to each node system.clusters lists.
func completeNodes(ctx context.Context, conn driver.Conn, c config.ClickHouse) ([]string, error) {
	rows, err := conn.Query(ctx, "SELECT host_address, port FROM system.clusters WHERE cluster = ? ORDER BY shard_num, replica_num", c.Cluster)
	if err != nil {
		return nil, fmt.Errorf("the nodes of cluster %s: %w", c.Cluster, err)
	}
	var addrs []string
	for rows.Next() {
		var host string
		var port uint16
		if err := rows.Scan(&host, &port); err != nil {
			rows.Close()
			return nil, err
		}
		addrs = append(addrs, net.JoinHostPort(host, strconv.Itoa(int(port))))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var nodes []migrations.Node
	for _, a := range addrs {
		cc := c
		cc.Addr = []string{a}
		nc, err := OpenClickHouse(ctx, cc)
		if err != nil {
			for _, n := range nodes {
				_ = n.Conn.Close()
			}
			return nil, fmt.Errorf("node %s: %w", a, err)
		}
		nodes = append(nodes, migrations.Node{Name: a, Conn: nc})
	}
	defer func() {
		for _, n := range nodes {
			_ = n.Conn.Close()
		}
	}()
	return migrations.Complete(ctx, conn, c.Database, nodes)
}
