package oauth

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

func TestXOAUTH2Client(t *testing.T) {
	c := NewXOAUTH2Client("helpdesk@contoso.com", "tok.en.x")
	mech, ir, err := c.Start()
	if err != nil || mech != "XOAUTH2" {
		t.Fatalf("Start = %q, %v", mech, err)
	}
	want := []byte("user=helpdesk@contoso.com\x01auth=Bearer tok.en.x\x01\x01")
	if string(ir) != string(want) {
		t.Fatalf("ir = %q, want %q", ir, want)
	}
	if got := base64.StdEncoding.EncodeToString(ir); got != "dXNlcj1oZWxwZGVza0Bjb250b3NvLmNvbQFhdXRoPUJlYXJlciB0b2suZW4ueAEB" {
		t.Fatalf("base64 ir = %s", got)
	}
	ch := []byte(`{"status":"401","schemes":"bearer","scope":"https://outlook.office365.com/.default"}`)
	resp, err := c.Next(ch)
	if err != nil || resp == nil || len(resp) != 0 {
		t.Fatalf("Next = %q (nil=%v), %v; want empty non-nil response", resp, resp == nil, err)
	}
	if _, err := c.Next(ch); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("second Next err = %v", err)
	}
	v, err := ParseXOAUTH2Challenge(ch)
	if err != nil || v.Status != "401" || v.Schemes != "bearer" {
		t.Fatalf("ParseXOAUTH2Challenge = %+v, %v", v, err)
	}
}

func jwtWith(payload string) string {
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".c2ln"
}

func TestParseClaims(t *testing.T) {
	tests := []struct {
		name    string
		tok     string
		wantErr bool
		check   func(Claims) bool
	}{
		{"v1 app token", jwtWith(`{"aud":"https://outlook.office365.com","iss":"https://sts.windows.net/t1/","tid":"t1","appid":"a1","appidacr":"2","oid":"o1","roles":["SMTP.SendAsApp"],"iat":1700000000,"nbf":1700000000,"exp":1700003599}`), false,
			func(c Claims) bool {
				return c.Aud == "https://outlook.office365.com" && c.Tid == "t1" && c.AppID == "a1" && c.AppIDACR == "2" && c.Oid == "o1" &&
					c.HasRole(RoleSendAsApp) && c.Expires.Equal(time.Unix(1700003599, 0)) && c.IssuedAt.Equal(time.Unix(1700000000, 0))
			}},
		{"float exp, aud array, azp", jwtWith(`{"aud":["x","y"],"azp":"a2","exp":1700003599.5}`), false,
			func(c Claims) bool {
				return c.Aud == "x y" && c.AppID == "a2" && c.Expires.Equal(time.Unix(1700003599, 5e8)) && !c.HasRole(RoleSendAsApp)
			}},
		{"padded payload", strings.Replace(jwtWith(`{"tid":"t"}`), ".c2ln", "==.c2ln", 1), false, func(c Claims) bool { return c.Tid == "t" }},
		{"not a jwt", "opaque", true, nil},
		{"bad base64", "a.!!!.c", true, nil},
		{"bad json", jwtWith(`[1]`), true, nil},
		{"bad time", jwtWith(`{"exp":"soon"}`), true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseClaims(tt.tok)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if err == nil && !tt.check(c) {
				t.Fatalf("claims = %+v", c)
			}
		})
	}
}

func TestDescribeToken(t *testing.T) {
	now := time.Unix(1700000000, 0)
	tok := Token{AccessToken: jwtWith(`{}`), ExpiresOn: now.Add(59 * time.Minute)}
	with := Claims{Aud: "https://outlook.office365.com", Tid: "t1", AppID: "a1", AppIDACR: "2", Roles: []string{RoleSendAsApp}}
	out := DescribeToken(tok, with, now)
	for _, w := range []string{"https://outlook.office365.com", "t1", "a1", "certificate", RoleSendAsApp, "in 59m0s"} {
		if !strings.Contains(out, w) {
			t.Errorf("missing %q in:\n%s", w, out)
		}
	}
	if strings.Contains(out, "WARNING") || strings.Contains(out, tok.AccessToken) {
		t.Fatalf("unexpected:\n%s", out)
	}
	without := with
	without.Roles = nil
	out = DescribeToken(tok, without, now.Add(2*time.Hour))
	for _, w := range []string{"admin consent missing?", "grant admin consent for SMTP.SendAsApp (app registration → API permissions → Office 365 Exchange Online → Application permissions → SMTP.SendAsApp, then Grant admin consent)", "RBAC for Applications", "EXPIRED"} {
		if !strings.Contains(out, w) {
			t.Errorf("missing %q in:\n%s", w, out)
		}
	}
}
