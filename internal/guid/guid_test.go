package guid

import "testing"

func TestNew(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		g := New()
		if !Valid(g) {
			t.Fatalf("New() = %q is not Valid", g)
		}
		if g[14] != '4' || !(g[19] == '8' || g[19] == '9' || g[19] == 'a' || g[19] == 'b') {
			t.Fatalf("New() = %q is not a version-4 RFC 4122 UUID", g)
		}
		if seen[g] {
			t.Fatalf("New() repeated %q", g)
		}
		seen[g] = true
	}
}

func TestValid(t *testing.T) {
	for s, want := range map[string]bool{
		"11111111-2222-3333-4444-555555555555":   true,
		"AAAAAAAA-bbbb-CCCC-dddd-eeeeeeeeeeee":   true,
		"":                                       false,
		"c1":                                     false,
		"{11111111-2222-3333-4444-555555555555}": false,
		"11111111-2222-3333-4444-55555555555":    false,
		"11111111-2222-3333-4444-5555555555555":  false,
		"1111111122223333444455555555555555555":  false,
		"g1111111-2222-3333-4444-555555555555":   false,
		" 11111111-2222-3333-4444-555555555555":  false,
	} {
		if got := Valid(s); got != want {
			t.Errorf("Valid(%q) = %v, want %v", s, got, want)
		}
	}
}
