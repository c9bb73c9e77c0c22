package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
)

// credListFlag collects repeated comma-separated values with at least min
// fields.
type credListFlag struct {
	min   int
	usage string
	vals  [][]string
}

func (l *credListFlag) String() string { return fmt.Sprint(l.vals) }

func (l *credListFlag) Set(v string) error {
	f := strings.Split(v, ",")
	if len(f) < l.min {
		return errors.New("want " + l.usage)
	}
	l.vals = append(l.vals, f)
	return nil
}

// emulatorCreds are the emulator command's flags for the credentials
// beyond secrets: service accounts and a managed identity.
type emulatorCreds struct {
	users, identities credListFlag
}

func addEmulatorCredFlags(fs *flag.FlagSet) *emulatorCreds {
	c := &emulatorCreds{
		users:      credListFlag{min: 2, usage: "upn,password[,send-as...]"},
		identities: credListFlag{min: 3, usage: "tenant,identity-client-id,app-client-id"},
	}
	fs.Var(&c.users, "user", "create a service account `upn,password[,send-as...]` for the password grant, with its mailbox and the addresses it may send as (repeatable)")
	fs.Var(&c.identities, "managed-identity", "assign this machine a managed identity `tenant,identity-client-id,app-client-id` and make it a federated credential of that (provisioned) app; the first is the system-assigned one (repeatable)")
	return c
}

// apply sets the accounts and identities up in a started emulator and
// says how to reach them.
func (c *emulatorCreds) apply(emu *msemu.Emulator, stdout io.Writer) error {
	for _, u := range c.users.vals {
		emu.AddUser(msemu.User{UPN: u[0], Password: u[1]})
		emu.AddMailbox(msemu.Mailbox{Address: u[0], SendAs: u[2:]})
		fmt.Fprintf(stdout, "user       %s send_as=%s\n", u[0], strings.Join(u[2:], ","))
	}
	for i, m := range c.identities.vals {
		id := msemu.ManagedIdentity{TenantID: m[0], ClientID: m[1], SystemAssigned: i == 0}
		// The object id is derived so that the federated credential and
		// the identity's tokens agree.
		id.ObjectID = m[1]
		emu.AddManagedIdentity(id)
		if !emu.AddFederatedCredential(m[2], msemu.FederatedCredential{Issuer: emu.ManagedIdentityIssuer(m[0]), Subject: id.ObjectID}) {
			return fmt.Errorf("-managed-identity %s: no app %s (add it with -provision first)", strings.Join(m, ","), m[2])
		}
		fmt.Fprintf(stdout, "identity   client=%s app=%s\n", m[1], m[2])
	}
	if len(c.identities.vals) > 0 {
		env := emu.ManagedIdentityEnv()
		for _, k := range slices.Sorted(maps.Keys(env)) {
			fmt.Fprintf(stdout, "env        %s=%s\n", k, env[k])
		}
	}
	return nil
}
