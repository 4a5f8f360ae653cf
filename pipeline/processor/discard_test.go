package processor

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/google/uuid"
)

// The discarder finds an insert's connection by the query id its query packet carried, and
// nothing else: a piece of a large block that happens to start like a query packet is not
// taken for one, and an insert that ended is not found.
func TestDiscarderFindsTheInsertByItsQueryPacket(t *testing.T) {
	d := newDiscarder()
	client, server := net.Pipe()
	c := &trackedConn{Conn: client, d: d}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(server)
		got <- b
	}()
	id := uuid.NewString()
	query := append([]byte{1, queryIDLen}, id...)
	query = append(query, "…the rest of the packet"...)
	if _, err := c.Write(query); err != nil {
		t.Fatal(err)
	}
	// A block flushed in pieces: one starting with the query packet's type and id length, then
	// 36 bytes that are no uuid.
	piece := append([]byte{1, queryIDLen}, bytes.Repeat([]byte{0xab}, queryIDLen+10)...)
	if _, err := c.Write(piece); err != nil {
		t.Fatal(err)
	}
	if d.discard(uuid.NewString()) {
		t.Fatal("discard found an insert no connection sent")
	}
	if !d.discard(id) {
		t.Fatal("discard did not find the insert its connection sent")
	}
	b := <-got // the socket is closed by discard
	if len(b) != len(query)+len(piece)+1 || b[len(b)-1] != unknownPacket {
		t.Fatalf("the server side read %d bytes ending in %#x, want the two writes and the unknown packet type %#x", len(b), b[len(b)-1], unknownPacket)
	}

	// An insert that ended is forgotten.
	client2, server2 := net.Pipe()
	go func() { _, _ = io.Copy(io.Discard, server2) }()
	c2 := &trackedConn{Conn: client2, d: d}
	id2 := uuid.NewString()
	if _, err := c2.Write(append([]byte{1, queryIDLen}, id2...)); err != nil {
		t.Fatal(err)
	}
	d.forget(id2)
	if d.discard(id2) {
		t.Fatal("discard found an insert that had ended")
	}
	_ = c2.Close()
}

// The argument above leaseFor and sessionTimeout, as arithmetic: a paused instance's last packet
// is sent within leaseFor of an accepted heartbeat, the insert it belongs to is gone from the
// server insertDropped later, and the coordinator hands the partitions on no sooner than
// sessionTimeout after that heartbeat — with at least 3 s to spare.
func TestSessionOutlastsLeaseAndIdleInsert(t *testing.T) {
	if spare := sessionTimeout - leaseFor - insertDropped; spare < 3*time.Second {
		t.Fatalf("session %v leaves %v after lease %v and an idle insert's %v, want ≥ 3s", sessionTimeout, spare, leaseFor, insertDropped)
	}
}
