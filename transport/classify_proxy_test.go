package transport

import (
	"context"
	"net"
	"net/url"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/egress"
)

// TestClassifyProxyRefusal: whatever the proxy answers (here: nobody
// listens), the message waits (Transient), the reply names the proxy
// without its password, and the fix is the proxy's, at any stage and
// however wrapped.
func TestClassifyProxyRefusal(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	d, err := egress.New(egress.Settings{Proxy: "http://relay:hunter2@" + addr, Source: egress.SourceConfig}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, derr := d.DialContext(context.Background(), "tcp", "smtp.office365.com:587")
	for name, err := range map[string]error{
		"connect": AtStage(StageConnect, derr),
		"graph":   &url.Error{Op: "Post", URL: "https://graph.microsoft.com/v1.0/users/x/sendMail", Err: derr},
	} {
		v := ClassifyAt(err, StageGraph, "helpdesk@contoso.com")
		if v.Kind != Transient || !strings.Contains(v.Reply, "proxy http://relay:xxxxx@"+addr) || !strings.Contains(v.Fix, "start the proxy") {
			t.Errorf("%s: %+v", name, v)
		}
		if strings.Contains(v.Reply+v.Fix, "hunter2") {
			t.Errorf("%s: the proxy password is shown: %+v", name, v)
		}
	}
}
