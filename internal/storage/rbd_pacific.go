//go:build ceph && !pacific

package storage

// go-ceph selects the librbd API by build tag; Debian 12 ships Ceph 16
// (pacific). Build with -tags ceph,pacific.
var _ = the_ceph_build_needs_the_pacific_tag_too__build_with_tags_ceph_pacific
