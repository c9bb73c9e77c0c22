// Package testkit is the machinery the test suites of oauthrelay share.
// Import it from _test.go files only.
//
// It offers:
//
//   - [Clock]: a fake clock (Now, Advance, Set) safe for concurrent use.
//   - [Eventually] and [WaitFor]: wait, with a deadline, for state that has
//     no channel to observe. Prefer channels, hooks and log lines.
//   - [SyncBuffer] and [DebugLogger]: a log sink many goroutines write to
//     while the test reads it, and a debug logger into one that prints the
//     log when the test fails.
//   - [NewCA], [CA.Leaf], [ClientCert], [SelfSigned]: a test CA, server
//     certificates for 127.0.0.1 and localhost (PEM files, tls.Configs for
//     servers and clients), and self-signed RSA certificates for Entra
//     certificate credentials.
//   - [DialSMTP] and [SMTPClient]: a raw SMTP line client that shows every
//     reply exactly (commands, STARTTLS, AUTH PLAIN, AUTH XOAUTH2, DATA).
//   - [Serve]: a TCP server on 127.0.0.1 for scripted fakes of other
//     servers.
//   - [StartSquid] and [StartSOCKS]: real proxies from Debian (squid,
//     microsocks) on a loopback port, resolving made-up names only they
//     know, for the proxy tests; skipped when not installed.
//   - [Config]: a builder of the relay's TOML configuration, wired to an
//     emulated Microsoft 365 ([Emulator], which *msemu.Emulator satisfies).
//
// testkit imports none of oauthrelay's packages, so that every package,
// internal/msemu and config included, can use it from its own in-package
// tests without an import cycle. That is why it takes the emulator as the
// small [Emulator] interface and why loading a written configuration is
// left to the caller (config.Load(cfg.Write(t))).
package testkit
