package relay

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// TestReplyWording reads every reply(...) in the package's source and checks
// that each refusal has a matching enhanced code (maddy once had a helper
// whose first digit was always 5) and a sentence a person can act on.
func TestReplyWording(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(af, func(node ast.Node) bool {
			call, ok := node.(*ast.CallExpr)
			if !ok {
				return true
			}
			if id, ok := call.Fun.(*ast.Ident); !ok || id.Name != "reply" || len(call.Args) < 5 {
				return true
			}
			n++
			pos := fset.Position(call.Pos())
			var nums [4]int
			for i := range nums {
				lit, ok := call.Args[i].(*ast.BasicLit)
				if !ok {
					t.Errorf("%s: reply code argument %d is not a literal", pos, i)
					return true
				}
				nums[i], _ = strconv.Atoi(lit.Value)
			}
			code, class := nums[0], nums[1]
			if code < 400 || code > 599 || code/100 != class {
				t.Errorf("%s: reply %d has enhanced class %d", pos, code, class)
			}
			lit, ok := call.Args[4].(*ast.BasicLit)
			if !ok {
				t.Errorf("%s: reply text is not a literal", pos)
				return true
			}
			msg, _ := strconv.Unquote(lit.Value)
			if len(strings.Fields(msg)) < 4 || !(unicode.IsUpper([]rune(msg)[0]) || strings.HasPrefix(msg, "%s: ")) {
				t.Errorf("%s: reply text %q is not a sentence", pos, msg)
			}
			return true
		})
	}
	if n < 15 {
		t.Errorf("found only %d replies; the test is not reading the source", n)
	}
}
