package doctor

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// doctor checks Redis: the right password passes, a wrong one and a
// stopped Redis fail with their fix, and the password is never printed.
func TestCheckCluster(t *testing.T) {
	rd := testkit.StartRedis(t, "doctor-pw-123")
	check := func(pw string) (string, Result) {
		var out bytes.Buffer
		cfg := &config.Config{Path: "/etc/oauthrelay/config.toml"}
		cfg.Cluster = config.Cluster{Redis: rd.URL(), Node: "relay-a", RedisPassword: config.Secret(pw)}
		r := &run{o: Options{Out: &out, Timeout: 2 * time.Second, Now: time.Now}, cfg: cfg}
		r.checkCluster(context.Background())
		if strings.Contains(out.String(), pw) {
			t.Fatalf("the password is in the report:\n%s", out.String())
		}
		return out.String(), r.res
	}
	out, res := check("doctor-pw-123")
	if res.Passed != 1 || res.Failed != 0 || !strings.Contains(out, "round-trip script") {
		t.Fatalf("right password:\n%s", out)
	}
	out, res = check("wrong-pw")
	if res.Failed != 1 || !strings.Contains(out, "refused the login") || !strings.Contains(out, "redis_password_file") {
		t.Fatalf("wrong password:\n%s", out)
	}
	rd.Stop()
	out, res = check("doctor-pw-123")
	if res.Failed != 1 || !strings.Contains(out, "cannot reach Redis") || !strings.Contains(out, "fallback") {
		t.Fatalf("Redis stopped:\n%s", out)
	}
}
