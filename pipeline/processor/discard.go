package processor

import (
	"context"
	"net"
	"sync"

	"github.com/google/uuid"
)

// discarder ends an open insert so that ClickHouse keeps nothing of it, at once.
//
// ClickHouse 18.16 takes a closed connection, mid-insert, for the end of the data and stores
// what it received; a cancel packet too. It keeps nothing of an insert that fails: an unknown
// packet type is such a failure, on every server version ("Unknown packet … from client"). The
// driver has no way to send one, so the processor dials its connections itself (config.ClickHouse.Dial):
// each remembers the query id of the last query it sent, and discard writes one byte — an
// unknown packet type — on the connection of the insert with that id, before the insert's
// connection is closed. TCP delivers the byte before the close, so the server fails the
// insert instead of storing it.
//
// Without it an abandoned insert had to be left idle until ClickHouse dropped it (insertDropped)
// and closed only then; a process that exited or was killed within that wait made ClickHouse
// store it, after the partitions' next owner had read the high-water marks: stored twice.
type discarder struct {
	mu   sync.Mutex
	byID map[string]*trackedConn
}

func newDiscarder() *discarder { return &discarder{byID: map[string]*trackedConn{}} }

// unknownPacket is a client packet type no ClickHouse version defines (a one-byte varint).
const unknownPacket = 0x7e

// queryIDLen is the length of the query ids the processor gives its inserts (uuid.NewString).
const queryIDLen = 36

// dial is config.ClickHouse.Dial.
func (d *discarder) dial(ctx context.Context, addr string) (net.Conn, error) {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &trackedConn{Conn: c, d: d}, nil
}

// discard makes the server fail the open insert sent with query id id; false when no
// connection of this process sent it (the insert must then be left to time out). The caller
// owns the insert: nothing else writes on its connection meanwhile.
func (d *discarder) discard(id string) bool {
	d.mu.Lock()
	c := d.byID[id]
	d.mu.Unlock()
	if c == nil {
		return false
	}
	_, err := c.Conn.Write([]byte{unknownPacket})
	// Closed now, not when the driver gets to it: after a failed write clickhouse-go marks a
	// connection closed without closing its socket, which the garbage collector then closes at
	// some later moment.
	_ = c.Conn.Close()
	return err == nil
}

// forget drops the id of an insert that ended.
func (d *discarder) forget(id string) {
	d.mu.Lock()
	if c := d.byID[id]; c != nil {
		delete(d.byID, id)
		c.id = ""
	}
	d.mu.Unlock()
}

// trackedConn is a connection that knows the id of the last query it sent.
type trackedConn struct {
	net.Conn
	d  *discarder
	id string
}

// Write looks at each packet the driver writes: clickhouse-go writes a query packet (with the
// empty block that follows it) with one Write into an empty buffer, so a query packet — type
// 1, then its id as a length-prefixed string — starts the buffer. Only an id that parses as a
// uuid counts: a large block is flushed in pieces, and a piece may start with any byte. An id
// is dropped when its insert ends (forget) or its connection closes; a connection's later
// queries without such an id leave it in place, which is harmless: discard is only asked for
// an insert that has not ended, whose connection nothing else uses.
func (c *trackedConn) Write(b []byte) (int, error) {
	if len(b) >= 2+queryIDLen && b[0] == 1 && int(b[1]) == queryIDLen {
		if id, err := uuid.ParseBytes(b[2 : 2+queryIDLen]); err == nil {
			c.d.mu.Lock()
			if c.id != "" && c.d.byID[c.id] == c {
				delete(c.d.byID, c.id)
			}
			c.id = id.String()
			c.d.byID[c.id] = c
			c.d.mu.Unlock()
		}
	}
	return c.Conn.Write(b)
}

func (c *trackedConn) Close() error {
	c.d.mu.Lock()
	if c.id != "" && c.d.byID[c.id] == c {
		delete(c.d.byID, c.id)
	}
	c.d.mu.Unlock()
	return c.Conn.Close()
}
