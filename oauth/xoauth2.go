package oauth

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/emersion/go-sasl"
)

// XOAUTH2 is the SASL mechanism name Exchange Online expects.
const XOAUTH2 = "XOAUTH2"

type xoauth2Client struct {
	username, token string
	challenged      bool
}

// NewXOAUTH2Client returns a SASL client for AUTH XOAUTH2 (go-sasl no
// longer ships one). The initial response is
// "user=" + username + "\x01auth=Bearer " + token + "\x01\x01".
func NewXOAUTH2Client(username, token string) sasl.Client {
	return &xoauth2Client{username: username, token: token}
}

func (c *xoauth2Client) Start() (string, []byte, error) {
	return XOAUTH2, []byte("user=" + c.username + "\x01auth=Bearer " + c.token + "\x01\x01"), nil
}

// Next answers the server's error challenge (a JSON status, already
// base64-decoded) with an empty response, as the protocol requires, so the
// server sends its final reply (e.g. 535 5.7.3) which the SMTP client
// reports. A second challenge is a protocol error.
func (c *xoauth2Client) Next(challenge []byte) ([]byte, error) {
	if c.challenged {
		return nil, fmt.Errorf("XOAUTH2: unexpected second challenge%s", challengeStatus(challenge))
	}
	c.challenged = true
	return []byte{}, nil
}

// challengeStatus names the status of an XOAUTH2 error challenge.
func challengeStatus(ch []byte) string {
	v, err := ParseXOAUTH2Challenge(ch)
	if err != nil || v.Status == "" {
		return ""
	}
	return " (server status " + v.Status + ")"
}

// ErrXOAUTH2Challenge is returned by ParseXOAUTH2Challenge for a challenge
// that is not the JSON error object.
var ErrXOAUTH2Challenge = errors.New("XOAUTH2 challenge is not a JSON error object")

// XOAUTH2Challenge is the decoded JSON error object a server sends as its
// XOAUTH2 challenge.
type XOAUTH2Challenge struct {
	Status  string `json:"status"`
	Schemes string `json:"schemes"`
	Scope   string `json:"scope"`
}

// ParseXOAUTH2Challenge decodes a (base64-decoded) XOAUTH2 error challenge.
func ParseXOAUTH2Challenge(ch []byte) (XOAUTH2Challenge, error) {
	var v XOAUTH2Challenge
	if err := json.Unmarshal(ch, &v); err != nil {
		return v, ErrXOAUTH2Challenge
	}
	return v, nil
}
