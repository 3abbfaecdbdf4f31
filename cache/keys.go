package cache

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// formatVersion is part of every key and of the pub/sub channel. Bump it
// when the entry header, the marker encoding or the scripts change
// incompatibly: instances of different formats then share nothing.
const formatVersion = "1"

// Key names one cached logical entity: its kind (as registered with
// NewEntity, e.g. "profile") and its ID within the kind (e.g. a user ID).
// Invalidation works on Keys, independent of each kind's codec and version.
type Key struct {
	Kind string
	ID   string
}

// String returns "kind:id", for logs and errors.
func (k Key) String() string { return k.Kind + ":" + k.ID }

func validName(s string) bool {
	return s != "" && !strings.ContainsAny(s, ":{}")
}

// Redis layout (P = Config.Prefix, F = formatVersion, S = shard number):
//
//	P:F:{S}:ep                   the shard's epoch: 8 random bytes
//	P:F:{S}:m:KIND:ID            invalidation marker: 8-byte big-endian position
//	P:F:{S}:e:KIND:VER.CODEC:ID  entry: header (see entryHeader) + payload
//	P:F:{S}:wm                   the shard's watermark: epoch ID (8) + position (8)
//	P:F:inv                      pub/sub channel for L1 invalidations
//
// The "{S}" hash tag keeps a key's entry, its marker and its shard's epoch in
// one Redis Cluster slot, so one Lua script can check them together. Markers
// carry no version: instances running different codec versions respect the
// same markers (and every read checks the marker, so an entry of a version
// that Invalidate did not delete is still never served after a write).
type keyspace struct {
	shards  int
	base    []string // per shard: "P:F:{S}:"
	channel string
}

func newKeyspace(prefix string, shards int) keyspace {
	ks := keyspace{shards: shards, base: make([]string, shards), channel: prefix + ":" + formatVersion + ":inv"}
	for s := range shards {
		ks.base[s] = prefix + ":" + formatVersion + ":{" + strconv.Itoa(s) + "}:"
	}
	return ks
}

// shard maps a key to its epoch domain with FNV-1a over kind, a NUL and id.
func (ks *keyspace) shard(kind, id string) int {
	const offset, prime = 2166136261, 16777619
	h := uint32(offset)
	for i := 0; i < len(kind); i++ {
		h ^= uint32(kind[i])
		h *= prime
	}
	h *= prime // the NUL separator
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= prime
	}
	return int(h % uint32(ks.shards))
}

func (ks *keyspace) epochKey(shard int) string { return ks.base[shard] + "ep" }

func (ks *keyspace) watermarkKey(shard int) string { return ks.base[shard] + "wm" }

func (ks *keyspace) markerKey(shard int, kind, id string) string {
	return ks.base[shard] + "m:" + kind + ":" + id
}

// entry header: format byte, epoch (8), position (8, big-endian), flags.
const (
	hdrFormat    = 1
	hdrLen       = 18
	flagNegative = 1
)

func appendHeader(dst []byte, epoch, pos uint64, negative bool) []byte {
	dst = append(dst, hdrFormat)
	dst = binary.BigEndian.AppendUint64(dst, epoch)
	dst = binary.BigEndian.AppendUint64(dst, pos)
	var f byte
	if negative {
		f |= flagNegative
	}
	return append(dst, f)
}

type header struct {
	epoch, pos uint64
	negative   bool
}

func parseHeader(b string) (header, error) {
	if len(b) < hdrLen || b[0] != hdrFormat {
		return header{}, fmt.Errorf("%w: entry header", ErrCorrupt)
	}
	return header{
		epoch:    beUint64(b[1:9]),
		pos:      beUint64(b[9:17]),
		negative: b[17]&flagNegative != 0,
	}, nil
}

func beUint64(s string) uint64 {
	_ = s[7]
	return uint64(s[7]) | uint64(s[6])<<8 | uint64(s[5])<<16 | uint64(s[4])<<24 |
		uint64(s[3])<<32 | uint64(s[2])<<40 | uint64(s[1])<<48 | uint64(s[0])<<56
}

func u64bytes(x uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), x) }

// Pub/sub messages: 'i' pos(8) then (uvarint len, kind, uvarint len, id)*
// drops L1 entries; 'w' pos(8) raises every L1's watermark; 'f' flushes
// every L1. Anything else flushes too.
const (
	msgInvalidate = 'i'
	msgWatermark  = 'w'
	msgFlush      = 'f'
)

func appendInvalidation(dst []byte, pos uint64, keys []Key) []byte {
	dst = append(dst, msgInvalidate)
	dst = binary.BigEndian.AppendUint64(dst, pos)
	for _, k := range keys {
		dst = binary.AppendUvarint(dst, uint64(len(k.Kind)))
		dst = append(dst, k.Kind...)
		dst = binary.AppendUvarint(dst, uint64(len(k.ID)))
		dst = append(dst, k.ID...)
	}
	return dst
}

// parseInvalidation decodes an 'i' message; ok is false for anything
// malformed (the caller then flushes).
func parseInvalidation(msg string) (pos uint64, keys []Key, ok bool) {
	if len(msg) < 9 || msg[0] != msgInvalidate {
		return 0, nil, false
	}
	pos = beUint64(msg[1:9])
	r := Reader{buf: []byte(msg[9:])}
	for len(r.buf) > 0 {
		kind := r.String()
		id := r.String()
		if r.err != nil {
			return 0, nil, false
		}
		keys = append(keys, Key{Kind: kind, ID: id})
	}
	return pos, keys, true
}
