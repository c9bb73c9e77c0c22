package submit

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestSilentUpstreamTimesOut: a server that accepts and never greets must
// not hold a worker past the configured timeout (go-smtp's own command
// timeout is five minutes).
func TestSilentUpstreamTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // accept, say nothing
		}
	}()
	done := make(chan error, 1)
	go func() {
		_, err := ProbeTLS(context.Background(), nil, ln.Addr().String(), "relay.test", nil, 200*time.Millisecond)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a silent server passed the TLS probe")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the probe of a silent server did not give up")
	}
}
