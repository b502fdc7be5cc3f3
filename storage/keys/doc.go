// Package keys is the one place Parley builds and parses Pebble keys
// (DESIGN.md §4). Every key is a one-byte table prefix followed by fixed-width
// big-endian integers, so that byte order equals numeric order: a raft group's
// log entries sort by index, and all of one group's entries form one
// contiguous span that a single DeleteRange can remove.
//
//	0x01 | group | index   raft log entry
//	0x02 | group           raft hard state
//	0x03 | group           raft snapshot metadata
//	0x04 | group           applied index
//	0x05 | group           state-machine snapshot
//	0x06 | group           log truncation state (index and term of the last removed entry)
//	0x07 | record          a node record, not a group's (1: the cluster membership)
//
// Nothing else in Parley may lay out keys by hand; storage/ calls these
// functions and the tests here pin the layout byte for byte, because changing
// it changes the on-disk format (storage's FORMAT file).
package keys
