package app

import (
	"reflect"
	"testing"
)

func TestParseLUNSpecs(t *testing.T) {
	got, err := ParseLUNSpecs([]string{
		"0=/srv/a.img", "1=/srv/b.img:ro", "2=/srv/c.img:removable", "3=/srv/d.img:ro,removable",
		"4=/srv/e.img:rw", "5=/srv/odd:name.img",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []LUNSpec{
		{LUN: 0, Path: "/srv/a.img"},
		{LUN: 1, Path: "/srv/b.img", ReadOnly: true},
		{LUN: 2, Path: "/srv/c.img", Removable: true},
		{LUN: 3, Path: "/srv/d.img", ReadOnly: true, Removable: true},
		{LUN: 4, Path: "/srv/e.img"},
		{LUN: 5, Path: "/srv/odd:name.img"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	for _, bad := range [][]string{{"0"}, {"0="}, {"x=/a"}, {"16384=/a"}, {"0=/a", "0=/b"}} {
		if _, err := ParseLUNSpecs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
