package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"
)

// Cluster is the [cluster] table: relays that share one Redis (or Valkey)
// enforce each mailbox's and each client's budgets together.
type Cluster struct {
	// Redis is "redis://host:6379/0" or "rediss://…" (TLS); empty for a
	// single relay.
	Redis string `toml:"redis"`
	// RedisPasswordFile holds Redis's password (AUTH), kept out of the URL.
	RedisPasswordFile string `toml:"redis_password_file"`
	// Node names this relay in logs, metrics and Redis; the hostname by
	// default.
	Node string `toml:"node"`

	// RedisPassword is read from redis_password_file. It is never printed.
	RedisPassword Secret `toml:"-"`
}

const redisFix = `write it like "redis://10.0.0.7:6379/0", or "rediss://…" for TLS; the password goes in redis_password_file`

// clientLimits checks each [[client]]'s max_per_minute and max_per_day.
func (v *validator) clientLimits() {
	for i, cl := range v.c.Clients {
		key, line := v.entry("client", i, cl.Name)
		for k, n := range map[string]int{"max_per_minute": cl.MaxPerMinute, "max_per_day": cl.MaxPerDay} {
			if n < 0 {
				v.add(line(k), key(k), fmt.Sprintf("%d is negative", n), "use 0 for no limit, or the number of messages the client may hand in")
			}
		}
	}
}

// cluster checks [cluster], reads redis_password_file and fills in node.
func (v *validator) cluster() {
	cl := &v.c.Cluster
	line := func(k string) int { return v.lineOf("cluster", -1, k) }
	if cl.Node == "" {
		cl.Node, _ = os.Hostname()
	}
	if strings.ContainsAny(cl.Node, " \t{}") {
		v.add(line("node"), "cluster.node", fmt.Sprintf("%q holds spaces or braces", cl.Node), `use a plain name like "relay-a"`)
	}
	if cl.Redis == "" {
		if cl.RedisPasswordFile != "" {
			v.add(line("redis_password_file"), "cluster.redis_password_file", "is set but redis is not", "set redis to the server's URL, or remove redis_password_file")
		}
		return
	}
	u, err := url.Parse(cl.Redis)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
		v.add(line("redis"), "cluster.redis", "is not a Redis URL", redisFix)
		return
	}
	if _, inline := u.User.Password(); inline {
		v.inline(line("redis"), "cluster.redis", "the Redis password in [cluster] redis", true)
		if cl.RedisPasswordFile != "" {
			v.add(line("redis_password_file"), "cluster.redis_password_file", "redis already holds a password", "remove the password from redis, so that it is only in redis_password_file")
		}
	}
	if cl.RedisPasswordFile != "" {
		if b, ok := v.readable("cluster", -1, "cluster.redis_password_file", cl.RedisPasswordFile, true); ok {
			pw := strings.TrimRight(string(b), "\r\n")
			if pw == "" {
				v.add(line("redis_password_file"), "cluster.redis_password_file", cl.RedisPasswordFile+" is empty", "write Redis's password (requirepass) into the file")
			}
			cl.RedisPassword = Secret(pw)
		}
	}
}
