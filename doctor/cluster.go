package doctor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/cluster"
)

// checkCluster checks [cluster] redis: the relay connects, authenticates
// and runs a round-trip script, as it does for every shared budget. A
// relay that cannot do this still delivers, in fallback (each relay
// within its share), so this step explains that too.
func (r *run) checkCluster(ctx context.Context) {
	cc := r.cfg.Cluster
	if cc.Redis == "" {
		return
	}
	const in = "  "
	fmt.Fprintf(r.o.Out, "cluster: node %s, budgets shared through %s\n", cc.Node, redisAddr(cc.Redis))
	c, err := cluster.New(cluster.Options{URL: cc.Redis, Password: cc.RedisPassword.Reveal(), Node: cc.Node,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Timeout: r.o.Timeout, Now: r.o.Now})
	if err != nil {
		r.fail(in, err.Error(), "correct [cluster] redis in "+r.cfg.Path)
		return
	}
	defer c.Close()
	pctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
	defer cancel()
	start := time.Now()
	err = c.Ping(pctx)
	const meanwhile = "; meanwhile the relay runs in fallback: each relay keeps to its share of every budget"
	switch {
	case err == nil:
		r.pass(in, "connected, authenticated and ran a round-trip script (%s); %d relay(s) seen alive", time.Since(start).Round(time.Millisecond), c.Stats().Nodes)
	case strings.Contains(err.Error(), "WRONGPASS") || strings.Contains(err.Error(), "NOAUTH") || strings.Contains(err.Error(), "AUTH"):
		r.fail(in, "Redis refused the login: "+err.Error(),
			"put Redis's password (requirepass, or the ACL user's named in the URL) into [cluster] redis_password_file"+meanwhile)
	case strings.Contains(err.Error(), "NOSCRIPT") || strings.Contains(err.Error(), "NOPERM"):
		r.fail(in, "Redis does not let the relay run scripts: "+err.Error(),
			"allow EVAL/EVALSHA (ACL +@scripting) for the relay's user"+meanwhile)
	default:
		r.fail(in, "cannot reach Redis at "+redisAddr(cc.Redis)+": "+err.Error(),
			"check that Redis runs and that this host may reach it (firewall, bind, protected-mode; rediss:// for a TLS port)"+meanwhile)
	}
}

// redisAddr is a Redis URL without its user and password, for the report.
func redisAddr(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return "(not a URL)"
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	return scheme + "://" + rest
}
