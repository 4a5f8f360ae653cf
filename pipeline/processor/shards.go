package processor

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/go-faster/city"

	"github.com/shukei/shukei/config"
	"github.com/shukei/shukei/ops"
	"github.com/shukei/shukei/registry"
)

// Shard is where the processor writes one shard's events (docs/CLUSTER.md): Write reaches one
// of the shard's replicas (the first that answers, in order), Replicas each one of them, for
// reading back what a batch cut short left (loadState reads every replica: replication is
// asynchronous, and a part on one replica only must still count as stored).
type Shard struct {
	Num      uint16 // shard_num in system.clusters; 0 on one server
	Write    driver.Conn
	Replicas []driver.Conn
}

// shardOf is the index in shards of tenant's shard: the shard the registry recorded when the
// tenant was registered (Tenant.Shard, registry.PlaceShard), so adding a shard moves no
// tenant; for a tenant with none recorded (or one no longer in the cluster), cityHash64 of its
// id over today's shards. A tenant's rows, marts, deletion and per-tenant reports stay on one
// shard.
func shardOf(t *registry.Tenant, shards []Shard) int {
	n := len(shards)
	if n <= 1 {
		return 0
	}
	if t.Shard != 0 {
		for i, s := range shards {
			if s.Num == t.Shard {
				return i
			}
		}
	}
	return int(city.CH64([]byte(t.ID)) % uint64(n))
}

// ClusterShards connects to every shard of the cluster c.Cluster names, as it is declared in
// system.clusters of the node conn reaches, with the settings of c (the processor's own user,
// which `shukei migrate` declares on every node). Close closes the connections.
func ClusterShards(ctx context.Context, conn driver.Conn, c config.ClickHouse) ([]Shard, ops.Conns, error) {
	rows, err := conn.Query(ctx, "SELECT shard_num, host_address, port FROM system.clusters WHERE cluster = ? ORDER BY shard_num, replica_num", c.Cluster)
	if err != nil {
		return nil, nil, fmt.Errorf("the shards of cluster %s: %w", c.Cluster, err)
	}
	var order []uint32
	addrs := map[uint32][]string{}
	for rows.Next() {
		var shard uint32
		var host string
		var port uint16
		if err := rows.Scan(&shard, &host, &port); err != nil {
			rows.Close()
			return nil, nil, err
		}
		if _, ok := addrs[shard]; !ok {
			order = append(order, shard)
		}
		addrs[shard] = append(addrs[shard], net.JoinHostPort(host, strconv.Itoa(int(port))))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	if len(order) == 0 {
		return nil, nil, fmt.Errorf("cluster %s is not declared on the server (system.clusters)", c.Cluster)
	}
	var conns ops.Conns
	// Not pinged: a replica that is down now is waited for when it is needed (a write goes to
	// the shard's other replica; resuming waits for every replica).
	open := func(addr ...string) (driver.Conn, error) {
		cc := c
		cc.Addr = addr
		k, err := clickhouse.Open(cc.Options())
		if err != nil {
			return nil, err
		}
		conns = append(conns, k)
		return k, nil
	}
	shards := make([]Shard, 0, len(order))
	for _, n := range order {
		w, err := open(addrs[n]...)
		if err != nil {
			conns.Close()
			return nil, nil, fmt.Errorf("shard %d: %w", n, err)
		}
		s := Shard{Num: uint16(n), Write: w}
		for _, a := range addrs[n] {
			r, err := open(a)
			if err != nil {
				conns.Close()
				return nil, nil, fmt.Errorf("shard %d replica %s: %w", n, a, err)
			}
			s.Replicas = append(s.Replicas, r)
		}
		shards = append(shards, s)
	}
	return shards, conns, nil
}
