package testkit

import (
	"net"
	"testing"
)

// Serve listens on 127.0.0.1 (a port the system chooses) and runs handle
// for each connection in its own goroutine, closing the connection when
// handle returns. The listener is closed when the test ends. It returns
// the address to dial. For TLS, handle wraps the connection with
// tls.Server.
func Serve(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}
