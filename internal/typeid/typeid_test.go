package typeid_test

import (
	"reflect"
	"testing"

	"github.com/gocqrs/cqrs/internal/typeid"
)

type a struct{ X int }
type b struct{ X int }

func TestOfMatchesOfType(t *testing.T) {
	t.Parallel()
	check := func(name string, got, want typeid.ID) {
		t.Helper()
		if got != want {
			t.Errorf("%s: Of = %#x, OfType = %#x", name, got, want)
		}
	}
	check("struct", typeid.Of[a](), typeid.OfType(reflect.TypeFor[a]()))
	check("pointer", typeid.Of[*a](), typeid.OfType(reflect.TypeFor[*a]()))
	check("int", typeid.Of[int](), typeid.OfType(reflect.TypeFor[int]()))
	check("interface", typeid.Of[error](), typeid.OfType(reflect.TypeFor[error]()))
	check("generic", typeid.Of[[]map[string]a](), typeid.OfType(reflect.TypeFor[[]map[string]a]()))
}

func TestOfDistinguishesTypes(t *testing.T) {
	t.Parallel()
	ids := map[typeid.ID]string{}
	for name, id := range map[string]typeid.ID{
		"a": typeid.Of[a](), "b": typeid.Of[b](), "*a": typeid.Of[*a](),
		"int": typeid.Of[int](), "int64": typeid.Of[int64](), "any": typeid.Of[any](),
	} {
		if prev, ok := ids[id]; ok {
			t.Fatalf("%s and %s share identity %#x", prev, name, id)
		}
		ids[id] = name
	}
}

func TestOfAllocatesNothing(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = typeid.Of[a]() }); n != 0 {
		t.Fatalf("Of allocates %v times", n)
	}
}

func TestOfValueMatchesOfValueType(t *testing.T) {
	t.Parallel()
	for _, v := range []any{a{1}, &a{}, b{}, 3, "s", []int{1}} {
		if got, want := typeid.OfValue(v), typeid.OfValueType(reflect.TypeOf(v)); got != want {
			t.Errorf("%T: OfValue = %#x, OfValueType = %#x", v, got, want)
		}
	}
	if typeid.OfValue(a{}) == typeid.OfValue(b{}) {
		t.Error("distinct types share an identity")
	}
	if typeid.OfValue(nil) != 0 {
		t.Error("nil has a non-zero identity")
	}
}

func TestTableFindsEveryEntryAndNothingElse(t *testing.T) {
	t.Parallel()
	types := []reflect.Type{
		reflect.TypeFor[a](), reflect.TypeFor[b](), reflect.TypeFor[*a](), reflect.TypeFor[int](),
		reflect.TypeFor[string](), reflect.TypeFor[[]a](), reflect.TypeFor[map[string]b](), reflect.TypeFor[error](),
	}
	for n := range len(types) + 1 {
		m := map[typeid.ID]int{}
		for i, rt := range types[:n] {
			m[typeid.OfType(rt)] = i
		}
		tab := typeid.NewTable(m)
		for i, rt := range types {
			got, ok := tab.Get(typeid.OfType(rt))
			if want := i < n; ok != want || ok && got != i {
				t.Errorf("%d entries, %v: Get = %d, %v", n, rt, got, ok)
			}
		}
		if _, ok := tab.Get(0); ok {
			t.Errorf("%d entries: Get(0) found an entry", n)
		}
	}
}
