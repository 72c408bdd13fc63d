// Package typeid gives each Go type a uintptr identity that is cheap to
// compute from a type parameter and to use as a map key.
//
// Routing a request by reflect.Type costs a map access with an interface key
// (hashing and comparing through the type's hash and equality functions),
// which was half the cost of a mediator Send. A uintptr key uses the
// runtime's fast 64-bit map path instead.
//
// The identity of T is the address of the runtime type descriptor of *T,
// read from the type word of an interface holding a nil *T. Type descriptors
// are unique per type within a program and never move, so the identity is
// stable and distinct per type. Using *T rather than T keeps the interface
// value free of any allocation for every T.
package typeid

import (
	"reflect"
	"unsafe"
)

// ID identifies a type.
type ID uintptr

// eface mirrors the runtime layout of an empty interface.
type eface struct {
	typ  unsafe.Pointer
	data unsafe.Pointer
}

// Of returns the identity of T.
func Of[T any]() ID {
	var v any = (*T)(nil)
	return ID((*eface)(unsafe.Pointer(&v)).typ)
}

// OfType returns the identity of t; OfType(reflect.TypeFor[T]()) == Of[T]().
func OfType(t reflect.Type) ID {
	v := reflect.Zero(reflect.PointerTo(t)).Interface()
	return ID((*eface)(unsafe.Pointer(&v)).typ)
}

// OfValue returns the identity of the dynamic type of v, in a space of its
// own: OfValue(v) == OfValueType(reflect.TypeOf(v)), but it is not related to
// Of. It is 0 for a nil interface.
func OfValue(v any) ID {
	return ID((*eface)(unsafe.Pointer(&v)).typ)
}

// OfValueType returns OfValue of a value of type t, which must not be an
// interface type (a value's dynamic type never is).
func OfValueType(t reflect.Type) ID {
	if t.Kind() == reflect.Interface {
		return 0
	}
	return OfValue(reflect.Zero(t).Interface())
}
